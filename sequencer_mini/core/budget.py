"""One switch for the size of every experiment in the book.

The budget is read from the environment variable ``SEQUENCER_BUDGET``:

``ci``
    seconds per notebook; used by ``python -m pytest`` (nbval).
``cpu``
    what the rendered book shows; minutes per notebook on a 2-core CPU.
``gpu``
    full runs on Colab or any CUDA machine.

When the variable is unset, the budget is ``gpu`` if CUDA is available and ``cpu`` otherwise,
so notebooks never need editing to switch.

``SEQUENCER_DRY_RUN=1`` (any budget) makes every training or sweep loop that goes through
:func:`limit` stop after :data:`DRY_RUN_STEPS` items, so that a notebook runs all of its code paths
at, say, the ``gpu`` budget's sizes on a CPU in minutes (``tests/test_gpu_dry_run.py``). Results
written during a dry run carry ``provenance.dry_run = true`` and
:func:`sequencer_mini.core.provenance.read_results` refuses them.

:func:`expected_cost` reads ``book/data/gpu_cost.json`` (written by ``tools/gpu_cost.py``): the
expected wall time and peak GPU memory of a chapter at the ``gpu`` budget on a Colab T4 and on an
A100, which the setup cell prints.

Example::

    from sequencer_mini.core.budget import budget, limit, pick
    epochs = pick(ci=1, cpu=8, gpu=100)
    for epoch in limit(range(epochs)):  # 2 epochs in a dry run
        ...
"""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path
from typing import Any, TypeVar
from collections.abc import Iterable

import torch

from sequencer_mini.core.env import DRY_RUN_ENV, QUIET_ENV, flag
from sequencer_mini.core.paths import REPO_ROOT

__all__ = ["BUDGETS", "DRY_RUN_STEPS", "DRY_RUN_VAR", "ENV_VAR", "budget", "cost_line", "dry_run",
           "expected_cost", "limit", "pick", "quiet"]

#: The allowed budget names, smallest first.
BUDGETS: tuple[str, ...] = ("ci", "cpu", "gpu")

#: The environment variable that selects the budget.
ENV_VAR = "SEQUENCER_BUDGET"

#: The environment variable that turns on the dry run.
DRY_RUN_VAR = DRY_RUN_ENV

#: Items a loop wrapped in :func:`limit` runs in a dry run.
DRY_RUN_STEPS = 2

#: Where tools/gpu_cost.py writes the expected cost of each chapter at the gpu budget.
COST_FILE = REPO_ROOT / "book" / "data" / "gpu_cost.json"

T = TypeVar("T")


def _cuda_available() -> bool:
    return bool(torch.cuda.is_available())


def budget() -> str:
    """Return the current budget: ``"ci"``, ``"cpu"`` or ``"gpu"``.

    Reads ``SEQUENCER_BUDGET`` (case and surrounding spaces ignored). If it is unset or empty,
    returns ``"gpu"`` when ``torch.cuda.is_available()`` and ``"cpu"`` otherwise.

    Raises:
        ValueError: if ``SEQUENCER_BUDGET`` holds anything else than the allowed names.
    """
    raw = os.environ.get(ENV_VAR, "").strip().lower()
    if not raw:
        return "gpu" if _cuda_available() else "cpu"
    if raw not in BUDGETS:
        allowed = ", ".join(repr(b) for b in BUDGETS)
        raise ValueError(
            f"{ENV_VAR}={os.environ.get(ENV_VAR)!r} is not a budget; allowed values: {allowed}"
        )
    return raw


def pick(*, ci: T, cpu: T, gpu: T) -> T:
    """Return the value for the current :func:`budget`.

    Args:
        ci: value used at the ``ci`` budget (tests: seconds per notebook).
        cpu: value used at the ``cpu`` budget (the rendered book).
        gpu: value used at the ``gpu`` budget (full runs).

    Example:
        >>> import os
        >>> os.environ["SEQUENCER_BUDGET"] = "ci"
        >>> pick(ci=1, cpu=8, gpu=100)
        1
    """
    return {"ci": ci, "cpu": cpu, "gpu": gpu}[budget()]


def dry_run() -> bool:
    """Return ``True`` when ``SEQUENCER_DRY_RUN`` is on (``1/true/yes/on``; ``0/false/no/off``/empty: off; any other
    value: ``ValueError``, see :func:`sequencer_mini.core.env.flag`)."""
    return flag(DRY_RUN_VAR)


def limit(items: Iterable[T], n: int = DRY_RUN_STEPS) -> Iterable[T]:
    """``items`` unchanged, or in a dry run only its first ``n`` items.

    A list, tuple or range stays a list, tuple or range (sliced), so code that indexes it or takes its
    ``len`` keeps working; any other iterable becomes a lazy ``itertools.islice``.

    Example:
        >>> import os
        >>> os.environ["SEQUENCER_DRY_RUN"] = "1"
        >>> limit([8, 16, 32, 64])
        [8, 16]
        >>> del os.environ["SEQUENCER_DRY_RUN"]
        >>> limit(range(3))
        range(0, 3)
    """
    if n < 1:
        raise ValueError(f"limit needs n >= 1, got {n}")
    if not dry_run():
        return items
    if isinstance(items, (list, tuple, range)):
        return items[:n]
    return itertools.islice(items, n)


def expected_cost(chapter: str, path: str | os.PathLike[str] | None = None) -> dict[str, Any] | None:
    """The expected cost of ``chapter`` (e.g. ``"07_cifar_gpu"``) at the ``gpu`` budget, or None if not listed.

    Returns the chapter's entry of ``book/data/gpu_cost.json``: ``{"gpus": {"T4": {"wall_s": ...,
    "peak_mib": ...}, "A100": {...}}, "what": ..., ...}``; the file's ``assumptions`` say how it was computed.
    """
    # the checkout's file, or, when the library is installed (Colab), the one of the book/ folder we work in
    candidates = [Path(path)] if path is not None else [COST_FILE, Path("data/gpu_cost.json"),
                                                         Path("book/data/gpu_cost.json")]
    src = next((c for c in candidates if c.is_file()), None)
    if src is None:
        return None
    data = json.loads(src.read_text(encoding="utf-8"))
    entry = data.get("chapters", {}).get(chapter)
    return None if entry is None else {**entry, "gpu_names": data.get("gpus", {})}


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 5400:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


def cost_line(chapter: str, path: str | os.PathLike[str] | None = None) -> str:
    """One line for the setup cell: the chapter's expected time and peak GPU memory at the gpu budget."""
    entry = expected_cost(chapter, path)
    if entry is None:
        return f"expected cost at the gpu budget: not estimated for {chapter}"
    gpus = entry["gpus"]
    if all(g["peak_mib"] is None for g in gpus.values()):  # CPU-side work: the same on any Colab machine
        slowest = max(g["wall_s"] for g in gpus.values())
        return (f"expected at the gpu budget: ~{_duration(slowest)}, no heavy GPU work (estimate, data/gpu_cost.json)")
    parts = [f"{name} ~{_duration(g['wall_s'])}, peak ~{g['peak_mib'] / 1024:.1f} GiB" for name, g in gpus.items()]
    return "expected at the gpu budget (estimate, data/gpu_cost.json): " + " | ".join(parts)


def quiet() -> bool:
    """Return ``True`` when progress bars should stay silent.

    True when the environment variable ``CI`` or ``SEQUENCER_QUIET`` is on (:func:`sequencer_mini.core.env.flag`).
    Pass it to tqdm as ``tqdm(..., disable=quiet())``.
    """
    return any(flag(name) for name in ("CI", QUIET_ENV))
