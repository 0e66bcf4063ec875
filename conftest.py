"""Test-suite wiring: the ci budget for notebook kernels and each notebook's time budget.

``python -m pytest`` (configured in pyproject.toml) runs the unit tests in tests/ and, through
nbval (``--nbval-lax``), every notebook in book/. This file lives at the repository root, not in
tests/, because pytest applies a conftest's hooks only to items below its directory: the notebook
items live in book/. It

* sets ``SEQUENCER_BUDGET=ci`` and quiet progress bars before any kernel starts (the kernels
  inherit the environment of this process);
* times every notebook across its cell items (kernel start-up included) and fails the cell that
  pushes a notebook past ``metadata.sequencer.ci_budget_s``; a notebook without that metadata
  fails too (on its first cell);
* writes the measured times to ``_build/notebook_times.json`` for
  ``tools/update_readme_times.py``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent
TIMES_FILE = ROOT / "_build" / "notebook_times.json"

# Before any kernel starts: kernels inherit this environment.
os.environ["SEQUENCER_BUDGET"] = "ci"
os.environ.setdefault("SEQUENCER_QUIET", "1")
os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")  # quiet ipykernel's debugger


class _NotebookClock:
    """Wall time and budget of one notebook under nbval."""

    def __init__(self, path: Path, budget: float | None, n_items: int) -> None:
        self.path = path
        self.budget = budget
        self.n_items = n_items
        self.elapsed = 0.0
        self.items_run = 0
        self.reported_missing = False
        self.reported_over = False


_clocks: dict[Path, _NotebookClock] = {}


def _is_nbval_cell(item: pytest.Item) -> bool:
    try:
        from nbval.plugin import IPyNbCell
    except ImportError:  # pragma: no cover - nbval is a test dependency
        return False
    return isinstance(item, IPyNbCell)


def _ci_budget(nb) -> float | None:
    value = (nb.metadata.get("sequencer") or {}).get("ci_budget_s")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return float(value)
    return None


def _rel(path: Path) -> str:
    try:
        return path.relative_to(ROOT).as_posix()
    except ValueError:
        return str(path)


def pytest_collection_modifyitems(session, config, items) -> None:
    counts: dict[Path, int] = {}
    for item in items:
        if _is_nbval_cell(item):
            path = Path(str(item.parent.fspath)).resolve()
            counts[path] = counts.get(path, 0) + 1
    for item in items:
        if _is_nbval_cell(item):
            path = Path(str(item.parent.fspath)).resolve()
            if path not in _clocks:
                _clocks[path] = _NotebookClock(path, _ci_budget(item.parent.nb), counts[path])


def _clock(item) -> _NotebookClock:
    path = Path(str(item.parent.fspath)).resolve()
    clock = _clocks.get(path)
    if clock is None:  # collected outside the normal path (should not happen)
        clock = _clocks[path] = _NotebookClock(path, _ci_budget(item.parent.nb), 0)
    return clock


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    if not _is_nbval_cell(item):
        return (yield)
    start = time.perf_counter()  # the first cell's setup starts the kernel
    try:
        return (yield)
    finally:
        _clock(item).elapsed += time.perf_counter() - start


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    if not _is_nbval_cell(item):
        return (yield)
    clock = _clock(item)
    start = time.perf_counter()
    try:
        result = yield
    finally:
        clock.elapsed += time.perf_counter() - start
        clock.items_run += 1
    if clock.budget is None and not clock.reported_missing:
        clock.reported_missing = True
        pytest.fail(
            f"{_rel(clock.path)} declares no ci time budget: add "
            '"sequencer": {"ci_budget_s": N} to the notebook metadata (see CONTRIBUTING.md)',
            pytrace=False,
        )
    if clock.budget is not None and clock.elapsed > clock.budget and not clock.reported_over:
        clock.reported_over = True
        pytest.fail(
            f"{_rel(clock.path)} exceeded its ci budget: {clock.elapsed:.1f} s > "
            f"{clock.budget:g} s (metadata.sequencer.ci_budget_s) at cell {item.cell_num}",
            pytrace=False,
        )
    return result


def pytest_sessionfinish(session, exitstatus) -> None:
    book = ROOT / "book"
    complete = {p: c for p, c in _clocks.items()
                if c.n_items and c.items_run == c.n_items and p.parent == book}
    if not complete:
        return
    try:
        data = json.loads(TIMES_FILE.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = {}
    now = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
    for path, clock in complete.items():
        data[_rel(path)] = {
            "ci_time_s": round(clock.elapsed, 1),
            "ci_budget_s": clock.budget,
            "cells": clock.n_items,
            "within_budget": clock.budget is not None and clock.elapsed <= clock.budget,
            "date": now,
            "cpus": os.cpu_count(),
        }
    TIMES_FILE.parent.mkdir(parents=True, exist_ok=True)
    tmp = TIMES_FILE.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(dict(sorted(data.items())), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, TIMES_FILE)


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    ran = [c for c in _clocks.values() if c.items_run]
    if not ran:
        return
    terminalreporter.section("notebook times (ci budget)")
    for clock in sorted(ran, key=lambda c: c.path):
        budget = f"{clock.budget:g} s" if clock.budget is not None else "none"
        status = "" if clock.items_run == clock.n_items else f" ({clock.items_run}/{clock.n_items} cells)"
        terminalreporter.write_line(
            f"{_rel(clock.path)}: {clock.elapsed:.1f} s of {budget}{status}")


def pytest_configure(config) -> None:
    config.addinivalue_line(
        "markers", "slow: runs notebooks or installs packages (tests/test_gpu_dry_run.py, tests/test_colab_install.py)")
