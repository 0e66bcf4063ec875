"""No figure text below 8 pt at the book's column width.

Every stored figure of the book (``image/png`` outputs of ``book/*.ipynb``) is checked against the font sizes
its cell asks for: each literal ``fontsize=``/``labelsize=`` in the cell (named sizes such as ``"x-small"``
converted with matplotlib's scalings), the sizes used by the library's diagram code when the cell draws a
diagram, and the book style's default ``font.size`` (:data:`sequencer_mini.book.plotting.BOOK_RC`). A figure
is drawn at its ``dpi`` (the cell's ``dpi=``, the diagram's, else the book style's) and shown at its natural
width, or shrunk to the column when it is wider: the smallest text must still read as 8 pt of a book-style
figure (80 dpi) shown at natural size. ``COLUMN_PX`` is the width the rendered book gives a cell's output at a
1280 px window (measured with Chromium on the built book).
"""
from __future__ import annotations

import base64
import json
import re
import struct
from pathlib import Path

import pytest

from sequencer_mini.book.plotting import BOOK_RC

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "book").glob("*.ipynb"))
DIAGRAMS = ROOT / "sequencer_mini" / "book" / "diagrams.py"
COLUMN_PX = 688
MIN_PT = 8.0
SCALINGS = {"xx-small": 0.579, "x-small": 0.694, "small": 0.833, "medium": 1.0, "large": 1.2, "x-large": 1.44,
            "xx-large": 1.728, "smaller": 0.833, "larger": 1.2}
SIZE = re.compile(r"""\b(?:fontsize|labelsize|titlesize|size)\s*=\s*(?:([0-9]+(?:\.[0-9]+)?)|["']([a-z-]+)["'])""")
DPI = re.compile(r"\bdpi\s*=\s*([0-9]+)")
FONT_RC = re.compile(r"""["']font\.size["']\s*:\s*([0-9.]+)""")


def font_sizes(source: str) -> list[float]:
    """Every font size a piece of plotting code names, in points."""
    base = float(BOOK_RC["font.size"])
    sizes = [float(n) if n else base * SCALINGS[name] for n, name in SIZE.findall(source)
             if n or name in SCALINGS]
    sizes += [float(n) for n in FONT_RC.findall(source)]
    return sizes


def _png_width(data: str) -> int:
    raw = base64.b64decode(data)
    return struct.unpack(">I", raw[16:20])[0]


def _diagram_source() -> str:
    return DIAGRAMS.read_text(encoding="utf-8")


def figure_problems(path: Path) -> list[str]:
    problems = []
    for k, cell in enumerate(json.loads(path.read_text(encoding="utf-8"))["cells"]):
        if cell["cell_type"] != "code":
            continue
        widths = [_png_width(o["data"]["image/png"]) for o in cell.get("outputs", [])
                  if "image/png" in o.get("data", {})]
        if not widths:
            continue
        source = "".join(cell["source"])
        sizes = font_sizes(source) + [float(BOOK_RC["font.size"])]
        dpis = [int(d) for d in DPI.findall(source)]
        if "_figure(" in source and "diagrams" in source + "lstm_cell_figure":
            sizes += font_sizes(_diagram_source())
            dpis += [int(d) for d in DPI.findall(_diagram_source())]
        dpi = max(dpis) if dpis else int(BOOK_RC["figure.dpi"])
        for width in widths:
            shown = min(1.0, COLUMN_PX / width) * dpi / float(BOOK_RC["figure.dpi"])
            smallest = min(sizes) * shown
            if smallest < MIN_PT - 1e-9:
                problems.append(f"{path.name} cell {k} (id {cell.get('id')}): text of {min(sizes):g} pt at {dpi} dpi, "
                                f"{width} px wide, reads as {smallest:.1f} pt in the {COLUMN_PX} px column")
    return problems


def test_the_font_rules_themselves():
    assert font_sizes('ax.set_title("a", fontsize=7)') == [7.0]
    assert font_sizes("ax.legend(fontsize='x-small')") == [pytest.approx(6.94)]
    assert font_sizes('ax.tick_params(labelsize=9)') == [9.0]
    assert float(BOOK_RC["font.size"]) >= MIN_PT


def test_diagram_code_has_no_small_text():
    small = [s for s in font_sizes(_diagram_source()) if s < MIN_PT]
    assert not small, f"sequencer_mini/book/diagrams.py uses font sizes {small}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_no_figure_text_below_8pt(path):
    problems = figure_problems(path)
    assert not problems, "\n".join(problems)
