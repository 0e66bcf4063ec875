"""Chapters 6-8: the training loop, evaluation and checkpoints.

``fit`` is the paper's recipe at small scale: AdamW (no weight decay on biases and norms), linear
warmup then cosine decay stepped every batch, label smoothing, gradient clipping, and on CUDA mixed
precision (bf16, or fp16 with a GradScaler) and channels-last memory layout.

Checkpoints: after every epoch ``out_dir/last.pt`` is replaced atomically (write ``last.pt.tmp``, fsync,
``os.replace``), so a crash or a Colab disconnect loses at most one epoch and never leaves a half-written
``last.pt``. It holds model, optimizer, scheduler, scaler, every RNG state and the history; the data order
is a pure function of ``(seed, epoch)``. A resumed CPU run therefore ends bitwise equal to an uninterrupted one.
Per epoch the files are written in one order: ``epochs/NNN.pt``, ``last.pt`` (the commit point), then ``best.pt`` and
``final.pt``; a resume completes whatever a crash after ``last.pt`` left unwritten, so a run killed at any write
resumes to the same folder (``tests/test_bad_inputs.py`` kills it at each). A non-finite loss or weight stops the run
with :class:`DivergedError` (the step and the learning rate) before anything of that epoch is saved; checkpoints
are checked field by field when read (:func:`upgrade_checkpoint`: older formats upgraded, non-finite weights and
a dry run's checkpoint in a real run refused).

The command line is :mod:`sequencer_mini.train.cli` (``python -m sequencer_mini.train``).
"""
from __future__ import annotations

import contextlib
import math
import os
import random
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from sequencer_mini.core.budget import dry_run, limit, quiet  # limit: SEQUENCER_DRY_RUN stops each loop after 2 items
from sequencer_mini.core.fsutil import fault_point, nonfinite_tensors, tensor_bytes, write_error
from sequencer_mini.train import distributed
from sequencer_mini.train.data import AugmentConfig, data_identity

__all__ = ["TrainConfig", "fit", "train_one_epoch", "evaluate", "Evaluation", "confusion_matrix", "plot_history",
           "save_checkpoint", "load_checkpoint", "Batches", "DivergedError", "upgrade_checkpoint", "CHECKPOINT_FORMAT"]

#: The format written into every checkpoint (v2 adds ``dry_run``; v1 checkpoints are upgraded when read).
CHECKPOINT_FORMAT = "sequencer_mini/checkpoint/v2"
OLDER_FORMATS = ("sequencer_mini/checkpoint/v1",)


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
    snapshots_per_epoch: int = 0   # also save the weights K times an epoch (out_dir/snapshots/IMAGES.pt, named by
                                   # images seen): chapter 10 matches checkpoints within a quarter pass
    ema_probes: tuple[float, ...] = ()  # EMAs that only watch: each decay's average is scored after the last epoch,
                                   # the reported model is unchanged (one run measures "EMA off" and several decays)

    def __post_init__(self) -> None:
        """Check every field at once: one ``ValueError`` names each problem (the command line checks each flag's
        own value first; the settings that depend on each other are checked here, by :meth:`schedule_problems`)."""
        if isinstance(self.aug, dict):
            self.aug = AugmentConfig(**self.aug)
        self.img_sizes = tuple(int(s) for s in self.img_sizes)
        self.ema_probes = tuple(float(d) for d in self.ema_probes)
        problems = []
        if any(not 0.0 < d < 1.0 for d in self.ema_probes) or len(set(self.ema_probes)) != len(self.ema_probes):
            problems.append(f"ema_probes must be distinct decays in (0, 1), got {self.ema_probes}")
        if not (isinstance(self.snapshots_per_epoch, int) and self.snapshots_per_epoch >= 0):
            problems.append(f"snapshots_per_epoch must be a whole number >= 0, got {self.snapshots_per_epoch!r}")
        if self.amp not in ("auto", "bf16", "fp16", "off"):
            problems.append(f"amp must be 'auto', 'bf16', 'fp16' or 'off', got {self.amp!r}")
        epochs_ok = self.epochs >= 1
        if not epochs_ok:
            problems.append(f"need epochs >= 1, got {self.epochs!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            problems.append(f"need lr > 0 (finite), got {self.lr!r}")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            problems.append(f"ema_decay must be in (0, 1) (e.g. 0.999) or None, got {self.ema_decay}")
        if any(s < 1 for s in self.img_sizes):
            problems.append(f"img_sizes must be positive image sides, got {self.img_sizes}")
        problems += [text for _, text in self.schedule_problems(self.epochs if epochs_ok else None,
                                                                self.warmup_epochs, self.aug_from_epoch)]
        if problems:
            raise ValueError("invalid TrainConfig: " + "; ".join(problems))

    @staticmethod
    def schedule_problems(epochs: int | None, warmup_epochs: float | None, aug_from_epoch: int | None,
                          name: Callable[[str], str] = str) -> list[tuple[str, str]]:
        """The settings that must fit into the run: ``warmup_epochs`` in [0, epochs], ``aug_from_epoch`` in
        [0, epochs). ``(field, message)`` per problem, each setting named by ``name`` (the field itself; the command
        line passes its flag, ``--warmup-epochs``). None: not known (skipped; for ``epochs``: no upper bound)."""
        top, bound = (math.inf, "") if epochs is None else (epochs, f" = {epochs}")
        problems = []
        if warmup_epochs is not None and not (math.isfinite(warmup_epochs) and 0 <= warmup_epochs <= top):
            problems.append(("warmup_epochs", f"{name('warmup_epochs')} {warmup_epochs!r}: expected a number of "
                                              f"epochs in [0, {name('epochs')}{bound}]"))
        if aug_from_epoch is not None and not 0 <= aug_from_epoch < top:
            problems.append(("aug_from_epoch", f"{name('aug_from_epoch')} {aug_from_epoch!r}: expected an epoch in "
                                               f"[0, {name('epochs')}{bound}) (0-based)"))
        return problems

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
    sampler: Any = getattr(loader, "sampler", None)
    if hasattr(loader, "set_epoch"):
        loader.set_epoch(epoch)
    elif hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)


def _to(x: Tensor, y: Tensor, device: torch.device, channels_last: bool) -> tuple[Tensor, Tensor]:
    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
    return (x.contiguous(memory_format=torch.channels_last) if channels_last else x), y


class Batches(Protocol):
    """What ``fit`` trains on: ``(x, y)`` batches with a length, the optimizer steps of an epoch."""

    def __iter__(self) -> Iterator[Any]: ...

    def __len__(self) -> int: ...


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
    pred_batches: list[Tensor] = []
    target_batches: list[Tensor] = []
    loss_sum = torch.zeros((), device=device)
    for x, y in limit(loader):
        x, y = _to(x, y, device, channels_last)
        y = y.argmax(-1) if y.ndim == 2 else y
        with autocast(device, dtype):
            logits = model(x)
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum")
        pred_batches.append(logits.argmax(-1).cpu())
        target_batches.append(y.cpu())
    model.train(was_training)
    preds, targets = torch.cat(pred_batches), torch.cat(target_batches)
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
    np_state = cast("tuple[Any, ...]", np.random.get_state())  # the legacy (MT19937) tuple form
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
        fault_point(f"before replace {path.name}")  # test-only crash/pause points (SEQUENCER_TEST_FAULT)
        os.replace(tmp, path)
        fault_point(f"after replace {path.name}")
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
                    data: dict | None = None, probes: Sequence[nn.Module] = ()) -> None:
    """``epoch`` = number of completed epochs; ``data``: :func:`~sequencer_mini.train.data.data_identity` of the run;
    ``probes``: the watching EMAs of ``cfg.ema_probes``, in that order."""
    atomic_save({"format": CHECKPOINT_FORMAT, "epoch": epoch, "model": model.state_dict(),
                 "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "scaler": scaler.state_dict(),
                 "rng": rng_states(), "history": history, "train_config": _resume_critical(cfg),
                 "model_config": cfg.model_config, "steps_per_epoch": steps_per_epoch,
                 "ema": ema.state_dict() if ema is not None else None, "data": data or {},
                 "ema_probes": [p.state_dict() for p in probes], "dry_run": dry_run()}, path)


def _resume_critical(cfg: TrainConfig) -> dict:
    """The settings a resumed run must share with the checkpoint for the result to be the same run."""
    d = asdict(cfg)
    for k in ("resume", "out_dir", "stop_after", "device", "amp", "channels_last", "model_config", "keep_epochs",
              "snapshots_per_epoch"):
        d.pop(k)
    if not d["ema_probes"]:  # checkpoints from before probes existed record none: the same run
        d.pop("ema_probes")
    return d


#: The fields of a training checkpoint and their types; ``ema``, ``data``, ``ema_probes`` and ``dry_run`` are
#: optional (older checkpoints lack them; :func:`upgrade_checkpoint` fills them in).
CHECKPOINT_FIELDS: dict[str, type | tuple[type, ...]] = {
    "epoch": int, "model": dict, "optimizer": dict, "scheduler": dict, "scaler": dict, "rng": dict, "history": dict,
    "train_config": dict, "model_config": dict, "steps_per_epoch": int}


def upgrade_checkpoint(ckpt: Any, path: Path | str) -> dict:
    """A training checkpoint as read by ``torch.load``, checked and brought to :data:`CHECKPOINT_FORMAT`: every
    field present with its type, finite weights, a history with one entry per epoch. A v1 checkpoint gains
    ``dry_run: False`` and the history keys added since (filled in where they can be rebuilt, ``None`` where not).
    Anything else is a ``RuntimeError`` naming the file, what is wrong and what to do."""
    fix = "delete it to start fresh (or restore a good copy)"
    if not isinstance(ckpt, dict):
        raise RuntimeError(f"checkpoint {path} holds a {type(ckpt).__name__}, not a training checkpoint; {fix}")
    fmt = ckpt.get("format")
    if fmt != CHECKPOINT_FORMAT and fmt not in OLDER_FORMATS:
        what = ("a weights file (final.pt, best.pt or epochs/NNN.pt: weights only, no optimizer or RNG state), "
                if fmt is None and "model" in ckpt and "optimizer" not in ckpt else f"format {fmt!r}, ")
        raise RuntimeError(f"checkpoint {path} is {what}not a {CHECKPOINT_FORMAT} training checkpoint (nor an older "
                           f"{', '.join(OLDER_FORMATS)} one); {fix}")
    missing = [k for k in CHECKPOINT_FIELDS if k not in ckpt]
    wrong = [f"{k} is a {type(ckpt[k]).__name__}" for k, t in CHECKPOINT_FIELDS.items()
             if k in ckpt and not isinstance(ckpt[k], t)]
    if missing or wrong:
        raise RuntimeError(f"checkpoint {path} ({fmt}) is incomplete: "
                           + "; ".join(([f"missing field(s) {', '.join(missing)}"] if missing else []) + wrong)
                           + f" (written by another program or damaged); {fix}")
    ckpt.setdefault("ema", None)
    ckpt.setdefault("data", {})
    ckpt.setdefault("ema_probes", [])
    ckpt.setdefault("dry_run", False)
    bad = nonfinite_tensors({"model": ckpt["model"], "ema": ckpt["ema"]})
    if bad:
        raise RuntimeError(f"checkpoint {path} holds non-finite weights (NaN or infinity) in {', '.join(bad[:3])}: "
                           f"the run diverged before it was saved; it is not resumed. {fix}")
    ckpt["history"] = _upgrade_history(ckpt, path, fix)
    ckpt["format"] = CHECKPOINT_FORMAT
    return ckpt


def _upgrade_history(ckpt: dict, path: Path | str, fix: str) -> dict:
    history, epochs = ckpt["history"], ckpt["epoch"]
    done = history.get("epoch")
    if not isinstance(done, list) or len(done) != epochs:
        raise RuntimeError(f"checkpoint {path} says {epochs} epoch(s) done but its history lists "
                           f"{len(done) if isinstance(done, list) else 'no'} epochs; {fix}")
    for key in new_history():
        if key in history:
            if not isinstance(history[key], list) or len(history[key]) != epochs:
                raise RuntimeError(f"checkpoint {path}: history {key!r} does not hold one value per epoch; {fix}")
            continue
        if key == "images_seen":
            n_train = (ckpt.get("data") or {}).get("n_train")
            if not isinstance(n_train, int):
                raise RuntimeError(f"checkpoint {path} (an older version) has no images_seen in its history and "
                                   f"records no training-set size to rebuild it from; {fix}")
            history[key] = [n_train * int(e) for e in done]
        else:
            history[key] = [None] * epochs
    return history


def _diff(a: dict, b: dict) -> list[str]:
    return [f"{k}: checkpoint {a.get(k)!r} vs now {b.get(k)!r}"
            for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def load_checkpoint(path: Path, model: nn.Module, opt: torch.optim.Optimizer | None = None, sched: Any = None,
                    scaler: Any = None, cfg: TrainConfig | None = None, steps_per_epoch: int | None = None,
                    ema: nn.Module | None = None, data: dict | None = None, probes: Sequence[nn.Module] = ()) -> dict:
    """Restore everything from ``path`` and return the checkpoint dict. Any problem -> ``RuntimeError``
    naming the file and what mismatched; nothing is modified before all checks pass. ``data``: this run's
    :func:`~sequencer_mini.train.data.data_identity`, compared with the one the checkpoint recorded."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise RuntimeError(f"checkpoint {path} is unreadable (truncated or corrupt: {type(e).__name__}: {e}). "
                           f"Refusing to resume rather than silently starting over: delete it to start fresh, "
                           f"or restore a good copy.") from e
    ckpt = upgrade_checkpoint(ckpt, path)
    problems = []
    if bool(ckpt["dry_run"]) != dry_run():
        problems.append(f"dry run: checkpoint {bool(ckpt['dry_run'])} vs now {dry_run()} (a dry run "
                        f"(SEQUENCER_DRY_RUN) never continues a real run, nor a real run a dry run's 2-batch epochs)")
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
    for probe, state in zip(probes, ckpt.get("ema_probes") or [], strict=True):
        probe.load_state_dict(state)
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
            "images_seen", "img_size", "val_acc", "test_acc_raw", "probe_test_acc", "probe_val_acc")
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
                    img_size: int | None = None, ema: torch.optim.swa_utils.AveragedModel | None = None,
                    probes: Sequence[torch.optim.swa_utils.AveragedModel] = (),
                    on_step: Callable[[int, int], None] | None = None) -> dict[str, float]:
    """One pass over ``loader``; returns mean loss, accuracy (vs the argmax of soft targets), images/s, seconds.
    ``img_size``: train on images resized to this side; ``ema`` and each of ``probes``: an ``AveragedModel``
    updated every step; ``on_step(step, images)`` after each step (1-based step, images of this epoch so far)."""
    dtype, channels_last = amp_dtype(cfg.amp, device), cfg.channels_last and device.type == "cuda"
    model.train()
    t0, seen = time.perf_counter(), 0
    loss_sum, correct = torch.zeros((), device=device), torch.zeros((), device=device)  # no per-step GPU sync
    # divergence: the first step whose loss is not finite, kept on the device (one sync at the end); on a CPU
    # outside torchrun, checked every step (free there) so a diverged run stops at once
    first_bad, lrs = torch.full((), -1, dtype=torch.long, device=device), []
    check_now = device.type == "cpu" and not distributed.is_distributed()
    for steps_done, (x, y) in enumerate(tqdm(limit(loader), desc=desc, disable=quiet(), leave=False), 1):
        x, y = _to(resize_batch(x, img_size), y, device, channels_last)
        with autocast(device, dtype):
            logits = model(x)
            loss = loss_fn(logits.float(), y)
        lrs.append(float(sched.get_last_lr()[0]))
        first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss.detach()), steps_done, first_bad)
        if check_now and first_bad.item() >= 0:
            break
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
        for probe in probes:
            probe.update_parameters(model)
        loss_sum += loss.detach() * len(x)
        correct += (logits.argmax(-1) == (y.argmax(-1) if y.ndim == 2 else y)).sum()
        seen += len(x)
        if on_step is not None:
            on_step(steps_done, seen)
    seconds = time.perf_counter() - t0
    bad = int(first_bad.item())
    if bad >= 0:
        raise DivergedError(bad, lrs[bad - 1], float(loss.detach().float().item()))
    return {"train_loss": loss_sum.item() / max(1, seen), "train_acc": correct.item() / max(1, seen),
            "images_per_s": seen / seconds, "epoch_time_s": seconds, "images": seen}


class DivergedError(RuntimeError):
    """Training produced a non-finite loss or weights. ``step``: the step of the epoch (1-based) whose loss was
    first non-finite (None: the weights, not the loss), ``lr``: its learning rate; :func:`fit` adds where the run
    stands (epoch, the last good checkpoint) to the message."""

    def __init__(self, step: int | None, lr: float | None, value: float, what: str = "the training loss"):
        self.step, self.lr, self.value, self.what = step, lr, value, what
        where = f"at step {step}" if step is not None else "during the epoch"
        rate = f" (learning rate {lr:.4g})" if lr is not None else ""
        super().__init__(f"{what} became {value} {where}{rate}")


def _watchers(model: nn.Module, ema: nn.Module | None, decays: Sequence[float],
              probes: Sequence[torch.optim.swa_utils.AveragedModel]) -> dict[str, Any]:
    """What a weights file holds beside the reported model: the probes' averages (decay -> state dict) and, when
    the reported model is an EMA, the raw weights; nothing when there are neither."""
    out: dict[str, Any] = {}
    if probes:
        out["ema_probes"] = {str(d): p.module.state_dict() for d, p in zip(decays, probes, strict=True)}
    if ema is not None:
        out["raw"] = model.state_dict()
    return out


def _snapshot_saver(cfg: TrainConfig, steps: int, epoch: int, seen_before: int, judged: nn.Module, model: nn.Module,
                    probes: Sequence[torch.optim.swa_utils.AveragedModel]) -> Callable[[int, int], None] | None:
    """``on_step`` for :func:`train_one_epoch` that writes ``out_dir/snapshots/IMAGES.pt`` at each
    ``k / snapshots_per_epoch`` of the epoch (the last one at its end), named by the images seen so far (7 digits).
    Snapshots hold weights only (resuming still starts from the last whole epoch, which writes them again,
    bit for bit); None when there is nothing to save."""
    if not cfg.snapshots_per_epoch or not cfg.out_dir or not distributed.is_main():
        return None
    marks = {max(1, round(k * steps / cfg.snapshots_per_epoch)) for k in range(1, cfg.snapshots_per_epoch + 1)}
    folder = Path(cfg.out_dir) / "snapshots"
    ema = judged if judged is not model else None

    def save(step: int, images: int) -> None:
        if step in marks:
            folder.mkdir(parents=True, exist_ok=True)
            seen = seen_before + images
            atomic_save({"model": judged.state_dict(), "epoch": epoch + step / steps, "images_seen": seen,
                         "model_config": cfg.model_config, **_watchers(model, ema, cfg.ema_probes, probes)},
                        folder / f"{seen:07d}.pt")
    return save


def _set_augment(loader: Iterable, on: bool) -> None:
    """Switch a ``TensorLoader``'s crop/flip on or off (late augmentation); other loaders are left alone."""
    if hasattr(loader, "augment"):
        loader.augment = on


def _weights_of(judged: nn.Module, model: nn.Module, ema: nn.Module | None,
                probes: Sequence[torch.optim.swa_utils.AveragedModel], cfg: TrainConfig, history: dict) -> dict:
    """What ``final.pt``, ``best.pt`` and ``epochs/NNN.pt`` hold after the history's last epoch."""
    return {"model": judged.state_dict(), "epoch": history["epoch"][-1], "val_acc": history["val_acc"][-1],
            "test_acc": history["test_acc"][-1], "images_seen": history["images_seen"][-1],
            "model_config": cfg.model_config, **_watchers(model, ema, cfg.ema_probes, probes)}


def _write_epoch_files(out: Path, weights: dict, cfg: TrainConfig, history: dict, last: bool,
                       missing_only: bool, kinds: Sequence[str] = ("epochs", "best", "final")) -> None:
    """``epochs/NNN.pt`` (``keep_epochs``), ``best.pt`` (when this epoch's validation accuracy is the best so far)
    and ``final.pt`` (the last epoch) for the history's last epoch, those of ``kinds``. ``missing_only``: on
    resume, write only those that a crash after ``last.pt`` left out or stale (an older version wrote them all
    after it)."""
    epoch = weights["epoch"]
    files = []
    if cfg.keep_epochs and "epochs" in kinds:
        files.append(out / "epochs" / f"{epoch:03d}.pt")
    vals = [v for v in history["val_acc"] if v is not None]
    if "best" in kinds and weights["val_acc"] is not None and weights["val_acc"] >= max(vals):  # on validation
        files.append(out / "best.pt")                                                            # never on test
    if last and "final" in kinds:  # the run's result: the weights that the reported (last-epoch) accuracy belongs to
        files.append(out / "final.pt")
    for path in files:
        if missing_only and _holds_epoch(path, epoch):
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_save(weights, path)


def _holds_epoch(path: Path, epoch: int) -> bool:
    """Does weights file ``path`` exist and hold ``epoch``? (unreadable: no, so it is written again)"""
    if not path.is_file():
        return False
    try:
        return torch.load(path, map_location="cpu", weights_only=True).get("epoch") == epoch
    except Exception:  # a torn or foreign file: replace it
        return False


def _diverged(err: DivergedError, epoch: int, steps: int, cfg: TrainConfig, ckpt_path: Path | None) -> DivergedError:
    """``err`` with where the run stands: the epoch, the step of the whole run, the last good checkpoint."""
    where = (f"epoch {epoch + 1}, step {err.step} of {steps} (optimizer step {epoch * steps + err.step} of the run)"
             if err.step is not None else f"epoch {epoch + 1}")
    rate = ("learning rate unknown" if err.lr is None else f"learning rate {err.lr:.4g}" if err.step is not None
            else f"learning rate {err.lr:.4g} at the end of the epoch")
    kept = (f"{ckpt_path} still holds epoch {epoch}, the last good one (nothing of epoch {epoch + 1} was saved)"
            if ckpt_path is not None and epoch > 0 else "no checkpoint was written (it diverged in its first epoch)"
            if ckpt_path is not None else "nothing was saved")
    out = DivergedError(err.step, err.lr, err.value, err.what)
    out.args = (f"training diverged: {err.what} became {err.value} in {where}, at {rate} (peak --lr {cfg.lr:g}). "
                f"The run is stopped, not finished: {kept}; no results are marked complete. Lower --lr or lengthen "
                f"--warmup-epochs, and start again in a new --out (or with --overwrite)",)
    return out


def fit(model: nn.Module, train_loader: Batches, test_loader: Iterable, cfg: TrainConfig,
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
    model.to(device, memory_format=torch.channels_last if channels_last  # type: ignore[call-overload]
             else torch.contiguous_format)  # (torch's stubs lack device + memory_format together)
    train_model = distributed.wrap(model, device)  # DDP under torchrun (gradients all-reduced), else model
    steps = len(train_loader)
    opt = make_optimizer(model, cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, WarmupCosine(
        round(cfg.warmup_epochs * steps), cfg.epochs * steps, cfg.warmup_lr / cfg.lr, cfg.min_lr / cfg.lr))
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype(cfg.amp, device) == torch.float16)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.aug.label_smoothing)  # smoothing applied once, here
    ema = make_ema(model, cfg.ema_decay) if cfg.ema_decay else None
    probes = [make_ema(model, decay) for decay in cfg.ema_probes]
    ckpt_path = Path(cfg.out_dir) / "last.pt" if cfg.out_dir else None
    identity = data_identity(train_loader, test_loader)  # stored in checkpoints, compared on resume
    history, start = new_history(), 0
    if ckpt_path is not None and ckpt_path.exists():
        if not cfg.resume:
            raise RuntimeError(f"{ckpt_path} exists; pass resume=True (--resume) to continue it, or use a new out_dir")
        ckpt = load_checkpoint(ckpt_path, model, opt, sched, scaler, cfg, steps, ema=ema, data=identity,
                               probes=probes)
        history, start = ckpt["history"], ckpt["epoch"]
    else:
        seed_everything(cfg.seed)
    n_epochs = len(list(limit(range(cfg.epochs))))  # cfg.epochs; 2 in a dry run (SEQUENCER_DRY_RUN): resuming matches
    if start and ckpt_path is not None and distributed.is_main():  # complete what a crash (or an older version)
        judged = ema.module if ema is not None else model         # left unwritten for the checkpoint's epoch
        _write_epoch_files(ckpt_path.parent, _weights_of(judged, model, ema, probes, cfg, history), cfg, history,
                           start == n_epochs, missing_only=True)
    for epoch in range(start, n_epochs if cfg.stop_after is None else min(n_epochs, start + cfg.stop_after)):
        _set_epoch(train_loader, epoch)  # shuffle order and augmentation = f(seed, epoch)
        _set_augment(train_loader, epoch >= cfg.aug_from_epoch)
        size = cfg.train_size(epoch)
        seen_before = history["images_seen"][-1] if history.get("images_seen") else 0
        judged = ema.module if ema is not None else model  # the model whose accuracy we report
        snapshot = _snapshot_saver(cfg, steps, epoch, seen_before, judged, model, probes)
        try:
            local = train_one_epoch(train_model, train_loader, opt, sched, scaler, loss_fn, cfg, device,
                                    desc=f"epoch {epoch + 1}/{cfg.epochs}", img_size=size, ema=ema, probes=probes,
                                    on_step=snapshot)
        except DivergedError as err:
            raise _diverged(err, epoch, steps, cfg, ckpt_path) from None
        stats: dict[str, Any] = distributed.reduce_epoch_stats(local, train_loader)  # every rank's images
        bad = nonfinite_tensors({"model": model.state_dict(), "ema": judged.state_dict()})
        if bad:
            raise _diverged(DivergedError(None, float(sched.get_last_lr()[0]), math.nan, f"the weights ({bad[0]})"),
                            epoch, steps, cfg, ckpt_path)
        test = evaluate(judged, test_loader, device, cfg.amp, channels_last)
        if not math.isfinite(test.loss):
            raise _diverged(DivergedError(None, float(sched.get_last_lr()[0]), test.loss, "the test loss"), epoch,
                            steps, cfg, ckpt_path)
        val = evaluate(judged, val_loader, device, cfg.amp, channels_last) if val_loader is not None else None
        last = epoch + 1 == n_epochs  # the raw weights are scored once, at the end, to measure what EMA adds
        raw = (evaluate(model, test_loader, device, cfg.amp, channels_last).accuracy
               if ema is not None and last else None)
        # the watching EMAs are scored at the end only (each evaluation costs as much as the reported model's);
        # their weights at every snapshot are saved for later scoring
        watched = list(zip(cfg.ema_probes, probes, strict=True)) if last else []
        probe_test = {str(d): evaluate(pr.module, test_loader, device, cfg.amp, channels_last).accuracy
                      for d, pr in watched} or None
        probe_val = None if val_loader is None else (
            {str(d): evaluate(pr.module, val_loader, device, cfg.amp, channels_last).accuracy
             for d, pr in watched} or None)
        stats.update(epoch=epoch + 1, test_loss=test.loss, test_acc=test.accuracy, lr=sched.get_last_lr()[0],
                     images_seen=seen_before + stats.pop("images"), img_size=size,
                     val_acc=val.accuracy if val is not None else None, test_acc_raw=raw,
                     probe_test_acc=probe_test, probe_val_acc=probe_val)
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
            # epochs/NNN.pt, then last.pt (the commit point of the epoch), then best.pt and final.pt: a crash
            # before last.pt redoes the epoch on --resume (bit for bit); one after it leaves best/final for --resume
            # to complete (below, on resume). A folder without last.pt never holds a best.pt or final.pt of its own.
            weights = _weights_of(judged, model, ema, probes, cfg, history)
            _write_epoch_files(ckpt_path.parent, weights, cfg, history, last, missing_only=False, kinds=("epochs",))
            save_checkpoint(ckpt_path, model, opt, sched, scaler, epoch + 1, history, cfg, steps, ema=ema,
                            data=identity, probes=probes)
            _write_epoch_files(ckpt_path.parent, weights, cfg, history, last, missing_only=False,
                               kinds=("best", "final"))
        for callback in callbacks:
            callback(epoch + 1, history)
    if ema is not None:  # hand back the averaged weights: they are the ones the history reports
        model.load_state_dict(ema.module.state_dict())
    return history


def plot_history(history: dict[str, list], title: str | None = None):
    """Loss, accuracy and learning rate per epoch, side by side; returns the matplotlib Figure."""
    # import cost: matplotlib loads only when a figure is drawn
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
