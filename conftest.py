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
  ``tools/update_readme_times.py``, and after a run of the whole suite (``python -m pytest`` with no paths, ``-k``
  or ``-m``) its wall time to ``_build/test_run.json``, which the same tool writes into README.md.

Under pytest-xdist (``-n 2 --dist loadgroup``, a group per file: every notebook's cells run in one worker, in
order; the gpu dry runs of the notebooks are one group each) each worker
times its own notebooks and hands the times to the controller (``workeroutput``), which alone writes both files;
each worker, and the kernels and subprocesses it starts, use one OpenMP thread (``OMP_NUM_THREADS=1`` unless set),
so that two workers do not oversubscribe two cores.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent
TIMES_FILE = ROOT / "_build" / "notebook_times.json"
RUN_FILE = ROOT / "_build" / "test_run.json"


def _process_start() -> float:
    """When this pytest process started (epoch seconds): from /proc on Linux (interpreter start-up and plugin
    imports included), else now (this file is loaded while pytest starts, before collection)."""
    try:
        started = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])  # field 22, clock ticks
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return time.time() - max(0.0, uptime - started / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return time.time()


_START = _process_start()

# Before any kernel starts: kernels inherit this environment.
os.environ["SEQUENCER_BUDGET"] = "ci"
os.environ.setdefault("SEQUENCER_QUIET", "1")
os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")  # quiet ipykernel's debugger
if os.environ.get("PYTEST_XDIST_WORKER"):
    # Two workers share two cores: one OpenMP thread each, for the worker's torch and the kernels and
    # subprocesses it starts (two threads per process would wait for each other: several times slower).
    os.environ.setdefault("OMP_NUM_THREADS", "1")


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
_worker_clocks: list[_NotebookClock] = []  # xdist controller: the clocks the workers ran
_deselected = 0


def _is_xdist_worker(config) -> bool:
    return hasattr(config, "workerinput")


def _clock_record(clock: _NotebookClock) -> dict:
    return {"path": str(clock.path), "budget": clock.budget, "n_items": clock.n_items, "elapsed": clock.elapsed,
            "items_run": clock.items_run}


def _clock_from_record(record: dict) -> _NotebookClock:
    clock = _NotebookClock(Path(record["path"]), record["budget"], record["n_items"])
    clock.elapsed, clock.items_run = record["elapsed"], record["items_run"]
    return clock


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


#: Test files whose parametrised cases are independent and long (one notebook each), spread over the xdist workers
#: case by case; every other file runs whole in one worker (its module fixtures are built once, and a notebook's
#: cells run in order in one kernel).
SPLIT_BY_CASE = ("tests/test_gpu_dry_run.py",)


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups (--dist=loadgroup, pyproject.toml)
def pytest_collection_modifyitems(session, config, items) -> None:
    for item in items:
        where = _rel(Path(str(item.fspath)).resolve())
        group = item.name if where in SPLIT_BY_CASE and "[" in item.name else where
        item.add_marker(pytest.mark.xdist_group(group))
    _count_notebook_cells(items)


def _count_notebook_cells(items) -> None:
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


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _write_notebook_times(clocks: list[_NotebookClock], now: str) -> None:
    book = ROOT / "book"
    complete = [c for c in clocks if c.n_items and c.items_run == c.n_items and c.path.parent == book]
    if not complete:
        return
    try:
        data = json.loads(TIMES_FILE.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = {}
    for clock in complete:
        data[_rel(clock.path)] = {
            "ci_time_s": round(clock.elapsed, 1),
            "ci_budget_s": clock.budget,
            "cells": clock.n_items,
            "within_budget": clock.budget is not None and clock.elapsed <= clock.budget,
            "date": now,
            "cpus": os.cpu_count(),
        }
    _write_json(TIMES_FILE, dict(sorted(data.items())))


def _whole_suite(session) -> bool:
    """The README's command: the configured testpaths, nothing deselected, not just collected."""
    config = session.config
    option = config.option
    overridden = any(o.split("=", 1)[0].strip() == "testpaths" for o in option.override_ini or [])
    return (config.args_source == pytest.Config.ArgsSource.TESTPATHS and not overridden and not option.keyword
            and not option.markexpr and not option.deselect and not _deselected and not option.collectonly
            and not getattr(option, "lf", False) and not getattr(option, "stepwise", False)
            and session.testscollected > 0)


def _write_run_time(session, exitstatus, now: str) -> None:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    stats = reporter.stats if reporter is not None else {}
    counts = {k: len(v) for k, v in stats.items() if k in ("passed", "failed", "error", "skipped", "xfailed")}
    book_skipped = sorted(r.nodeid for r in stats.get("skipped", [])
                          if getattr(r, "nodeid", "").startswith("tests/test_book.py"))
    _write_json(RUN_FILE, {
        "command": "python -m pytest",
        "wall_s": round(time.time() - _START, 1),
        "exitstatus": int(exitstatus),
        "tests": session.testscollected,
        "outcomes": counts,
        "book_tests_skipped": book_skipped,  # the build and browser test skip without chromium (README)
        "xdist_workers": getattr(session.config.option, "numprocesses", None) or 0,
        "date": now,
        "cpus": os.cpu_count(),
    })


def pytest_sessionfinish(session, exitstatus) -> None:
    if _is_xdist_worker(session.config):  # the controller writes the files
        session.config.workeroutput["notebook_clocks"] = json.dumps(
            [_clock_record(c) for c in _clocks.values() if c.items_run])
        return
    now = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
    _write_notebook_times([*_clocks.values(), *_worker_clocks], now)
    if _whole_suite(session):
        _write_run_time(session, exitstatus, now)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:
    """xdist controller: collect a finished worker's notebook clocks."""
    output = getattr(node, "workeroutput", None) or {}
    _worker_clocks.extend(map(_clock_from_record, json.loads(output.get("notebook_clocks", "[]"))))


def pytest_deselected(items) -> None:
    global _deselected
    _deselected += len(items)


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    ran = [c for c in _clocks.values() if c.items_run] + _worker_clocks
    if not ran:
        return
    terminalreporter.section("notebook times (ci budget)")
    for clock in sorted(ran, key=lambda c: c.path):
        budget = f"{clock.budget:g} s" if clock.budget is not None else "none"
        status = "" if clock.items_run == clock.n_items else f" ({clock.items_run}/{clock.n_items} cells)"
        terminalreporter.write_line(
            f"{_rel(clock.path)}: {clock.elapsed:.1f} s of {budget}{status}")


def pytest_configure(config) -> None:
    if _is_xdist_worker(config) and "torch" in sys.modules:  # imported before OMP_NUM_THREADS was set
        sys.modules["torch"].set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    config.addinivalue_line(
        "markers", "slow: runs notebooks, installs packages or runs timm's model tests on the large presets "
        "(tests/test_gpu_dry_run.py, tests/test_colab_install.py, tests/test_timm_upstream.py)")
