"""Chapters 6-8: the training loop, evaluation, checkpoints and the command line.

``fit`` is the paper's recipe at small scale: AdamW (no weight decay on biases and norms), linear
warmup then cosine decay stepped every batch, label smoothing, gradient clipping, and on CUDA mixed
precision (bf16, or fp16 with a GradScaler) and channels-last memory layout.

Checkpoints: after every epoch ``out_dir/last.pt`` is replaced atomically (write ``last.pt.tmp``, fsync,
``os.replace``), so a crash or a Colab disconnect loses at most one epoch and never leaves a half-written
``last.pt``. It holds model, optimizer, scheduler, scaler, every RNG state and the history; the data order
is a pure function of ``(seed, epoch)``. A resumed CPU run therefore ends bitwise equal to an uninterrupted one.

Command line (writes ``OUT/results.json`` with provenance)::

    python -m sequencer_mini.train --dataset fashion_mnist --model sequencer2d_mini28 --budget cpu --out runs/fm
"""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import random
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from . import distributed
from .budget import limit, quiet  # limit: SEQUENCER_DRY_RUN stops each loop after 2 items
from .data import AUG_PRESETS, AugmentConfig, carve_validation, data_identity
from .fsutil import tensor_bytes, write_error
from .recipes import RECIPES

__all__ = ["TrainConfig", "fit", "train_one_epoch", "evaluate", "Evaluation", "confusion_matrix", "plot_history",
           "save_checkpoint", "load_checkpoint", "build_model", "recipe_defaults", "main"]

CHECKPOINT_FORMAT = "sequencer_mini/checkpoint/v1"


@dataclass
class TrainConfig:
    """Everything that shapes a training run (the data loaders are built outside ``fit``)."""
    epochs: int = 10
    lr: float = 1e-3               # paper: 2e-3 at batch 2048; small batches want a smaller peak
    weight_decay: float = 0.05     # paper
    warmup_epochs: float = 1.0     # paper: 20 of 300
    warmup_lr: float = 1e-6        # paper: the lr at step 0
    min_lr: float = 1e-5           # end of the cosine
    grad_clip: float | None = 1.0  # max global grad norm; None: off
    aug: AugmentConfig = field(default_factory=AugmentConfig)  # applied by the loaders; label smoothing here
    amp: str = "auto"              # 'auto' (bf16/fp16 on CUDA, off on CPU) | 'bf16' | 'fp16' | 'off'
    channels_last: bool = True     # CUDA only: the conv stem then writes the (B,H,W,C) layout the LSTMs read
    device: str = "auto"
    seed: int = 0
    out_dir: str | None = None     # checkpoints go here (may be a Google Drive folder); None: none
    resume: bool = False           # continue out_dir/last.pt if it exists
    stop_after: int | None = None  # stop after this many epochs in this call (a time-limited session)
    model_config: dict = field(default_factory=dict)  # stored in checkpoints, checked on resume
    # --- the levers of chapter 6's CPU recipe (all off by default: the plain recipe above)
    ema_decay: float | None = None  # keep an exponential moving average of the weights; evaluate it
    img_sizes: tuple[int, ...] = ()  # progressive resizing: training side per epoch (last one repeats); () = native
    aug_from_epoch: int = 0        # crop/flip augmentation only from this epoch on (0: always; "late" augmentation)
    keep_epochs: bool = False      # also save each epoch's weights (out_dir/epochs/NN.pt), e.g. to pick a
                                   # checkpoint at a given validation accuracy later

    def __post_init__(self) -> None:
        if isinstance(self.aug, dict):
            self.aug = AugmentConfig(**self.aug)
        if self.amp not in ("auto", "bf16", "fp16", "off"):
            raise ValueError(f"amp must be 'auto', 'bf16', 'fp16' or 'off', got {self.amp!r}")
        if self.epochs < 1 or self.lr <= 0:
            raise ValueError(f"need epochs >= 1 and lr > 0, got epochs={self.epochs}, lr={self.lr}")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1) (e.g. 0.999) or None, got {self.ema_decay}")
        self.img_sizes = tuple(int(s) for s in self.img_sizes)
        if any(s < 1 for s in self.img_sizes):
            raise ValueError(f"img_sizes must be positive image sides, got {self.img_sizes}")
        if self.aug_from_epoch < 0:
            raise ValueError(f"aug_from_epoch must be >= 0, got {self.aug_from_epoch}")

    def train_size(self, epoch: int) -> int | None:
        """The training image side for 0-based ``epoch`` (None: the data's own size)."""
        if not self.img_sizes:
            return None
        return self.img_sizes[min(epoch, len(self.img_sizes) - 1)]


# ----------------------------------------------------------------------------- pieces of the loop

def resolve_device(name: str = "auto") -> torch.device:
    return torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for full float32."""
    if amp == "auto":
        if device.type != "cuda":
            return None  # CPU autocast rarely helps on small CPUs and costs exactness
        # native bf16 only (Ampere and later): a Colab T4 "supports" bf16 by emulation, without tensor cores
        return torch.bfloat16 if torch.cuda.get_device_capability(device)[0] >= 8 else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}[amp]


def cpu_bf16_native() -> bool:
    """Does oneDNN compute bfloat16 natively on this CPU (AVX512-BF16, AMX)? Only then does ``amp='bf16'`` pay
    on a CPU (``bench/cpu_amp.py`` measures by how much)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def autocast(device: torch.device, dtype: torch.dtype | None):
    """Mixed precision context, or a no-op for float32."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW; as timm, no weight decay on biases and normalisation weights (every tensor with < 2 dims)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr)


class WarmupCosine:
    """lr multiplier at optimizer step ``t``: linear from ``warmup_lr/lr`` to 1 over ``warmup`` steps,
    then cosine down to ``min_lr/lr`` at ``total`` steps. A class (not a lambda) so its state is saved."""

    def __init__(self, warmup: int, total: int, start: float, end: float):
        self.warmup, self.total, self.start, self.end = warmup, total, start, end

    def __call__(self, t: int) -> float:
        if t < self.warmup:
            return self.start + (1 - self.start) * t / self.warmup
        progress = min(1.0, (t - self.warmup) / max(1, self.total - self.warmup))
        return self.end + (1 - self.end) * 0.5 * (1 + math.cos(math.pi * progress))


def _set_epoch(loader: Iterable, epoch: int) -> None:
    """Tell a loader (ours, or a DataLoader with an epoch-aware sampler) which epoch's order to produce."""
    if hasattr(loader, "set_epoch"):
        loader.set_epoch(epoch)
    elif hasattr(getattr(loader, "sampler", None), "set_epoch"):
        loader.sampler.set_epoch(epoch)


def _to(x: Tensor, y: Tensor, device: torch.device, channels_last: bool) -> tuple[Tensor, Tensor]:
    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
    return (x.contiguous(memory_format=torch.channels_last) if channels_last else x), y


@dataclass
class Evaluation:
    """``accuracy`` in [0, 1], mean cross-entropy ``loss``, ``preds`` and ``targets`` ``(N,)`` on the CPU."""
    accuracy: float
    loss: float
    preds: Tensor
    targets: Tensor


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, device: torch.device | str | None = None,
             amp: str = "auto", channels_last: bool = False) -> Evaluation:
    """Accuracy, loss (no label smoothing) and per-image predictions over a whole loader."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    dtype = amp_dtype(amp, device)
    was_training = model.training
    model.eval()
    preds, targets, loss_sum = [], [], torch.zeros((), device=device)
    for x, y in limit(loader):
        x, y = _to(x, y, device, channels_last)
        y = y.argmax(-1) if y.ndim == 2 else y
        with autocast(device, dtype):
            logits = model(x)
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum")
        preds.append(logits.argmax(-1).cpu())
        targets.append(y.cpu())
    model.train(was_training)
    preds, targets = torch.cat(preds), torch.cat(targets)
    n = max(1, len(targets))
    return Evaluation((preds == targets).float().mean().item() if len(targets) else 0.0,
                      loss_sum.item() / n, preds, targets)


def confusion_matrix(preds: Tensor, targets: Tensor, num_classes: int) -> Tensor:
    """``(K, K)`` int64 counts; row = true class, column = predicted class."""
    if preds.shape != targets.shape:
        raise ValueError("preds and targets must have the same shape, "
                         f"got {tuple(preds.shape)} and {tuple(targets.shape)}")
    flat = targets.long() * num_classes + preds.long()
    return torch.bincount(flat, minlength=num_classes * num_classes).view(num_classes, num_classes)


# ----------------------------------------------------------------------------- checkpoints

def rng_states() -> dict[str, Any]:
    """Every RNG state as tensors / plain types, so ``torch.load(weights_only=True)`` can read it back."""
    version, mt, gauss = random.getstate()
    np_state = np.random.get_state()
    states = {"python": (version, torch.tensor(mt, dtype=torch.int64), gauss),
              "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *map(_plain, np_state[2:])),
              "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _plain(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v


def set_rng_states(states: dict[str, Any]) -> None:
    version, mt, gauss = states["python"]
    random.setstate((version, tuple(mt.tolist()), gauss))
    name, keys, *rest = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to ``path.tmp`` in the same folder, fsync, then ``os.replace``: readers (and a resumed
    run after a crash) see either the old complete file or the new complete file, never a partial one."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):  # on a read-only mount the cleanup fails too: report the write
            tmp.unlink(missing_ok=True)
        # a full disk surfaces as torch's "unexpected pos" RuntimeError: say what it is, where, how much
        explained = write_error(err, path, tensor_bytes(obj)) if isinstance(err, Exception) else None
        if explained is not None:
            raise explained from err
        raise


def save_checkpoint(path: Path, model: nn.Module, opt: torch.optim.Optimizer, sched: Any, scaler: Any,
                    epoch: int, history: dict, cfg: TrainConfig, steps_per_epoch: int, ema: nn.Module | None = None,
                    data: dict | None = None) -> None:
    """``epoch`` = number of completed epochs; ``data``: :func:`~sequencer_mini.data.data_identity` of the run."""
    atomic_save({"format": CHECKPOINT_FORMAT, "epoch": epoch, "model": model.state_dict(),
                 "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "scaler": scaler.state_dict(),
                 "rng": rng_states(), "history": history, "train_config": _resume_critical(cfg),
                 "model_config": cfg.model_config, "steps_per_epoch": steps_per_epoch,
                 "ema": ema.state_dict() if ema is not None else None, "data": data or {}}, path)


def _resume_critical(cfg: TrainConfig) -> dict:
    """The settings a resumed run must share with the checkpoint for the result to be the same run."""
    d = asdict(cfg)
    for k in ("resume", "out_dir", "stop_after", "device", "amp", "channels_last", "model_config", "keep_epochs"):
        d.pop(k)
    return d


def _diff(a: dict, b: dict) -> list[str]:
    return [f"{k}: checkpoint {a.get(k)!r} vs now {b.get(k)!r}"
            for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def load_checkpoint(path: Path, model: nn.Module, opt: torch.optim.Optimizer | None = None, sched: Any = None,
                    scaler: Any = None, cfg: TrainConfig | None = None, steps_per_epoch: int | None = None,
                    ema: nn.Module | None = None, data: dict | None = None) -> dict:
    """Restore everything from ``path`` and return the checkpoint dict. Any problem -> ``RuntimeError``
    naming the file and what mismatched; nothing is modified before all checks pass. ``data``: this run's
    :func:`~sequencer_mini.data.data_identity`, compared with the one the checkpoint recorded."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise RuntimeError(f"checkpoint {path} is unreadable (truncated or corrupt: {type(e).__name__}: {e}). "
                           f"Refusing to resume rather than silently starting over: delete it to start fresh, "
                           f"or restore a good copy.") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise RuntimeError(f"checkpoint {path} is not a {CHECKPOINT_FORMAT} checkpoint")
    problems = []
    if cfg is not None:
        if ckpt["model_config"] and cfg.model_config and ckpt["model_config"] != cfg.model_config:
            problems += ["model config " + p for p in _diff(ckpt["model_config"], cfg.model_config)]
        problems += ["train config " + p for p in _diff(ckpt["train_config"], _resume_critical(cfg))]
    if steps_per_epoch is not None and ckpt["steps_per_epoch"] != steps_per_epoch:
        problems.append(f"steps per epoch: checkpoint {ckpt['steps_per_epoch']} vs now {steps_per_epoch} "
                        f"(different data size or batch size)")
    problems += data_mismatches(ckpt.get("data"), data, path)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in ckpt["model"].items()}
    problems += [f"parameter {k}: checkpoint {theirs.get(k, 'missing')} vs model {ours.get(k, 'missing')}"
                 for k in sorted(set(ours) | set(theirs)) if ours.get(k) != theirs.get(k)][:10]
    if problems:
        raise RuntimeError(f"checkpoint {path} does not match this run:\n  " + "\n  ".join(problems))
    model.load_state_dict(ckpt["model"])
    for obj, key in ((opt, "optimizer"), (sched, "scheduler"), (scaler, "scaler"), (ema, "ema")):
        if obj is not None:
            obj.load_state_dict(ckpt[key])
    set_rng_states(ckpt["rng"])
    return ckpt


_DATA_HINTS = {"dataset": "another dataset", "n_train": "a different --limit-train or data files",
               "n_test": "a different --limit-test or data files",
               "train_indices": "another subset of the training images",
               "test_indices": "another subset of the test images",
               "train_content": "other training images or labels (another data folder or other files)",
               "test_content": "other test images or labels (another data folder or other files)"}


def data_mismatches(recorded: dict | None, now: dict | None, path: Path | str = "checkpoint") -> list[str]:
    """Each difference between the data a checkpoint was trained on and this run's (the folder itself may
    move: only what was read is compared). A checkpoint from before data records were kept: a warning."""
    if not now:
        return []
    if not recorded:
        import warnings
        warnings.warn(f"{path} records no data identity (written by an older version); cannot check that the "
                      f"resumed epochs use the same data", stacklevel=3)
        return []
    return [f"data {k}: checkpoint {recorded.get(k)!r} vs now {now.get(k)!r} ({_DATA_HINTS.get(k, 'other data')})"
            for k in _DATA_HINTS if recorded.get(k) != now.get(k)]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ----------------------------------------------------------------------------- the loop

def new_history() -> dict[str, list]:
    keys = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr", "images_per_s", "epoch_time_s",
            "images_seen", "img_size", "val_acc", "test_acc_raw")
    return {k: [] for k in keys}


def make_ema(model: nn.Module, decay: float) -> torch.optim.swa_utils.AveragedModel:
    """An exponential moving average of ``model``'s weights and buffers (BatchNorm statistics too), updated
    after every optimizer step: ``ema = decay * ema + (1 - decay) * weights``. It changes nothing in training;
    it is a smoother model to evaluate (torch's own ``AveragedModel``)."""
    return torch.optim.swa_utils.AveragedModel(
        model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(decay), use_buffers=True)


def resize_batch(x: Tensor, size: int | None) -> Tensor:
    """Progressive resizing: ``(B, C, H, W) -> (B, C, size, size)`` (bilinear, antialiased when shrinking).
    The Sequencer, the CNN and the ViT accept any multiple of their patch size, so early epochs can run on
    smaller, cheaper images."""
    if size is None or tuple(x.shape[-2:]) == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def train_one_epoch(model: nn.Module, loader: Iterable, opt: torch.optim.Optimizer, sched: Any, scaler: Any,
                    loss_fn: nn.Module, cfg: TrainConfig, device: torch.device, desc: str = "",
                    img_size: int | None = None, ema: nn.Module | None = None) -> dict[str, float]:
    """One pass over ``loader``; returns mean loss, accuracy (vs the argmax of soft targets), images/s, seconds.
    ``img_size``: train on images resized to this side; ``ema``: an ``AveragedModel`` updated every step."""
    dtype, channels_last = amp_dtype(cfg.amp, device), cfg.channels_last and device.type == "cuda"
    model.train()
    t0, seen = time.perf_counter(), 0
    loss_sum, correct = torch.zeros((), device=device), torch.zeros((), device=device)  # no per-step GPU sync
    for x, y in tqdm(limit(loader), desc=desc, disable=quiet(), leave=False):
        x, y = _to(resize_batch(x, img_size), y, device, channels_last)
        with autocast(device, dtype):
            logits = model(x)
            loss = loss_fn(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()  # fp16: scale the loss up so small gradients do not underflow
        if cfg.grad_clip:
            scaler.unscale_(opt)  # clip the true gradients, not the scaled ones
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        scaler.step(opt)
        scaler.update()
        sched.step()  # per step, not per epoch: warmup spans a fraction of an epoch on small data
        if ema is not None:
            ema.update_parameters(model)
        loss_sum += loss.detach() * len(x)
        correct += (logits.argmax(-1) == (y.argmax(-1) if y.ndim == 2 else y)).sum()
        seen += len(x)
    seconds = time.perf_counter() - t0
    return {"train_loss": loss_sum.item() / seen, "train_acc": correct.item() / seen,
            "images_per_s": seen / seconds, "epoch_time_s": seconds, "images": seen}


def _set_augment(loader: Iterable, on: bool) -> None:
    """Switch a ``TensorLoader``'s crop/flip on or off (late augmentation); other loaders are left alone."""
    if hasattr(loader, "augment"):
        loader.augment = on


def fit(model: nn.Module, train_loader: Iterable, test_loader: Iterable, cfg: TrainConfig,
        callbacks: Sequence[Callable[[int, dict], None]] = (), val_loader: Iterable | None = None
        ) -> dict[str, list]:
    """Train ``model`` for ``cfg.epochs`` and return the per-epoch history (a dict of lists).

    ``train_loader`` yields ``(x (B,C,H,W), y (B,) or (B,K) soft)``. ``callbacks(epoch, history)`` run after
    each epoch's checkpoint is written (raising in one simulates a crash). With ``cfg.ema_decay`` the reported
    test (and validation) accuracy is the EMA model's, the raw model's goes to ``test_acc_raw``, and the EMA
    weights are copied into ``model`` at the end. ``best.pt`` is chosen on ``val_loader`` (a split carved from
    the training images), never on the test set; without a validation loader the result is the last epoch.
    """
    device = resolve_device(cfg.device)
    channels_last = cfg.channels_last and device.type == "cuda"
    model.to(device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    train_model = distributed.wrap(model, device)  # DDP under torchrun (gradients all-reduced), else model
    steps = len(train_loader)
    opt = make_optimizer(model, cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, WarmupCosine(
        round(cfg.warmup_epochs * steps), cfg.epochs * steps, cfg.warmup_lr / cfg.lr, cfg.min_lr / cfg.lr))
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype(cfg.amp, device) == torch.float16)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.aug.label_smoothing)  # smoothing applied once, here
    ema = make_ema(model, cfg.ema_decay) if cfg.ema_decay else None
    ckpt_path = Path(cfg.out_dir) / "last.pt" if cfg.out_dir else None
    identity = data_identity(train_loader, test_loader)  # stored in checkpoints, compared on resume
    history, start = new_history(), 0
    if ckpt_path is not None and ckpt_path.exists():
        if not cfg.resume:
            raise RuntimeError(f"{ckpt_path} exists; pass resume=True (--resume) to continue it, or use a new out_dir")
        ckpt = load_checkpoint(ckpt_path, model, opt, sched, scaler, cfg, steps, ema=ema, data=identity)
        history, start = ckpt["history"], ckpt["epoch"]
    else:
        seed_everything(cfg.seed)
    n_epochs = len(limit(range(cfg.epochs)))  # cfg.epochs; in a dry run (SEQUENCER_DRY_RUN) 2, so that resuming matches
    for epoch in range(start, n_epochs if cfg.stop_after is None else min(n_epochs, start + cfg.stop_after)):
        _set_epoch(train_loader, epoch)  # shuffle order and augmentation = f(seed, epoch)
        _set_augment(train_loader, epoch >= cfg.aug_from_epoch)
        size = cfg.train_size(epoch)
        stats = train_one_epoch(train_model, train_loader, opt, sched, scaler, loss_fn, cfg, device,
                                desc=f"epoch {epoch + 1}/{cfg.epochs}", img_size=size, ema=ema)
        stats = distributed.reduce_epoch_stats(stats, train_loader)  # every rank's images, not one slice
        judged = ema.module if ema is not None else model  # the model whose accuracy we report
        test = evaluate(judged, test_loader, device, cfg.amp, channels_last)
        val = evaluate(judged, val_loader, device, cfg.amp, channels_last) if val_loader is not None else None
        last = epoch + 1 == n_epochs  # the raw weights are scored once, at the end, to measure what EMA adds
        raw = (evaluate(model, test_loader, device, cfg.amp, channels_last).accuracy
               if ema is not None and last else None)
        seen_before = history["images_seen"][-1] if history.get("images_seen") else 0
        stats.update(epoch=epoch + 1, test_loss=test.loss, test_acc=test.accuracy, lr=sched.get_last_lr()[0],
                     images_seen=seen_before + stats.pop("images"), img_size=size,
                     val_acc=val.accuracy if val is not None else None, test_acc_raw=raw)
        for key in history:
            history.setdefault(key, []).append(stats[key])
        if not quiet() and distributed.is_main():
            extra = f" | val acc {val.accuracy:.4f}" if val is not None else ""
            extra += f" (raw weights: test acc {raw:.4f})" if raw is not None else ""
            print(f"epoch {epoch + 1}/{cfg.epochs}: train loss {stats['train_loss']:.4f} acc {stats['train_acc']:.4f}"
                  f" | test loss {test.loss:.4f} acc {test.accuracy:.4f}{extra} | {stats['images_per_s']:.0f} img/s",
                  file=sys.stderr)
        if ckpt_path is not None and distributed.is_main():  # after every epoch: a disconnect loses at most one
            ckpt_path.parent.mkdir(parents=True, exist_ok=True)
            save_checkpoint(ckpt_path, model, opt, sched, scaler, epoch + 1, history, cfg, steps, ema=ema,
                            data=identity)
            weights = {"model": judged.state_dict(), "epoch": epoch + 1, "val_acc": stats["val_acc"],
                       "test_acc": test.accuracy, "images_seen": stats["images_seen"], "model_config": cfg.model_config}
            if val is not None and val.accuracy >= max(history["val_acc"]):  # chosen on validation, never on test
                atomic_save(weights, ckpt_path.with_name("best.pt"))
            if last:  # the run's result: the weights that the reported (last-epoch) accuracy belongs to
                atomic_save(weights, ckpt_path.with_name("final.pt"))
            if cfg.keep_epochs:
                (ckpt_path.parent / "epochs").mkdir(exist_ok=True)
                atomic_save(weights, ckpt_path.parent / "epochs" / f"{epoch + 1:03d}.pt")
        for callback in callbacks:
            callback(epoch + 1, history)
    if ema is not None:  # hand back the averaged weights: they are the ones the history reports
        model.load_state_dict(ema.module.state_dict())
    return history


def plot_history(history: dict[str, list], title: str | None = None):
    """Loss, accuracy and learning rate per epoch, side by side; returns the matplotlib Figure."""
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2), dpi=80)
    epochs = history["epoch"]
    for ax, key, label in ((axes[0], "loss", "cross-entropy"), (axes[1], "acc", "accuracy")):
        ax.plot(epochs, history[f"train_{key}"], "o-", label="train")
        ax.plot(epochs, history[f"test_{key}"], "s-", label="test")
        ax.set(xlabel="epoch", ylabel=label)
        ax.legend()
    axes[2].plot(epochs, history["lr"], "o-")
    axes[2].set(xlabel="epoch", ylabel="learning rate (end of epoch)")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- models and recipes

def build_model(name: str, in_chans: int, num_classes: int, img_size: int, drop_path: float = 0.0,
                **overrides: Any) -> tuple[nn.Module, dict]:
    """A Sequencer preset or a baseline, sized for the dataset; returns ``(model, config dict)``.
    ``overrides`` change the preset's own arguments (e.g. ``depth=6`` for ``small_vit``)."""
    from .baselines import BASELINES
    from .sequencer2d import MODELS, create_model
    if name in BASELINES:
        kwargs = dict(in_chans=in_chans, num_classes=num_classes, img_size=img_size, **overrides)
        return BASELINES[name](**kwargs), {"name": name, **kwargs}
    if name in MODELS:
        model = create_model(name, in_chans=in_chans, num_classes=num_classes, drop_path_rate=drop_path, **overrides)
        return model, {"name": name, **model.config.to_dict()}
    raise ValueError(f"unknown model {name!r}; expected one of {sorted(MODELS) + sorted(BASELINES)}")


DEFAULT_MODEL = {"fashion_mnist": "sequencer2d_mini28", "cifar10": "sequencer2d_mini32",
                 "cifar100": "sequencer2d_mini32", "tiny_imagenet": "sequencer2d_mini32",
                 "imagenette": "sequencer2d_mini32"}


def recipe_defaults(dataset: str, budget: str) -> dict[str, Any]:
    """Default epochs / data sizes / batch / augmentation per budget.

    ``cpu`` is sized for <= 15 min on 2 cores with ``sequencer2d_mini28`` on Fashion-MNIST: measured ~130
    training img/s and ~380 evaluation img/s per uncontended core at batch 128 (CPU time, one thread), so 3
    epochs of 24,000 images + 3 evaluations of the 10,000 test images take ~10.5 min on one core. On a CPU
    shared with other jobs use one thread (``--threads 1``): two OpenMP threads that wait for each other
    ran 5x slower than one there.
    ``gpu``: 50 epochs; ``sequencer2d_mini28`` trained at ~2,500 img/s (bf16) to ~3,400 img/s (fp32) on an
    H200, ~20-25 s per Fashion-MNIST epoch, so ~20 min (longer on a Colab T4).
    """
    small = dataset in ("fashion_mnist", "cifar10", "cifar100")
    table = {
        "ci": dict(epochs=1, limit_train=256, limit_test=256, batch_size=64, aug="light", warmup_epochs=0.2,
                   drop_path=0.0),
        "cpu": dict(epochs=3, limit_train=(24000 if dataset == "fashion_mnist" else 20000) if small else 5000,
                    limit_test=None if small else 2000, batch_size=128, aug="light", warmup_epochs=0.3,
                    drop_path=0.0),
        "gpu": dict(epochs=50, limit_train=None, limit_test=None, batch_size=128, aug="paper", warmup_epochs=5,
                    drop_path=0.1),
    }
    if budget not in table:
        raise ValueError(f"budget must be one of {list(table)}, got {budget!r}")
    return table[budget]


def build_parser() -> argparse.ArgumentParser:
    """The command line's options; ``--help`` ends with the models, datasets and environment variables."""
    from .cli_checks import help_epilog
    p = argparse.ArgumentParser(prog="python -m sequencer_mini.train", description=__doc__.split("\n\n")[0],
                                epilog=help_epilog(DEFAULT_MODEL), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="fashion_mnist", choices=list(DEFAULT_MODEL))
    p.add_argument("--model", default=None, help="a Sequencer preset or small_cnn / small_vit (default: per "
                                                  "dataset; list below)")
    p.add_argument("--out", required=True, help="folder for last.pt, best.pt and results.json")
    p.add_argument("--budget", choices=["ci", "cpu", "gpu"], default=None,
                   help="default sizes (else $SEQUENCER_BUDGET)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--warmup-epochs", type=float, help="linear warmup, in epochs (>= 0, at most --epochs)")
    p.add_argument("--drop-path", type=float, help="stochastic depth rate in [0, 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit-train", type=int, help="train on a fixed random subset of this size (>= 1)")
    p.add_argument("--limit-test", type=int, help="evaluate on a fixed random subset of this size (>= 1)")
    p.add_argument("--aug", choices=AUG_PRESETS, help="augmentation preset")
    p.add_argument("--smoothing", type=float, help="override the preset's label smoothing, in [0, 1)")
    p.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp16", "off"])
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers (only with --no-fast or image folders)")
    p.add_argument("--no-fast", action="store_true", help="per-item DataLoader instead of in-memory batching")
    p.add_argument("--resume", action="store_true", help="continue OUT/last.pt if present (refused if its model, "
                                                         "recipe or data differ)")
    p.add_argument("--stop-after", type=int, help="stop after this many epochs in this call (resume later)")
    p.add_argument("--data-root", default=None, help="the folder holding the dataset, used exactly (no fallback; "
                                                     "default: $SEQUENCER_DATA, else the usual places)")
    p.add_argument("--threads", type=int, help="torch intra-op threads; 1 is fastest on a CPU shared with other jobs")
    p.add_argument("--recipe", choices=sorted(RECIPES), help="a named recipe of the book (sequencer_mini/recipes.py); "
                   "its settings are defaults that the other flags override")
    p.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="override an argument of the model preset, e.g. depth=6 (repeatable)")
    p.add_argument("--ema", type=float, help="EMA decay of the weights, in (0, 1), e.g. 0.998 (default: off)")
    p.add_argument("--img-sizes", help="progressive resizing: training side per epoch, comma-separated; the last "
                   "repeats (e.g. 20,20,24,28)")
    p.add_argument("--aug-from-epoch", type=int, default=0, help="crop/flip only from this epoch (0-based) on")
    p.add_argument("--val", type=int, default=0, help="carve this many training images out as a validation split; "
                   "best.pt is then chosen on it")
    p.add_argument("--keep-epochs", action="store_true", help="also save every epoch's weights under OUT/epochs/")
    p.add_argument("--debug", action="store_true", help="show the Python traceback of an error "
                                                        "(or set SEQUENCER_DEBUG=1)")
    return p


def main(argv: Sequence[str] | None = None) -> dict:
    """The command line; returns the results payload (also written to ``OUT/results.json``).

    Every argument is checked before any data is read or downloaded and before ``--out`` is touched; a refused
    run raises (``UsageError``, ``DataNotFoundError``, ``RuntimeError`` for a mismatched checkpoint) and leaves
    ``--out`` as it was. ``python -m sequencer_mini.train`` prints such errors as one message
    (:func:`~sequencer_mini.cli_checks.run`).
    """
    from .baselines import BASELINES
    from .budget import budget
    from .cli_checks import UsageError, check_settings, preflight_out
    from .data import dataset_info, explicit_dirs, make_loaders
    from .fsutil import remove_created
    from .macs import count_macs
    from .provenance import write_results
    from .sequencer2d import MODELS

    args = _parse_with_recipe(build_parser(), argv)
    try:
        run_budget = args.budget or budget()  # a CLI flag must not leak into the caller's environment
    except ValueError as e:
        raise UsageError(str(e)) from e
    d = recipe_defaults(args.dataset, run_budget)
    pick = lambda name: d[name] if getattr(args, name) is None else getattr(args, name)  # noqa: E731
    epochs = pick("epochs")
    # default warmup: the budget's, but at most 10% of the run (e.g. --budget gpu --epochs 2)
    warmup = args.warmup_epochs if args.warmup_epochs is not None else (
        min(d["warmup_epochs"], 0.1 * epochs) if isinstance(epochs, int) else d["warmup_epochs"])
    check_settings({"epochs": epochs, "batch_size": pick("batch_size"), "limit_train": pick("limit_train"),
                    "limit_test": pick("limit_test"), "lr": args.lr, "weight_decay": args.weight_decay,
                    "warmup_epochs": warmup, "drop_path": pick("drop_path"), "smoothing": args.smoothing,
                    "seed": args.seed, "stop_after": args.stop_after, "workers": args.workers,
                    "threads": args.threads, "device": args.device, "model": args.model,
                    "known_models": sorted(MODELS) + sorted(BASELINES), "ema": args.ema,
                    "img_sizes": args.img_sizes, "aug_from_epoch": args.aug_from_epoch, "val": args.val})
    img_sizes = tuple(int(v) for v in args.img_sizes.split(",")) if args.img_sizes else ()
    try:
        model_args = _model_args(args.model_arg)
    except ValueError as e:
        raise UsageError(str(e)) from e
    # the model first: a bad --model-arg or rate fails before any data is read (its weights depend on the seed only)
    model_name = args.model or DEFAULT_MODEL[args.dataset]
    info = dataset_info(args.dataset)
    torch.manual_seed(args.seed)  # the initial weights are a function of the seed
    try:
        model, model_config = build_model(model_name, info.in_chans, info.num_classes, info.img_size,
                                          pick("drop_path"), **model_args)
    except (TypeError, ValueError) as e:
        raise UsageError(f"--model {model_name}{''.join(f' --model-arg {a}' for a in args.model_arg)}: {e}") from e
    explicit_dirs(args.data_root)  # a misspelt --data-root / $SEQUENCER_DATA: an error now, not a fallback
    created = preflight_out(args.out, args.resume)  # creatable and writable, before any work
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        aug = AugmentConfig.preset(pick("aug"))
        if args.smoothing is not None:
            aug.label_smoothing = args.smoothing
        device = distributed.init(args.device)  # under torchrun: join the process group, one device per process
        batch_size = pick("batch_size")
        train_loader, test_loader, info = make_loaders(
            args.dataset, batch_size, aug, limit_train=pick("limit_train"), limit_test=pick("limit_test"),
            seed=args.seed, device=device, fast=not args.no_fast, num_workers=args.workers, root=args.data_root)
        val_loader = None
        if args.val:
            if args.val >= len(train_loader.dataset):
                raise UsageError(f"--val {args.val}: expected fewer validation images than the "
                                 f"{len(train_loader.dataset)} training images")
            train_loader, val_loader = carve_validation(train_loader, args.val)
        identity = data_identity(train_loader, test_loader)
        train_loader = distributed.shard(train_loader)  # under torchrun: this rank's slice of every global batch
        if not quiet() and distributed.is_main():
            print(f"data: {args.dataset} from {identity.get('root')} ({identity.get('n_train')} train, "
                  f"{identity.get('n_test')} test images{f', {args.val} validation' if args.val else ''})",
                  file=sys.stderr)
        cfg = TrainConfig(epochs=epochs, lr=args.lr, weight_decay=args.weight_decay, warmup_epochs=warmup, aug=aug,
                          amp=args.amp, device=args.device, seed=args.seed, out_dir=args.out, resume=args.resume,
                          stop_after=args.stop_after, model_config=model_config, ema_decay=args.ema,
                          img_sizes=img_sizes, aug_from_epoch=args.aug_from_epoch, keep_epochs=args.keep_epochs)
        t0 = time.perf_counter()
        history = fit(model, train_loader, test_loader, cfg, val_loader=val_loader)
    except BaseException:
        remove_created(created)  # a refused run leaves no empty --out behind (a started one keeps its files)
        raise
    n_train, n_test = len(train_loader.dataset), len(test_loader.dataset)
    done = len(history["epoch"])
    payload = {
        "dataset": args.dataset, "model": model_name, "model_config": model_config,
        "params": sum(p.numel() for p in model.parameters()),
        "macs": count_macs(model, (info.in_chans, info.img_size, info.img_size)),
        "complete": done == cfg.epochs, "epochs_completed": done,
        "final_test_acc": history["test_acc"][-1] if done else None,  # the reported figure: the last epoch
        "best_test_acc": max(history["test_acc"]) if done else None,  # for reference only: chosen on the test set
        "best_epoch": history["epoch"][int(np.argmax(history["test_acc"]))] if done else None,
        "val_size": args.val, "images_seen": history["images_seen"][-1] if done else 0,
        "final_val_acc": history["val_acc"][-1] if done and args.val else None,
        "wall_time_s": time.perf_counter() - t0,  # this call only
        "train_time_s": sum(history["epoch_time_s"]),  # all epochs, across resumes
        "images_per_s": n_train * done / sum(history["epoch_time_s"]) if done else None,
        "n_train": n_train, "n_test": n_test, "batch_size": batch_size, "budget": run_budget,
        "data_root": identity.get("root"),  # the folder actually read
        "data": identity,  # sizes and fingerprints of the samples (the same record the checkpoint holds)
        "recipe": {**asdict(cfg), "batch_size": batch_size, "limit_train": pick("limit_train"), "name": args.recipe,
                   "limit_test": pick("limit_test"), "drop_path": pick("drop_path"), "aug_preset": pick("aug"),
                   "threads": torch.get_num_threads()},
        "history": history,
    }
    command = shlex.join(["python", "-m", "sequencer_mini.train", *(sys.argv[1:] if argv is None else argv)])
    if distributed.is_main():  # rank 0 alone writes; the epoch stats were all-reduced in fit
        payload["processes"] = distributed.world_size()
        write_results(Path(args.out) / "results.json", payload, overrides={"command": command, "budget": run_budget})
        if not quiet():
            final = payload["final_test_acc"]
            print(f"wrote {Path(args.out) / 'results.json'}: final test acc "
                  f"{'n/a' if final is None else f'{final:.4f}'}" + (f" (epoch {done})" if done else ""),
                  file=sys.stderr)
    distributed.teardown()
    return payload


def _parse_with_recipe(p: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse twice: a ``--recipe`` sets defaults, then every flag given on the command line overrides them."""
    first, _ = p.parse_known_args(argv)
    if first.recipe:
        p.set_defaults(**RECIPES[first.recipe])
    return p.parse_args(argv)


def _model_args(pairs: Sequence[str]) -> dict[str, Any]:
    """``["depth=6", "embed_dim=96"] -> {"depth": 6, "embed_dim": 96}`` (values read as Python literals)."""
    import ast
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--model-arg expects KEY=VALUE, got {pair!r}")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


if __name__ == "__main__":
    from .cli_checks import run
    sys.exit(run(main))
