#!/usr/bin/env python
"""Execute book notebooks in place and store their outputs: the recorded run the book shows.

Usage::

    python tools/execute_notebooks.py book/01_lstm.ipynb [more.ipynb ...]
    python tools/execute_notebooks.py --all                # every notebook in _toc.yml order
    python tools/execute_notebooks.py --budget gpu book/07_cifar_gpu.ipynb

Each notebook runs in a fresh kernel (nbclient) with the working directory ``book/`` and
``SEQUENCER_BUDGET`` set (default ``cpu``), progress bars quiet, and widget state stored so that
kernel-free widgets work on the rendered page. On success it writes the notebook back with
``metadata.sequencer.<budget>_time_s`` (wall seconds) and ``metadata.sequencer.recorded``
(date, device, budget, versions, git commit). On an error the notebook file is left untouched and
the script exits 1.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parent.parent
BOOK = ROOT / "book"
MAX_BYTES = 3 * 1024 * 1024  # CONTRIBUTING.md: notebooks stay under 3 MB


def toc_notebooks() -> list[Path]:
    """Notebooks listed in _toc.yml, in order."""
    from make_toc import toc_files  # tools/ is on sys.path when this file runs as a script

    paths = [ROOT / f"{f}.ipynb" for f in toc_files()]
    return [p for p in paths if p.exists()]


def execute(path: Path, budget: str, timeout: int, quiet: bool) -> float:
    """Run one notebook in place; return its wall time in seconds."""
    from sequencer_mini.core import provenance as prov

    nb = nbformat.read(path, as_version=4)
    env_backup = {k: os.environ.get(k) for k in ("SEQUENCER_BUDGET", "SEQUENCER_QUIET")}
    os.environ["SEQUENCER_BUDGET"] = budget
    if quiet:
        os.environ["SEQUENCER_QUIET"] = "1"
    try:
        client = NotebookClient(
            nb,
            timeout=timeout,
            kernel_name="python3",
            resources={"metadata": {"path": str(BOOK)}},
            store_widget_state=True,
            record_timing=False,
            allow_errors=False,
        )
        start = time.perf_counter()
        client.execute()
        elapsed = time.perf_counter() - start
    finally:
        for key, value in env_backup.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    info = prov.provenance()
    meta = nb.metadata.setdefault("sequencer", {})
    meta[f"{budget}_time_s"] = round(elapsed, 1)
    meta["recorded"] = {
        "date": info["date"],
        "device": info["device"],
        "budget": budget,
        "python": info["python"],
        "torch": info["torch"],
        "git_commit": info["git_commit"],
    }
    nbformat.validate(nb)
    nbformat.write(nb, path)
    size = path.stat().st_size
    if size > MAX_BYTES:
        print(f"warning: {path} is {size / 2**20:.1f} MB (> 3 MB); shrink figures or outputs",
              file=sys.stderr)
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--all", action="store_true", help="every notebook listed in _toc.yml")
    parser.add_argument("--budget", default="cpu", choices=["ci", "cpu", "gpu"])
    parser.add_argument("--timeout", type=int, default=4 * 3600, help="seconds per cell")
    parser.add_argument("--show-progress", action="store_true",
                        help="keep tqdm progress bars in the stored outputs")
    args = parser.parse_args(argv)
    paths = toc_notebooks() if args.all else args.notebooks
    if not paths:
        parser.error("give notebooks or --all")
    failed = 0
    for path in paths:
        path = path.resolve()
        print(f"executing {path.relative_to(ROOT)} at budget {args.budget} ...", flush=True)
        try:
            elapsed = execute(path, args.budget, args.timeout, quiet=not args.show_progress)
        except CellExecutionError as err:
            failed += 1
            print(f"FAILED {path.relative_to(ROOT)} (file left unchanged):\n{err}", file=sys.stderr)
            continue
        print(f"  done in {elapsed:.1f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
