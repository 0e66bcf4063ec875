"""The environment switches, read one way: where downloads go, whether they may happen, and every other
``SEQUENCER_*`` on/off or number.

One parser for every switch (issue 23): :func:`flag` reads an on/off variable (true: ``1``, ``true``, ``yes``,
``on``; false: ``0``, ``false``, ``no``, ``off`` or empty/unset; anything else is a ``ValueError`` naming the
variable and the accepted values), :func:`number` a number checked against its range by name.
:func:`check_environment` checks every switch this library reads at once (the command line calls it before any
work, so a misspelt ``SEQUENCER_DRY_RUN=of`` is refused, not read as "on").

``SEQUENCER_OFFLINE`` (on: never download; the tests set it) and ``SEQUENCER_CACHE`` (the download folder) are
read by the data loaders and by the pretrained-weights downloader alike, so they are read here, once.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

__all__ = ["CACHE_ENV", "OFFLINE_ENV", "DEBUG_ENV", "QUIET_ENV", "DRY_RUN_ENV", "TIMEOUT_ENV", "FLAGS", "NUMBERS",
           "TRUE", "FALSE", "FAULT_ENV", "test_fault", "cache_dir", "download_allowed", "flag", "number",
           "check_environment"]

CACHE_ENV = "SEQUENCER_CACHE"  #: where downloads go
OFFLINE_ENV = "SEQUENCER_OFFLINE"  #: switched on, never download
DEBUG_ENV = "SEQUENCER_DEBUG"  #: switched on, show the traceback of an error the command line reports
QUIET_ENV = "SEQUENCER_QUIET"  #: switched on, no progress bars or per-epoch lines
DRY_RUN_ENV = "SEQUENCER_DRY_RUN"  #: switched on, every loop through budget.limit stops after 2 items
TIMEOUT_ENV = "SEQUENCER_DOWNLOAD_TIMEOUT"  #: seconds for all of pretrained()'s downloads together
FAULT_ENV = "SEQUENCER_TEST_FAULT"  #: tests only: ``kill@K`` / ``pause@K`` at the K-th write point (fsutil)

TRUE = ("1", "true", "yes", "on")  #: the values that switch a flag on (any case, spaces around ignored)
FALSE = ("0", "false", "no", "off", "")  #: the values that switch it off (unset is off too)

#: Every on/off switch the library reads. ``CI`` is the CI systems' own variable, read leniently (any other
#: non-empty value is on), since they set it to values of their own choosing.
FLAGS = (OFFLINE_ENV, DEBUG_ENV, QUIET_ENV, DRY_RUN_ENV)

#: Every numeric switch: ``name: (default, low, high, what)``; a value must be finite, > low and <= high.
NUMBERS: dict[str, tuple[float, float, float, str]] = {
    TIMEOUT_ENV: (300.0, 0.0, 1e6, "a number of seconds"),
}


def flag(name: str, default: bool = False) -> bool:
    """The on/off switch ``$name``: True for ``1/true/yes/on``, False for ``0/false/no/off`` or empty, ``default``
    when unset. Any other value: ``ValueError`` naming the variable and the accepted values."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    if name == "CI":
        return True
    raise ValueError(f"{name}={raw!r} is not an on/off value; accepted: {', '.join(TRUE)} (on) or "
                     f"{', '.join(v or '(empty)' for v in FALSE)} (off)")


def number(name: str) -> float:
    """The numeric switch ``$name`` (one of :data:`NUMBERS`): its default when unset or empty, else a finite
    number in its range; anything else is a ``ValueError`` naming the variable and the range."""
    default, low, high, what = NUMBERS[name]
    raw = os.environ.get(name, "")
    if not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and low < value <= high):
        raise ValueError(f"${name}={raw!r} is not {what}: expected a finite number > {low:g} and <= {high:g} "
                         f"(unset: {default:g})")
    return value


def check_environment() -> list[str]:
    """Every problem with the switches of :data:`FLAGS` and :data:`NUMBERS` (and ``CI``), one line each."""
    problems = []
    for name in (*FLAGS, "CI"):
        try:
            flag(name)
        except ValueError as e:
            problems.append(str(e))
    for name in NUMBERS:
        try:
            number(name)
        except ValueError as e:
            problems.append(str(e))
    try:
        test_fault()
    except ValueError as e:
        problems.append(str(e))
    return problems


def test_fault() -> tuple[str, int] | None:
    """``$SEQUENCER_TEST_FAULT`` (tests only) as ``(mode, K)``: ``kill@K`` or ``pause@K``, K >= 1; None when
    unset or empty. See :func:`sequencer_mini.core.fsutil.fault_point`."""
    raw = os.environ.get(FAULT_ENV, "").strip()
    if not raw:
        return None
    mode, _, k = raw.partition("@")
    if mode not in ("kill", "pause") or not k.isdigit() or int(k) < 1:
        raise ValueError(f"{FAULT_ENV}={raw!r}: expected kill@K or pause@K with K >= 1 (a test-only switch)")
    return mode, int(k)


def cache_dir() -> Path:
    """Where downloads go: ``$SEQUENCER_CACHE`` or ``~/.cache/sequencer_mini``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "sequencer_mini")


def download_allowed(download: bool | None) -> bool:
    """``download=None`` means: yes, unless ``SEQUENCER_OFFLINE`` is on."""
    return (not flag(OFFLINE_ENV)) if download is None else download
