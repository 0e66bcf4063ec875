#!/usr/bin/env python
"""Refresh the notebook times table in README.md.

Reads the ``ci`` times measured by the last ``python -m pytest`` run (``_build/notebook_times.json``,
written by tests/conftest.py) and the ``cpu`` times recorded in each notebook's metadata by
``tools/execute_notebooks.py`` (``metadata.sequencer.cpu_time_s``), and rewrites the table between
``<!-- notebook-times:start -->`` and ``<!-- notebook-times:end -->`` in README.md.

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
START, END = "<!-- notebook-times:start -->", "<!-- notebook-times:end -->"


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    text = README.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(START) + r".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        print(f"README.md has no {START} ... {END} block", file=sys.stderr)
        return 2
    new = pattern.sub(lambda _: f"{START}\n{table()}\n{END}", text)
    if args.check:
        return 0 if new == text else 1
    README.write_text(new, encoding="utf-8")
    print("README.md notebook times updated" + ("" if TIMES.exists() else
          " (no _build/notebook_times.json yet: run python -m pytest first)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
