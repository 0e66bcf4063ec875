"""The command line's checks: every argument is validated before any data is read, downloaded or trained on.

``python -m sequencer_mini.train`` calls :func:`check_settings` on the resolved settings (flags, else the
budget's defaults), then :func:`preflight_out` on ``--out``. A problem is a :class:`UsageError` listing every
bad setting at once. :func:`run` is the process entry point: it prints any error a user can act on as one
message (no traceback; ``--debug`` or ``SEQUENCER_DEBUG=1`` shows it) and returns the exit status.
"""
from __future__ import annotations

import math
import os
import sys
import traceback
from pathlib import Path
from typing import Any, Callable, Sequence

__all__ = ["UsageError", "DEBUG_ENV", "check_settings", "check_device", "preflight_out", "help_epilog", "run"]

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
    import torch
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
    :func:`~sequencer_mini.fsutil.remove_created` if the run is refused later."""
    from .fsutil import check_writable_dir
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
    from .baselines import BASELINES
    from .data import CACHE_ENV, DATA_ENV, OFFLINE_ENV
    from .sequencer2d import MODELS

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
    from .data import DataNotFoundError
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
