"""Chapters 6-8: the training command line, ``python -m sequencer_mini.train``, and its checks.

Every argument is checked before any data is read, downloaded or trained on: :func:`check_settings` on the
resolved settings (flags, else the budget's defaults), then :func:`preflight_out` on ``--out``. A problem is a
:class:`UsageError` listing every bad setting at once. :func:`run` is the process entry point: it prints any error a
user can act on as one message (no traceback; ``--debug`` or ``SEQUENCER_DEBUG=1`` shows it) and returns the exit
status. A run writes ``OUT/results.json`` with provenance::

    python -m sequencer_mini.train --dataset fashion_mnist --model sequencer2d_mini28 --budget cpu --out runs/fm
"""
from __future__ import annotations

import argparse
import math
import os
import shlex
import sys
import time
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from sequencer_mini.core.budget import budget, quiet
from sequencer_mini.core.env import CACHE_ENV, OFFLINE_ENV
from sequencer_mini.core.fsutil import check_writable_dir, remove_created
from sequencer_mini.core.provenance import write_results
from sequencer_mini.measure.macs import count_macs
from sequencer_mini.models.baselines import BASELINES
from sequencer_mini.models.sequencer2d import MODELS
from sequencer_mini.train import distributed
from sequencer_mini.train.data import (
    AUG_PRESETS,
    DATA_ENV,
    AugmentConfig,
    DataNotFoundError,
    carve_validation,
    data_identity,
    dataset_info,
    explicit_dirs,
    make_loaders,
)
from sequencer_mini.train.loop import TrainConfig, fit
from sequencer_mini.train.recipes import DEFAULT_MODEL, RECIPES, build_model, model_args, recipe_defaults

__all__ = ["UsageError", "DEBUG_ENV", "check_settings", "check_device", "preflight_out", "help_epilog", "run",
           "build_parser", "main"]

DEBUG_ENV = "SEQUENCER_DEBUG"


class UsageError(ValueError):
    """A command-line argument (or environment variable) that cannot work; the message names each one."""


def _whole(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_settings(s: dict[str, Any]) -> None:
    """Raise :class:`UsageError` naming every setting out of range. ``s`` holds the resolved values under
    the flag names without dashes (``limit_train``, ``warmup_epochs``, ...); None means unset where allowed."""
    problems: list[str] = []

    def need(ok: bool, flag: str, expected: str) -> None:
        if not ok:
            problems.append(f"--{flag.replace('_', '-')} {s.get(flag)!r}: expected {expected}")

    def finite(v: Any) -> bool:
        return isinstance(v, (int, float)) and math.isfinite(v)

    need(_whole(s["epochs"]) and s["epochs"] >= 1, "epochs", "a whole number >= 1")
    need(_whole(s["batch_size"]) and s["batch_size"] >= 1, "batch_size", "a whole number >= 1")
    for flag, what in (("limit_train", "training images"), ("limit_test", "test images")):
        need(s[flag] is None or (_whole(s[flag]) and s[flag] >= 1), flag,
             f"a number of {what} >= 1 (leave it out for the whole split)")
    need(finite(s["lr"]) and s["lr"] > 0, "lr", "a learning rate > 0")
    need(finite(s["weight_decay"]) and s["weight_decay"] >= 0, "weight_decay", "a weight decay >= 0")
    epochs = s["epochs"] if _whole(s["epochs"]) and s["epochs"] >= 1 else math.inf
    need(finite(s["warmup_epochs"]) and 0 <= s["warmup_epochs"] <= epochs, "warmup_epochs",
         f"a number of epochs in [0, --epochs{'' if epochs == math.inf else f' = {epochs}'}]")
    need(finite(s["drop_path"]) and 0 <= s["drop_path"] < 1, "drop_path", "a drop-path rate in [0, 1)")
    need(s["smoothing"] is None or (finite(s["smoothing"]) and 0 <= s["smoothing"] < 1), "smoothing",
         "a label smoothing in [0, 1)")
    need(_whole(s["seed"]) and 0 <= s["seed"] < 2**32, "seed", "a whole number in [0, 2**32)")
    need(s["stop_after"] is None or (_whole(s["stop_after"]) and s["stop_after"] >= 1), "stop_after",
         "a number of epochs >= 1")
    need(_whole(s["workers"]) and s["workers"] >= 0, "workers", "a number of DataLoader workers >= 0")
    need(s["threads"] is None or (_whole(s["threads"]) and s["threads"] >= 1), "threads",
         "a number of threads >= 1")
    need(s.get("ema") is None or (finite(s["ema"]) and 0 < s["ema"] < 1), "ema", "an EMA decay in (0, 1), e.g. 0.998")
    sizes = s.get("img_sizes")
    if sizes:
        parts = [p.strip() for p in str(sizes).split(",")]
        need(all(p.isdigit() and int(p) >= 1 for p in parts), "img_sizes",
             "image sides >= 1, comma-separated (e.g. 20,24,28)")
    need(_whole(s.get("aug_from_epoch", 0)) and 0 <= s.get("aug_from_epoch", 0) < epochs, "aug_from_epoch",
         f"an epoch in [0, --epochs{'' if epochs == math.inf else f' = {epochs}'}) (0-based)")
    need(_whole(s.get("val", 0)) and s.get("val", 0) >= 0, "val", "a number of validation images >= 0 (0: none)")
    if s.get("val") and _whole(s.get("limit_train")) and s["limit_train"] >= 1 and s["val"] >= s["limit_train"]:
        problems.append(f"--val {s['val']}: expected fewer validation images than --limit-train {s['limit_train']}")
    if s.get("model") is not None and s["model"] not in s["known_models"]:
        problems.append(f"--model {s['model']!r}: expected one of {', '.join(s['known_models'])}")
    device_problem = check_device(s["device"])
    if device_problem:
        problems.append(f"--device {s['device']!r}: {device_problem}")
    if problems:
        raise UsageError("invalid argument" + ("s" if len(problems) > 1 else "") + ":\n  " + "\n  ".join(problems))


def check_device(name: str) -> str | None:
    """Why ``name`` cannot be used as a torch device here, or None when it can."""
    if name == "auto":
        return None
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as e:
        return f"not a device name ({e}); expected auto, cpu, cuda or cuda:N"
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return "CUDA is not available on this machine (use --device cpu or auto)"
        if device.index is not None and device.index >= torch.cuda.device_count():
            return f"this machine has {torch.cuda.device_count()} CUDA device(s)"
    elif device.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            return "MPS is not available on this machine"
    elif device.type != "cpu":
        return "expected auto, cpu, cuda or cuda:N"
    return None


def preflight_out(out: str | os.PathLike[str], resume: bool) -> list[Path]:
    """Check ``--out`` before any work: not an existing file, no ``last.pt`` unless ``--resume``, creatable
    and writable (a probe file is written and removed). Returns the folders it created, for
    :func:`~sequencer_mini.core.fsutil.remove_created` if the run is refused later."""
    out = Path(out)
    if out.is_file():
        raise UsageError(f"--out {str(out)!r} is an existing file; expected a folder (it holds last.pt, best.pt "
                         f"and results.json)")
    if (out / "last.pt").exists() and not resume:
        raise UsageError(f"{out / 'last.pt'} exists: pass --resume to continue that run, or choose a new --out")
    try:
        return check_writable_dir(out, "--out")
    except OSError as e:
        raise UsageError(str(e.strerror or e)) from e


def help_epilog(default_models: dict[str, str]) -> str:
    """The part of ``--help`` after the options: models, datasets (with their default model), environment
    variables."""

    def wrap(names: Sequence[str], indent: str = "  ") -> str:
        lines, line = [], indent
        for n in names:
            if len(line) + len(n) + 2 > 100:
                lines.append(line.rstrip())
                line = indent
            line += n + ", "
        lines.append(line.rstrip(", "))
        return "\n".join(lines)

    datasets = "\n".join(f"  {d:14s} default model {m}" for d, m in default_models.items())
    return (f"models (--model):\n{wrap(sorted(MODELS))}\n  baselines: {', '.join(sorted(BASELINES))}\n\n"
            f"datasets (--dataset):\n{datasets}\n\n"
            f"environment variables:\n"
            f"  {DATA_ENV}    folder(s) holding the datasets ({os.pathsep}-separated); used exactly, like\n"
            f"                    --data-root: a named folder without the data is an error, never a fallback\n"
            f"  {CACHE_ENV}   download cache (default ~/.cache/sequencer_mini)\n"
            f"  {OFFLINE_ENV} set: never download\n"
            f"  SEQUENCER_BUDGET  ci | cpu | gpu: default sizes when --budget is not given\n"
            f"  SEQUENCER_QUIET   set: no progress bars or per-epoch lines\n"
            f"  {DEBUG_ENV}   set (or --debug): show the Python traceback of an error")


def run(main: Callable[[Sequence[str] | None], Any], argv: Sequence[str] | None = None,
        prog: str = "python -m sequencer_mini.train") -> int:
    """Call ``main(argv)``; return 0, or print an error a user can act on as one message and return 2 (usage)
    or 1 (anything else: missing data, a mismatched checkpoint, a full disk). Other exceptions are bugs and
    keep their traceback; ``--debug`` / ``$SEQUENCER_DEBUG`` keeps it for all."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or bool(os.environ.get(DEBUG_ENV))
    try:
        main(args)
        return 0
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; OUT/last.pt (if written) holds the last complete epoch: continue with --resume",
              file=sys.stderr)
        return 130
    except (UsageError, DataNotFoundError, OSError, ValueError, RuntimeError) as e:
        if debug:
            traceback.print_exc()
        print(f"{prog}: error: {e}", file=sys.stderr)
        if not debug:
            print(f"(--debug or {DEBUG_ENV}=1 shows the traceback)", file=sys.stderr)
        return 2 if isinstance(e, UsageError) else 1


# ----------------------------------------------------------------------------- the command line

def build_parser() -> argparse.ArgumentParser:
    """The command line's options; ``--help`` ends with the models, datasets and environment variables."""
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
    p.add_argument("--recipe", choices=sorted(RECIPES), help="a named recipe of the book "
                   "(sequencer_mini/train/recipes.py); its settings are defaults that the other flags override")
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
    (:func:`~sequencer_mini.train.cli.run`).
    """

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
        overrides = model_args(args.model_arg)
    except ValueError as e:
        raise UsageError(str(e)) from e
    # the model first: a bad --model-arg or rate fails before any data is read (its weights depend on the seed only)
    model_name = args.model or DEFAULT_MODEL[args.dataset]
    info = dataset_info(args.dataset)
    torch.manual_seed(args.seed)  # the initial weights are a function of the seed
    try:
        model, model_config = build_model(model_name, info.in_chans, info.num_classes, info.img_size,
                                          pick("drop_path"), **overrides)
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
