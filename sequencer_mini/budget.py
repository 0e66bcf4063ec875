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

Example::

    from sequencer_mini.budget import budget, pick
    epochs = pick(ci=1, cpu=8, gpu=100)
"""

from __future__ import annotations

import os
from typing import TypeVar

__all__ = ["BUDGETS", "ENV_VAR", "budget", "pick", "quiet"]

#: The allowed budget names, smallest first.
BUDGETS: tuple[str, ...] = ("ci", "cpu", "gpu")

#: The environment variable that selects the budget.
ENV_VAR = "SEQUENCER_BUDGET"

T = TypeVar("T")


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard dependency
        return False
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


def quiet() -> bool:
    """Return ``True`` when progress bars should stay silent.

    True when the environment variable ``CI`` or ``SEQUENCER_QUIET`` is set to a non-empty value
    other than ``0``/``false``/``no``. Pass it to tqdm as ``tqdm(..., disable=quiet())``.
    """
    for name in ("CI", "SEQUENCER_QUIET"):
        value = os.environ.get(name, "").strip().lower()
        if value and value not in ("0", "false", "no"):
            return True
    return False
