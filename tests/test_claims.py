"""No page claims a duration that no run measured: a time in prose, a caption or a figure label is glued from a
results file or printed by a cell, never typed (issue 20: "15 CPU minutes" labels stood beside runs of 20 minutes).

Typed durations are found by a pattern (a number, then min / minutes / hour(s) / h, optionally "CPU") in every
chapter's markdown and in the string literals of its code cells. Text between ``<!-- NAME:start -->`` and
``<!-- NAME:end -->`` markers is written by a tool from measured runs (the notebook times of the setup page,
README's tables, by tools/write_results_claims.py and tools/update_readme_times.py) and is checked there."""
from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = sorted((REPO / "book").glob("*.ipynb")) + sorted((REPO / "book").glob("*.md"))
DURATION = re.compile(r"\b\d+(?:\.\d+)?[ -]?(?:CPU[ -])?(?:min(?:ute)?s?|hours?)\b", re.IGNORECASE)
GENERATED = re.compile(r"<!-- (?P<name>[\w-]+):start.*?-->.*?<!-- (?P=name):end -->", re.DOTALL)


def _strings(source: str) -> list[str]:
    """The string literals of a code cell (labels, titles, printed prose); comments and code are not claims."""
    try:
        tree = ast.parse(source)
    except SyntaxError:  # IPython magics: fall back to the whole text
        return [source]
    return [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def typed_durations(path: Path) -> list[str]:
    if path.suffix == ".md":
        texts = [("text", GENERATED.sub("", path.read_text()))]
    else:
        cells = json.loads(path.read_text())["cells"]
        texts = []
        for i, cell in enumerate(cells):
            src = "".join(cell["source"])
            texts += [(f"cell {i}", src)] if cell["cell_type"] == "markdown" else [(f"cell {i}", s) for s in
                                                                                   _strings(src)]
    found = []
    for where, text in texts:
        for m in DURATION.finditer(text):
            found.append(f"{path.name} {where}: ...{text[max(0, m.start() - 50):m.end() + 20]!r}...")
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_no_typed_durations(page: Path):
    found = typed_durations(page)
    assert not found, "glue the measured time instead of typing it:\n" + "\n".join(found)


def test_the_pattern_catches_the_old_claims():
    assert DURATION.search("the same 15 CPU minutes") and DURATION.search("a 15-minute budget")
    assert DURATION.search("about 1.7 h per run") is None  # "h" alone is too common in formulas (4h, 2h)
    assert DURATION.search("took 20 min") and DURATION.search("2 hours")
    assert _strings('label = f"ours, 15 CPU min"\n# a 15 min comment') == ["ours, 15 CPU min"]
    assert GENERATED.sub("", "a <!-- t:start -->took 3 min<!-- t:end --> b") == "a  b"
