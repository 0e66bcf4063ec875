#!/usr/bin/env python
"""Refresh the notebook times table in README.md, and the whole test run's time above it.

Reads the ``ci`` times measured by the last ``python -m pytest`` run (``_build/notebook_times.json``,
written by the root conftest.py) and the ``cpu`` times recorded in each notebook's metadata by
``tools/execute_notebooks.py`` (``metadata.sequencer.cpu_time_s``), and rewrites the table between
``<!-- notebook-times:start -->`` and ``<!-- notebook-times:end -->`` in README.md. The sentence
"the whole `python -m pytest`, ... took ... on the last run" is rewritten from ``_build/test_run.json``, which
conftest.py writes at the end of a run of the whole suite (no paths, ``-k`` or ``-m``); a run that failed is
not quoted.

Usage::

    python tools/update_readme_times.py           # rewrite README.md
    python tools/update_readme_times.py --check   # exit 1 if the table would change
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
TIMES = ROOT / "_build" / "notebook_times.json"
RUN = ROOT / "_build" / "test_run.json"
START, END = "<!-- notebook-times:start -->", "<!-- notebook-times:end -->"
# The sentence may wrap; it ends at "on the last run".
_CLAUSE = r"(?:[^;()]|\([^()]*\))*?"  # text without ';' in which parentheses are balanced
RUN_SENTENCE = re.compile(rf"the\s+whole\s+`python -m pytest`{_CLAUSE}\s+took\s+{_CLAUSE}\s+on\s+the\s+last\s+run")


def _fmt(seconds) -> str:
    if seconds is None:
        return "–"
    seconds = float(seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min"


def table() -> str:
    measured = json.loads(TIMES.read_text(encoding="utf-8")) if TIMES.exists() else {}
    rows = [
        "| notebook | ci budget | ci, measured | cpu, recorded | recorded on |",
        "|---|---:|---:|---:|---|",
    ]
    for path in sorted((ROOT / "book").glob("*.ipynb")):
        meta = nbformat.read(path, as_version=4).metadata.get("sequencer") or {}
        rel = path.relative_to(ROOT).as_posix()
        ci = (measured.get(rel) or {}).get("ci_time_s")
        recorded = meta.get("recorded") or {}
        device = recorded.get("device", "–")
        rows.append(
            f"| `{rel}` | {_fmt(meta.get('ci_budget_s'))} | {_fmt(ci)} | "
            f"{_fmt(meta.get('cpu_time_s'))} | {device} |")
    return "\n".join(rows)


def _minutes(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


def run_sentence(run: dict) -> str:
    """The README's sentence about the whole test run, from ``_build/test_run.json``."""
    included = "build included but the browser test skipped" if run.get("book_tests_skipped") else \
        "build and browser included"
    workers = run.get("xdist_workers") or 0
    where = f"{run['cpus']} CPUs" + (f" with {workers} pytest-xdist workers" if workers else "")
    return f"the whole `python -m pytest`, {included}, took {_minutes(run['wall_s'])} on {where} on the last run"


def last_run() -> tuple[dict | None, str]:
    """The last whole run's record, or None and why it is not quoted."""
    if not RUN.exists():
        return None, "no _build/test_run.json yet: run the whole python -m pytest first"
    run = json.loads(RUN.read_text(encoding="utf-8"))
    if run.get("exitstatus") != 0:
        return None, f"the last whole run failed (exit status {run.get('exitstatus')}, {run.get('date')}): not quoted"
    return run, f"whole run: {_minutes(run['wall_s'])} on {run['date']}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    text = README.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(START) + r".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        print(f"README.md has no {START} ... {END} block", file=sys.stderr)
        return 2
    if not RUN_SENTENCE.search(text):
        print("README.md has no sentence 'the whole `python -m pytest`, ... took ... on the last run'", file=sys.stderr)
        return 2
    new = pattern.sub(lambda _: f"{START}\n{table()}\n{END}", text)
    run, note = last_run()
    if run is not None:
        new = RUN_SENTENCE.sub(lambda _: run_sentence(run), new, count=1)
    if args.check:
        return 0 if new == text else 1
    README.write_text(new, encoding="utf-8")
    print("README.md notebook times updated" + ("" if TIMES.exists() else
          " (no _build/notebook_times.json yet: run python -m pytest first)") + f"; {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
