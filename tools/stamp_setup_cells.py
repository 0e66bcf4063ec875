#!/usr/bin/env python
"""Write or refresh the setup cell of every notebook in book/ (right after the title cell).

On Colab the cell clones the repository at the URL and branch named in ``_config.yml``
(``repository.url`` / ``repository.branch``, the one place they are kept), installs ``sequencer_mini``
from that clone and changes into its ``book/`` folder, so the notebook finds ``data/*.json`` and
``results/`` exactly as in a local checkout; on
every machine, prints the Python, torch and sequencer_mini versions, the device, the budget (and whether
this is a dry run) and the chapter's expected time and peak GPU memory at the gpu budget
(``sequencer_mini.core.budget.cost_line``, from ``book/data/gpu_cost.json``). For tests, the environment
variables ``SEQUENCER_REPO_URL`` and ``SEQUENCER_COLAB_DIR`` replace the clone URL and folder
(tests/test_colab_install.py runs the cell against a local clone).

Usage::

    python tools/stamp_setup_cells.py            # stamp every book/*.ipynb
    python tools/stamp_setup_cells.py --check    # exit 1 if any notebook is out of date
    python tools/stamp_setup_cells.py book/01_lstm.ipynb

The cell is recognised by its id ``setup`` or its tag ``sequencer-setup``; only its source and
metadata are rewritten, the stored outputs are kept. tests/test_notebooks_hygiene.py fails when a
notebook's setup cell differs from what this script would write.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parent.parent
BOOK = ROOT / "book"
SETUP_TAG = "sequencer-setup"
SETUP_ID = "setup"
SETUP_TAGS = [SETUP_TAG, "hide-cell"]

TEMPLATE = '''\
# Setup: on Colab, install sequencer_mini from the same branch as this page; everywhere, print
# the versions, the device, the budget and what this chapter costs at the gpu budget. Written by
# tools/stamp_setup_cells.py from _config.yml: do not edit by hand.
import os
import sys

if "google.colab" in sys.modules:
    # Fetch the book at this page's branch (library, data files, recorded results), install the library
    # from it, and work in its book/ folder so that paths such as data/paper.json resolve as they do here.
    # (tests/test_colab_install.py points SEQUENCER_REPO_URL and SEQUENCER_COLAB_DIR at a local clone.)
    REPO = os.environ.get("SEQUENCER_REPO_URL", "{url}")
    CLONE = os.environ.get("SEQUENCER_COLAB_DIR", "/content/sequencer-book")
    !git clone -q --depth 1 --branch {branch} {{REPO}} {{CLONE}} 2>/dev/null || git -C {{CLONE}} pull -q
    %pip install -q "{{CLONE}}[colab]"
    %cd {{CLONE}}/book

import platform
from importlib.metadata import version

import torch

from sequencer_mini.core.budget import budget, cost_line, dry_run
from sequencer_mini.core.provenance import device_name

print(f"python {{platform.python_version()}} | torch {{torch.__version__}} | "
      f"sequencer_mini {{version('sequencer_mini')}}")
print(f"device: {{device_name()}} | budget: {{budget()}}"
      + (" | dry run: every loop stops after 2 steps" if dry_run() else ""))
print(cost_line("{chapter}"))'''


def repository(config_path: Path = ROOT / "_config.yml") -> tuple[str, str]:
    """Return ``(url, branch)`` from ``_config.yml``'s ``repository`` section."""
    config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    repo = config.get("repository") or {}
    url = str(repo.get("url", "")).rstrip("/")
    branch = str(repo.get("branch", "main"))
    if not url.startswith("https://"):
        raise ValueError(f"_config.yml repository.url must be an https URL, got {url!r}")
    return url, branch


def setup_source(config_path: Path = ROOT / "_config.yml", chapter: str = "") -> str:
    """The exact source the setup cell of notebook ``chapter`` (its file stem, e.g. ``01_lstm``) must have."""
    url, branch = repository(config_path)
    return TEMPLATE.format(url=url, branch=branch, chapter=chapter)


def find_setup_cell(nb: nbformat.NotebookNode) -> int | None:
    """Index of the setup cell, or None."""
    for index, cell in enumerate(nb.cells):
        if cell.get("id") == SETUP_ID or SETUP_TAG in cell.get("metadata", {}).get("tags", []):
            return index
    return None


def _is_title(cell: nbformat.NotebookNode) -> bool:
    return cell.cell_type == "markdown" and cell.source.lstrip().startswith("# ")


def setup_index(nb: nbformat.NotebookNode) -> int:
    """Where the setup cell belongs: right after the page title (so the rendered page opens with
    the title, not with the cell's collapsed toggle), or first when the notebook has no title cell."""
    others = [c for i, c in enumerate(nb.cells) if i != find_setup_cell(nb)]
    return 1 if others and _is_title(others[0]) else 0


def setup_cell_problem(nb: nbformat.NotebookNode, source: str | None = None, chapter: str = "") -> str | None:
    """Return why the setup cell of notebook ``chapter`` (file stem) is out of date, or None if it is current."""
    source = setup_source(chapter=chapter) if source is None else source
    index = find_setup_cell(nb)
    if index is None:
        return "has no setup cell"
    wanted = setup_index(nb)
    if index != wanted:
        return f"setup cell is cell {index}, not cell {wanted} (right after the title, or first)"
    cell = nb.cells[index]
    if cell.cell_type != "code":
        return "setup cell is not a code cell"
    if cell.source != source:
        return "setup cell source differs from tools/stamp_setup_cells.py"
    tags = cell.get("metadata", {}).get("tags", [])
    if any(tag not in tags for tag in SETUP_TAGS) or len(tags) != len(set(tags)):
        return f"setup cell tags {tags} should include {SETUP_TAGS}"
    return None


def stamp(nb: nbformat.NotebookNode, source: str | None = None, chapter: str = "") -> bool:
    """Insert or refresh the setup cell of notebook ``chapter`` (file stem) in place. True if it changed."""
    source = setup_source(chapter=chapter) if source is None else source
    if setup_cell_problem(nb, source) is None:
        return False
    index = find_setup_cell(nb)
    wanted = setup_index(nb)
    if index is None:
        cell = nbformat.v4.new_code_cell(source)
    else:
        cell = nb.cells.pop(index)
        cell.cell_type = "code"
        cell.source = source
    nb.cells.insert(wanted, cell)
    cell["id"] = SETUP_ID
    # the book shows the cell collapsed, under the page title; Colab ignores tags
    tags = [t for t in cell.setdefault("metadata", {}).get("tags", [])
            if t not in ("hide-input", "hide-output", "remove-cell", "remove-input")]
    cell.metadata["tags"] = tags + [tag for tag in SETUP_TAGS if tag not in tags]
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: book/*.ipynb")
    parser.add_argument("--check", action="store_true", help="only report; exit 1 if stale")
    args = parser.parse_args(argv)
    paths = args.notebooks or sorted(BOOK.glob("*.ipynb"))
    stale = 0
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        source = setup_source(chapter=path.stem)
        problem = setup_cell_problem(nb, source)
        if problem is None:
            continue
        stale += 1
        if args.check:
            print(f"{path}: {problem}")
            continue
        stamp(nb, source)
        nbformat.write(nb, path)
        print(f"{path}: stamped ({problem})")
    if args.check and stale:
        print(f"{stale} notebook(s) out of date; run: python tools/stamp_setup_cells.py")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
