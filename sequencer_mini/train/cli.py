"""Chapters 6-8: the training command line, ``python -m sequencer_mini.train``, and its checks.

Every argument is checked before any data is read, downloaded or trained on, in two places: each flag's argparse
``type`` checks its own value (:func:`whole`, :func:`number`, :func:`one_of`, ...), and
:class:`~sequencer_mini.train.loop.TrainConfig` checks the settings that depend on each other (with
:func:`cross_problems` for the few it does not hold). The :class:`Parser` collects every refused value instead of
stopping at the first, so a problem is one :class:`UsageError` listing every bad setting at once; then
:func:`preflight_out` checks ``--out``. :func:`run` is the process entry point: it prints any error a user can act
on as one message (no traceback; ``--debug`` or ``SEQUENCER_DEBUG=1`` shows it) and returns the exit status. A run
writes ``OUT/results.json`` with provenance::

    python -m sequencer_mini.train --dataset fashion_mnist --model sequencer2d_mini28 --budget cpu --out runs/fm

Adding a flag: ``add_argument`` with a ``type`` for its value; if it is a :class:`TrainConfig` field, pass it on in
:func:`resolve_settings` and check it against the other fields in ``TrainConfig.__post_init__``.
"""
from __future__ import annotations

import argparse
import math
import os
import shlex
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from sequencer_mini.core.budget import budget, quiet
from sequencer_mini.core.budget import dry_run
from sequencer_mini.core.env import CACHE_ENV, DEBUG_ENV, OFFLINE_ENV, check_environment, flag
from sequencer_mini.core.fsutil import RunLock, check_writable_dir, remove_created
from sequencer_mini.core.provenance import read_json_object
from sequencer_mini.core.paths import REPO_ROOT
from sequencer_mini.core.provenance import write_results
from sequencer_mini.measure.macs import count_macs
from sequencer_mini.models.baselines import BASELINES
from sequencer_mini.models.sequencer2d import MODELS
from sequencer_mini.train import distributed
from sequencer_mini.train.data import (
    AUG_PRESETS,
    IN_MEMORY,
    DATA_ENV,
    AugmentConfig,
    DataNotFoundError,
    DatasetInfo,
    carve_validation,
    data_identity,
    dataset_info,
    explicit_dirs,
    make_loaders,
)
from sequencer_mini.train.loop import TrainConfig, fit
from sequencer_mini.train.recipes import DEFAULT_MODEL, build_model, model_args, recipe_defaults

__all__ = ["UsageError", "DEBUG_ENV", "Parser", "BadValue", "whole", "number", "positive_int", "one_of",
           "image_sides", "decays", "device_name", "remake_command", "cross_problems", "check_device", "preflight_out",
           "help_epilog", "run",
           "build_parser", "resolve_settings", "main", "Problem", "Settings"]



class UsageError(ValueError):
    """A command-line argument (or environment variable) that cannot work; the message names each one."""


# ----------------------------------------------------------------------------- checking the flags

class BadValue(argparse.ArgumentTypeError):
    """Raised by an argparse ``type`` for a value that cannot work: ``value`` is the value as given (converted
    where it could be: ``--lr 0`` is ``0.0``), the message says what would (``expected a learning rate > 0``)."""

    def __init__(self, value: Any, message: str):
        super().__init__(message)
        self.value = value


def whole(lo: int | None = None, what: str = "a whole number", note: str = "", *, below: int | None = None,
          expected: str | None = None) -> Callable[[str], int]:
    """An argparse ``type``: a whole number >= ``lo`` (and < ``below``); ``what``/``note`` (or the whole
    ``expected``) phrase the message, e.g. ``whole(1, "a number of threads")``: "expected a number of threads >= 1"."""
    text = expected or (what if lo is None else f"{what} >= {lo}") + note

    def check(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise BadValue(raw, f"expected {text}") from None
        if (lo is not None and value < lo) or (below is not None and value >= below):
            raise BadValue(value, f"expected {text}")
        return value
    check.__name__ = "whole number"
    return check


def number(interval: str = "(-inf, inf)", what: str = "a number", note: str = "") -> Callable[[str], float]:
    """An argparse ``type``: a finite number in ``interval``, written as in mathematics (``"[0, 1)"``,
    ``"(0, inf)"``); e.g. ``number("[0, 1)", "a drop-path rate")``: "expected a drop-path rate in [0, 1)"."""
    lo, hi = (float(v) for v in interval[1:-1].split(","))
    lo_open, hi_open = interval[0] == "(", interval[-1] == ")"
    if math.isinf(hi):
        text = what if math.isinf(lo) else f"{what} {'>' if lo_open else '>='} {lo:g}"
    else:
        text = f"{what} in {interval}"
    text += note

    def check(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise BadValue(raw, f"expected {text}") from None
        inside = (lo < value if lo_open else lo <= value) and (value < hi if hi_open else value <= hi)
        if not (math.isfinite(value) and inside):
            raise BadValue(value, f"expected {text}")
        return value
    check.__name__ = "number"
    return check


positive_int = whole(1)  #: a whole number >= 1


def one_of(names: Sequence[str]) -> Callable[[str], str]:
    """An argparse ``type``: one of ``names`` (unlike ``choices``, a wrong name is listed with the other
    problems)."""
    def check(raw: str) -> str:
        if raw not in names:
            raise BadValue(raw, f"expected one of {', '.join(names)}")
        return raw
    check.__name__ = "name"
    return check


def image_sides(raw: str) -> tuple[int, ...]:
    """An argparse ``type``: image sides >= 1, comma-separated (``"20,24,28"`` -> ``(20, 24, 28)``)."""
    parts = [p.strip() for p in raw.split(",")]
    if not all(p.isdigit() and int(p) >= 1 for p in parts):
        raise BadValue(raw, "expected image sides >= 1, comma-separated (e.g. 20,24,28)")
    return tuple(int(p) for p in parts)


def decays(raw: str) -> tuple[float, ...]:
    """An argparse ``type``: distinct EMA decays in (0, 1), comma-separated (``"0.998,0.9995"``)."""
    try:
        values = tuple(float(p) for p in raw.split(","))
    except ValueError:
        values = ()
    if not values or not all(0 < v < 1 for v in values) or len(set(values)) != len(values):
        raise BadValue(raw, "expected distinct EMA decays in (0, 1), comma-separated (e.g. 0.998,0.9995)")
    return values


def device_name(raw: str) -> str:
    """An argparse ``type``: a torch device this machine has (or ``auto``); see :func:`check_device`."""
    problem = check_device(raw)
    if problem:
        raise BadValue(raw, problem)
    return raw


class Problem(NamedTuple):
    """One bad setting: the parser ``dest`` it belongs to (it orders the list) and the line that explains it."""
    dest: str
    text: str


class _Invalid:
    """What the namespace holds for a value its ``type`` refused (never used: the run is refused first)."""

    def __repr__(self) -> str:
        return "INVALID"


INVALID = _Invalid()


class _Recorded:
    """An argparse ``type`` that never stops the parse: a refused value is recorded on the parser, INVALID kept."""

    def __init__(self, check: Callable[[str], Any], flag: str, dest: str, parser: Parser):
        self.check, self.flag, self.dest, self.parser = check, flag, dest, parser
        self.__name__ = getattr(check, "__name__", "value")

    def __call__(self, raw: str) -> Any:
        try:
            return self.check(raw)
        except (argparse.ArgumentTypeError, TypeError, ValueError) as e:
            value = e.value if isinstance(e, BadValue) else raw
            self.parser.problems.append(Problem(self.dest, f"{self.flag} {value!r}: {e}"))
            return INVALID


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` that reports every bad value at once: each flag's ``type`` (:func:`whole`,
    :func:`number`, ...) checks its own value, and a refused one is collected instead of ending the parse.
    :meth:`parse_collecting` returns the namespace and the problems (for the caller to add the cross-field ones);
    ``parse_args`` raises :class:`UsageError` listing them. Unknown flags and missing ones still end the parse."""

    def __init__(self, *args: Any, **kwargs: Any):
        self.problems: list[Problem] = []
        self.order: dict[str, int] = {}  # dest -> its place in --help, the order problems are listed in
        super().__init__(*args, **kwargs)

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        action = super().add_argument(*args, **kwargs)
        self.order.setdefault(action.dest, len(self.order))
        if callable(action.type) and action.option_strings:
            action.type = _Recorded(action.type, action.option_strings[-1], action.dest, self)
        return action

    def parse_known_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                         namespace: argparse.Namespace | None = None) -> tuple[argparse.Namespace, list[str]]:
        self.problems.clear()
        return super().parse_known_args(args, namespace)

    def parse_collecting(self, args: Sequence[str] | None = None) -> tuple[argparse.Namespace, list[Problem]]:
        """Parse ``args``: the namespace (INVALID where a value was refused) and the problems found."""
        namespace = super().parse_args(args)
        return namespace, list(self.problems)

    def parse_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                   namespace: argparse.Namespace | None = None) -> argparse.Namespace:
        namespace = super().parse_args(args, namespace)
        if self.problems:
            raise self.usage_error(self.problems)
        return namespace

    def usage_error(self, problems: Sequence[Problem]) -> UsageError:
        """One :class:`UsageError` listing ``problems`` in the order of ``--help``."""
        lines = [p.text for p in sorted(problems, key=lambda p: self.order.get(p.dest, len(self.order)))]
        return UsageError("invalid argument" + ("s" if len(lines) > 1 else "") + ":\n  " + "\n  ".join(lines))


def cross_problems(args: argparse.Namespace, limit_train: Any) -> list[Problem]:
    """The checks across flags that :class:`~sequencer_mini.train.loop.TrainConfig` does not hold: a validation
    split (``--val``) needs in-memory batching and fewer images than ``--limit-train``. ``limit_train``: resolved
    (the flag, else the budget's); a value its own type refused (INVALID) is skipped."""
    val = args.val
    if val is INVALID or not val:
        return []
    problems = []
    if args.dataset not in IN_MEMORY or args.no_fast:
        problems.append(Problem("val", f"--val {val}: a validation split needs in-memory batching (--dataset "
                                       f"{', '.join(IN_MEMORY[:-1])} or {IN_MEMORY[-1]}, without --no-fast)"))
    if isinstance(limit_train, int) and val >= limit_train:
        problems.append(Problem("val", f"--val {val}: expected fewer validation images than --limit-train "
                                       f"{limit_train}"))
    return problems


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


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, e.g. a container's share), the bound of ``--threads``."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows: no affinity call
        return os.cpu_count() or 1


#: What a run writes into ``--out``: a folder holding any of them holds a run (see :func:`preflight_out`).
RUN_FILES = ("results.json", "last.pt", "final.pt", "best.pt", "epochs", "snapshots")


def run_files(out: Path) -> list[str]:
    """The files and folders of a run in ``out`` (:data:`RUN_FILES`; a folder only when it holds something)."""
    return [name for name in RUN_FILES
            if (out / name).is_file() or ((out / name).is_dir() and any((out / name).iterdir()))]


def _committed(out: Path) -> bool:
    """Does git track files in ``out`` (a recorded run of the book, e.g. ``book/results/<run>``)?"""
    try:
        listed = subprocess.run(["git", "ls-files", "--", "."], cwd=out, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return False
    return listed.returncode == 0 and bool(listed.stdout.strip())


def _folder_is_dry(out: Path) -> bool | None:
    """Was the run in ``out`` a dry run? From ``results.json``'s provenance, else ``last.pt``; None: no run or
    unknown."""
    if (out / "results.json").is_file():
        try:
            return bool((read_json_object(out / "results.json").get("provenance") or {}).get("dry_run"))
        except ValueError:
            return None
    if (out / "last.pt").is_file():
        try:
            return bool(torch.load(out / "last.pt", map_location="cpu", weights_only=True).get("dry_run"))
        except Exception:  # unreadable: load_checkpoint reports it with its own message
            return None
    return None


def preflight_out(out: str | os.PathLike[str], resume: bool, overwrite: bool = False) -> list[Path]:
    """Check ``--out`` before any work: not empty, not an existing file, not another run's folder (unless
    ``--resume`` continues the run whose ``last.pt`` it holds, or ``--overwrite`` replaces it), no dry run into a
    real run's folder or the other way round, creatable and writable (a probe file is written and removed).
    Returns the folders it created, for :func:`~sequencer_mini.core.fsutil.remove_created` if the run is refused
    later."""
    if not str(out).strip():
        raise UsageError(f"--out {str(out)!r} is empty: expected a folder for the run (an unset shell variable?)")
    out = Path(out)
    if out.is_file():
        raise UsageError(f"--out {str(out)!r} is an existing file; expected a folder (it holds last.pt, best.pt "
                         f"and results.json)")
    if resume and overwrite:
        raise UsageError("--resume and --overwrite contradict each other: --resume continues the run in --out, "
                         "--overwrite replaces it")
    found = run_files(out) if out.is_dir() else []
    recorded = " (committed to git: a recorded run)" if found and _committed(out) else ""
    if found and not resume and not overwrite:
        if "last.pt" in found:
            raise UsageError(f"{out / 'last.pt'} exists: pass --resume to continue that run, or choose a new --out "
                             f"(--overwrite replaces it: its files are deleted first)")
        raise UsageError(f"--out {out} holds another run's files ({', '.join(found)}){recorded}: choose a new --out, "
                         f"or pass --overwrite to replace that run (its files are deleted first)")
    if resume and "last.pt" not in found and {"results.json", "final.pt", "best.pt"} & set(found):
        raise UsageError(f"--resume: {out} holds a finished or recorded run ({', '.join(found)}){recorded} but no "
                         f"last.pt to continue; it is left as it is. Choose a new --out, or pass --overwrite instead "
                         f"of --resume to replace it")
    folder_dry = _folder_is_dry(out) if found else None
    if found and (folder_dry is not None or dry_run()) and bool(folder_dry) != dry_run():
        what = "a dry run's (SEQUENCER_DRY_RUN)" if folder_dry else "a real run's (or one not known to be a dry run)"
        if not (overwrite and folder_dry):  # a real run may replace a dry run's files, never the other way round
            raise UsageError(f"--out {out} holds {what} files and this is {'a dry' if dry_run() else 'a real'} run: "
                             f"dry runs never write into real runs' folders nor real runs into dry runs'. Choose "
                             f"another --out")
    try:
        return check_writable_dir(out, "--out")
    except OSError as e:
        raise UsageError(str(e.strerror or e)) from e


def remove_temporaries(out: Path) -> None:
    """Delete the half-written ``*.tmp`` files a killed run left in ``out`` (and its ``epochs/``, ``snapshots/``):
    every file is written under such a name and renamed only when complete, so they hold nothing of value."""
    for folder in (out, out / "epochs", out / "snapshots"):
        for tmp in folder.glob("*.tmp"):
            tmp.unlink(missing_ok=True)


def remove_run_files(out: Path) -> None:
    """Delete the previous run's files in ``out`` (``--overwrite``), so no old epoch or best weights are read as
    this run's."""
    for name in RUN_FILES:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    for tmp in out.glob("*.tmp"):
        tmp.unlink()


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
            f"  {OFFLINE_ENV} on: never download\n"
            f"  SEQUENCER_BUDGET  ci | cpu | gpu: default sizes when --budget is not given\n"
            f"  SEQUENCER_QUIET   on: no progress bars or per-epoch lines\n"
            f"  {DEBUG_ENV}   on (or --debug): show the Python traceback of an error\n"
            f"  SEQUENCER_DRY_RUN on: 2 batches per epoch, 2 epochs (never into a real run's --out)\n"
            f"  SEQUENCER_DOWNLOAD_TIMEOUT  seconds for pretrained() downloads, > 0 (default 300)\n"
            f"  on/off values: 1, true, yes, on / 0, false, no, off or empty; anything else is refused")


def run(main: Callable[[Sequence[str] | None], Any], argv: Sequence[str] | None = None,
        prog: str = "python -m sequencer_mini.train") -> int:
    """Call ``main(argv)``; return 0, or print an error a user can act on as one message and return 2 (usage)
    or 1 (anything else: missing data, a mismatched checkpoint, a full disk). Other exceptions are bugs and
    keep their traceback; ``--debug`` / ``$SEQUENCER_DEBUG`` keeps it for all."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        debug = "--debug" in args or flag(DEBUG_ENV)
    except ValueError:  # a bad value of the variable itself: reported with the other problems (resolve_settings)
        debug = False
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

def build_parser() -> Parser:
    """The command line's options, each with the ``type`` that checks its value; ``--help`` ends with the models,
    datasets and environment variables."""
    p = Parser(prog="python -m sequencer_mini.train", description=__doc__.split("\n\n")[0],
               epilog=help_epilog(DEFAULT_MODEL), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="fashion_mnist", choices=list(DEFAULT_MODEL))
    p.add_argument("--model", default=None, type=one_of(sorted(MODELS) + sorted(BASELINES)),
                   help="a Sequencer preset or small_cnn / small_vit (default: per dataset; list below)")
    p.add_argument("--out", required=True, help="folder for last.pt, best.pt and results.json")
    p.add_argument("--budget", choices=["ci", "cpu", "gpu"], default=None,
                   help="default sizes (else $SEQUENCER_BUDGET)")
    p.add_argument("--epochs", type=positive_int)
    p.add_argument("--batch-size", type=positive_int)
    p.add_argument("--limit-train", type=whole(1, "a number of training images", " (leave it out for the whole "
                                               "split)"), help="train on a fixed random subset of this size (>= 1)")
    p.add_argument("--limit-test", type=whole(1, "a number of test images", " (leave it out for the whole split)"),
                   help="evaluate on a fixed random subset of this size (>= 1)")
    p.add_argument("--lr", type=number("(0, inf)", "a learning rate"), default=1e-3)
    p.add_argument("--weight-decay", type=number("[0, inf)", "a weight decay"), default=0.05)
    p.add_argument("--warmup-epochs", type=number(what="a finite number of epochs"),
                   help="linear warmup, in epochs (>= 0, at most --epochs)")
    p.add_argument("--drop-path", type=number("[0, 1)", "a drop-path rate"), help="stochastic depth rate in [0, 1)")
    p.add_argument("--seed", type=whole(0, below=2**32, expected="a whole number in [0, 2**32)"), default=0)
    p.add_argument("--aug", choices=AUG_PRESETS, help="augmentation preset")
    p.add_argument("--smoothing", type=number("[0, 1)", "a label smoothing"),
                   help="override the preset's label smoothing, in [0, 1)")
    p.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp16", "off"])
    p.add_argument("--device", default="auto", type=device_name, help="auto, cpu, cuda or cuda:N")
    p.add_argument("--workers", type=whole(0, "a number of DataLoader workers"), default=0,
                   help="DataLoader workers (only with --no-fast or image folders)")
    p.add_argument("--no-fast", action="store_true", help="per-item DataLoader instead of in-memory batching")
    p.add_argument("--overwrite", action="store_true", help="replace the run in OUT: its files (results.json, "
                   "*.pt, epochs/, snapshots/) are deleted just before training starts")
    p.add_argument("--resume", action="store_true", help="continue OUT/last.pt if present (refused if its model, "
                                                         "recipe or data differ)")
    p.add_argument("--stop-after", type=whole(1, "a number of epochs"),
                   help="stop after this many epochs in this call (resume later)")
    p.add_argument("--data-root", default=None, help="the folder holding the dataset, used exactly (no fallback; "
                                                     "default: $SEQUENCER_DATA, else the usual places)")
    p.add_argument("--threads", type=whole(1, below=usable_cores() + 1, expected=f"a number of threads >= 1 and "
                                           f"<= {usable_cores()} (the cores this process may use)"),
                   help="torch intra-op threads; 1 is fastest on a CPU shared with other jobs")
    p.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="override an argument of the model preset, e.g. depth=6 (repeatable)")
    p.add_argument("--ema", type=number("(0, 1)", "an EMA decay", ", e.g. 0.998"),
                   help="EMA decay of the weights, in (0, 1), e.g. 0.998 (default: off)")
    p.add_argument("--img-sizes", type=image_sides, help="progressive resizing: training side per epoch, "
                   "comma-separated; the last repeats (e.g. 20,20,24,28)")
    p.add_argument("--random-erasing", type=number("[0, 1]", "a probability per image"),
                   help="random erasing (zeros), overriding the preset's probability")
    p.add_argument("--mixup", type=number("[0, inf)", "a Beta(a, a) parameter", " (0: off)"),
                   help="mixup alpha, overriding the preset's (with --cutmix too: one of the two per batch)")
    p.add_argument("--cutmix", type=number("[0, inf)", "a Beta(a, a) parameter", " (0: off)"),
                   help="CutMix alpha, overriding the preset's")
    p.add_argument("--auto-augment", type=one_of(["off", "randaugment", "trivialaugment"]),
                   help="per-image augmentation policy, overriding the preset's: RandAugment (2 ops, magnitude 9) or "
                        "TrivialAugment")
    p.add_argument("--aug-from-epoch", type=whole(what="an epoch (0-based)"), default=0,
                   help="crop/flip only from this epoch (0-based) on")
    p.add_argument("--val", type=whole(0, "a number of validation images", " (0: none)"), default=0,
                   help="carve this many training images out as a validation split; best.pt is then chosen on it")
    p.add_argument("--keep-epochs", action="store_true", help="also save every epoch's weights under OUT/epochs/")
    p.add_argument("--snapshots", type=whole(0, "a number of snapshots per epoch", " (0: none)"), default=0,
                   help="also save the weights this many times an epoch under OUT/snapshots/, named by images seen")
    p.add_argument("--ema-probe", type=decays, default=(), metavar="DECAYS",
                   help="EMAs that only watch (comma-separated decays): each is scored after the last epoch, the "
                        "reported model is unchanged")
    p.add_argument("--debug", action="store_true", help="show the Python traceback of an error "
                                                        "(or set SEQUENCER_DEBUG=1)")
    return p


# ----------------------------------------------------------------------------- the steps of a run

@dataclass
class Settings:
    """A run's resolved settings, all checked: the flags, else the recipe's, else the budget's defaults."""
    args: argparse.Namespace  # the flags as parsed (what a recipe or the budget fills in is below)
    budget: str
    batch_size: int
    limit_train: int | None
    limit_test: int | None
    drop_path: float
    aug_preset: str
    model: str  # --model, else the dataset's default
    model_overrides: dict[str, Any]  # from --model-arg
    cfg: TrainConfig  # its model_config is filled in once the model is built


def _flag(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def resolve_settings(argv: Sequence[str] | None) -> Settings:
    """Parse ``argv``, fill in the recipe's and the budget's defaults and check everything: each flag's type, then
    the checks across settings (:meth:`TrainConfig.schedule_problems`, :func:`cross_problems`, ``--model-arg``).
    Every problem found is in one :class:`UsageError`; nothing is read, downloaded or written."""
    parser = build_parser()
    args, problems = parser.parse_collecting(argv)
    try:
        run_budget = args.budget or budget()  # a CLI flag must not leak into the caller's environment
    except ValueError as e:
        raise UsageError(str(e)) from e
    d = recipe_defaults(args.dataset, run_budget)
    pick = lambda name: d[name] if getattr(args, name) is None else getattr(args, name)  # noqa: E731
    epochs = pick("epochs")
    known = lambda v: None if v is INVALID else v  # noqa: E731
    # default warmup: the budget's, but at most 10% of the run (e.g. --budget gpu --epochs 2)
    warmup = args.warmup_epochs if args.warmup_epochs is not None else (
        min(d["warmup_epochs"], 0.1 * epochs) if epochs is not INVALID else d["warmup_epochs"])
    problems += [Problem(dest, text) for dest, text in TrainConfig.schedule_problems(
        known(epochs), known(warmup), known(args.aug_from_epoch), name=_flag)]
    problems += cross_problems(args, pick("limit_train"))
    problems += [Problem("environment", text) for text in check_environment()]  # SEQUENCER_DRY_RUN=maybe, ...
    overrides: dict[str, Any] = {}
    try:
        overrides = model_args(args.model_arg)
    except ValueError as e:
        problems.append(Problem("model_arg", str(e)))
    if problems:
        raise parser.usage_error(problems)
    aug = AugmentConfig.preset(pick("aug"))
    if args.smoothing is not None:
        aug.label_smoothing = args.smoothing
    for dest, field_name in (("random_erasing", "random_erasing"), ("mixup", "mixup_alpha"),
                             ("cutmix", "cutmix_alpha")):
        if getattr(args, dest) is not None:
            setattr(aug, field_name, getattr(args, dest))
    if args.auto_augment is not None:
        aug.randaugment, aug.trivialaugment = args.auto_augment == "randaugment", args.auto_augment == "trivialaugment"
    try:
        cfg = TrainConfig(epochs=epochs, lr=args.lr, weight_decay=args.weight_decay, warmup_epochs=warmup, aug=aug,
                          amp=args.amp, device=args.device, seed=args.seed, out_dir=args.out, resume=args.resume,
                          stop_after=args.stop_after, ema_decay=args.ema, img_sizes=args.img_sizes or (),
                          aug_from_epoch=args.aug_from_epoch, keep_epochs=args.keep_epochs,
                          snapshots_per_epoch=args.snapshots, ema_probes=args.ema_probe)
    except ValueError as e:  # a recipe's value the flags' types never saw
        raise UsageError(str(e)) from e
    return Settings(args, run_budget, pick("batch_size"), pick("limit_train"), pick("limit_test"), pick("drop_path"),
                    pick("aug"), args.model or DEFAULT_MODEL[args.dataset], overrides, cfg)


def build_run_model(s: Settings) -> tuple[nn.Module, TrainConfig]:
    """The model (its initial weights are a function of ``--seed``) and the run's config holding its description.
    Built before any data is read: a bad ``--model-arg`` fails first."""
    info = dataset_info(s.args.dataset)
    torch.manual_seed(s.args.seed)
    try:
        model, model_config = build_model(s.model, info.in_chans, info.num_classes, info.img_size, s.drop_path,
                                          **s.model_overrides)
    except (TypeError, ValueError) as e:
        raise UsageError(f"--model {s.model}{''.join(f' --model-arg {a}' for a in s.args.model_arg)}: {e}") from e
    return model, replace(s.cfg, model_config=model_config)


@dataclass
class RunData:
    """The loaders of a run (``train`` is this process's shard under torchrun) and what they hold."""
    train: Any
    test: Any
    val: Any | None
    info: DatasetInfo
    identity: dict  # data_identity: sizes and fingerprints, recorded in checkpoints and results.json


def build_data(s: Settings, device: torch.device) -> RunData:
    """Read (or download) the data set and batch it; carve out the validation split (``--val``)."""
    a = s.args
    train, test, info = make_loaders(a.dataset, s.batch_size, s.cfg.aug, limit_train=s.limit_train,
                                     limit_test=s.limit_test, seed=a.seed, device=device, fast=not a.no_fast,
                                     num_workers=a.workers, root=a.data_root)
    val = None
    if a.val:
        if a.val >= len(train.dataset):
            raise UsageError(f"--val {a.val}: expected fewer validation images than the {len(train.dataset)} "
                             f"training images")
        train, val = carve_validation(train, a.val)
    identity = data_identity(train, test)
    train = distributed.shard(train)  # under torchrun: this rank's slice of every global batch
    if not quiet() and distributed.is_main():
        print(f"data: {a.dataset} from {identity.get('root')} ({identity.get('n_train')} train, "
              f"{identity.get('n_test')} test images{f', {a.val} validation' if a.val else ''})", file=sys.stderr)
    return RunData(train, test, val, info, identity)


def results_payload(s: Settings, model: nn.Module, cfg: TrainConfig, data: RunData, history: dict,
                    t0: float) -> dict:
    """What ``results.json`` holds (provenance is added when it is written); ``t0``: when training started."""
    n_train, n_test = len(data.train.dataset), len(data.test.dataset)
    done = len(history["epoch"])
    info = data.info
    return {
        "dataset": s.args.dataset, "model": s.model, "model_config": cfg.model_config,
        "params": sum(p.numel() for p in model.parameters()),
        "macs": count_macs(model, (info.in_chans, info.img_size, info.img_size)),
        "complete": done == cfg.epochs, "epochs_completed": done,
        "final_test_acc": history["test_acc"][-1] if done else None,  # the reported figure: the last epoch
        "best_test_acc": max(history["test_acc"]) if done else None,  # for reference only: chosen on the test set
        "best_epoch": history["epoch"][int(np.argmax(history["test_acc"]))] if done else None,
        "val_size": s.args.val, "images_seen": history["images_seen"][-1] if done else 0,
        "final_val_acc": history["val_acc"][-1] if done and s.args.val else None,
        "wall_time_s": time.perf_counter() - t0,  # this call only
        "train_time_s": sum(history["epoch_time_s"]),  # all epochs, across resumes
        "images_per_s": n_train * done / sum(history["epoch_time_s"]) if done else None,
        "n_train": n_train, "n_test": n_test, "batch_size": s.batch_size, "budget": s.budget,
        "data_root": data.identity.get("root"),  # the folder actually read
        "data": data.identity,  # sizes and fingerprints of the samples (the same record the checkpoint holds)
        "recipe": {**asdict(cfg), "batch_size": s.batch_size, "limit_train": s.limit_train, "name": None,
                   "limit_test": s.limit_test, "drop_path": s.drop_path, "aug_preset": s.aug_preset,
                   "threads": torch.get_num_threads()},
        "history": history,
    }


def remake_command(argv: list[str], out: str) -> str:
    """The command that remakes a run, to be run from the repository root: ``--out`` inside the repository is
    written relative to it (a results file that is committed then names its own folder, on any machine)."""
    where = Path(out).resolve()
    if where.is_relative_to(REPO_ROOT):
        rel = where.relative_to(REPO_ROOT).as_posix()
        for i, arg in enumerate(argv):
            if arg == "--out" and i + 1 < len(argv):
                argv[i + 1] = rel
            elif arg.startswith("--out="):
                argv[i] = f"--out={rel}"
    return shlex.join(["python", "-m", "sequencer_mini.train", *argv])


def write_run_results(s: Settings, payload: dict, argv: Sequence[str] | None) -> None:
    """``OUT/results.json`` with the command and its provenance, from rank 0 alone (the epoch stats were
    all-reduced in ``fit``); then the one line saying where it went."""
    if not distributed.is_main():
        return
    command = remake_command(list(sys.argv[1:] if argv is None else argv), s.args.out)
    payload["processes"] = distributed.world_size()
    path = Path(s.args.out) / "results.json"
    write_results(path, payload, overrides={"command": command, "budget": s.budget})
    if not quiet():
        final, done = payload["final_test_acc"], payload["epochs_completed"]
        print(f"wrote {path}: final test acc {'n/a' if final is None else f'{final:.4f}'}"
              + (f" (epoch {done})" if done else ""), file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> dict:
    """The command line; returns the results payload (also written to ``OUT/results.json``).

    Every argument is checked before any data is read or downloaded and before ``--out`` is touched; a refused
    run raises (``UsageError``, ``DataNotFoundError``, ``RuntimeError`` for a mismatched checkpoint) and leaves
    ``--out`` as it was. ``python -m sequencer_mini.train`` prints such errors as one message
    (:func:`~sequencer_mini.train.cli.run`).
    """
    s = resolve_settings(argv)
    model, cfg = build_run_model(s)
    explicit_dirs(s.args.data_root)  # a misspelt --data-root / $SEQUENCER_DATA: an error now, not a fallback
    created = preflight_out(s.args.out, s.args.resume, s.args.overwrite)  # creatable, writable, ours: before any work
    # one live run per folder: rank 0 holds OUT/.run.lock (torchrun's RANK: the process group is not joined yet)
    lock = RunLock(s.args.out) if os.environ.get("RANK", "0") == "0" else None
    try:
        if lock is not None:
            lock.acquire()
            remove_temporaries(Path(s.args.out))  # left by a killed writer: no live one, we hold the lock
        if s.args.threads:
            torch.set_num_threads(s.args.threads)
        device = distributed.init(s.args.device)  # under torchrun: join the process group, one device per process
        data = build_data(s, device)
        if s.args.overwrite and lock is not None:
            remove_run_files(Path(s.args.out))
        t0 = time.perf_counter()
        history = fit(model, data.train, data.test, cfg, val_loader=data.val)
        payload = results_payload(s, model, cfg, data, history, t0)
        write_run_results(s, payload, argv)  # the last write: complete: true marks a finished run
    except BaseException:
        if lock is not None:
            lock.release()
        remove_created(created)  # a refused run leaves no empty --out behind (a started one keeps its files)
        raise
    if lock is not None:
        lock.release()
    distributed.teardown()
    return payload
