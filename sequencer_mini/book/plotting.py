"""Matplotlib defaults for the book's figures.

Figures get an opaque white background (transparent PNGs lose their black axes and labels on a
dark page; in the dark theme the book shows every figure inverted, see ``book/_theme/book.css``),
and a modest dpi so notebooks stay small.
"""

from __future__ import annotations

from typing import Any

__all__ = ["BOOK_RC", "use_book_style"]

#: The rcParams set by :func:`use_book_style`.
BOOK_RC: dict[str, Any] = {
    "figure.facecolor": "white",
    "figure.edgecolor": "white",
    "axes.facecolor": "white",
    "savefig.facecolor": "white",
    "savefig.edgecolor": "white",
    "savefig.transparent": False,
    "figure.dpi": 80,
    "savefig.dpi": 100,
    "figure.figsize": (6.0, 3.6),
    "font.size": 10,
    "axes.grid": False,
    "image.cmap": "viridis",
}


def use_book_style(rc: dict[str, Any] | None = None) -> dict[str, Any]:
    """Apply the book's matplotlib style and return the rcParams that were set.

    Args:
        rc: extra rcParams applied after :data:`BOOK_RC`, e.g. ``{"figure.dpi": 120}``.

    Returns:
        The dictionary of rcParams applied.
    """
    # import cost: matplotlib loads only when a figure is drawn
    import matplotlib as mpl

    applied = dict(BOOK_RC)
    applied.update(rc or {})
    mpl.rcParams.update(applied)  # type: ignore[arg-type]  # the stubs accept only literal key names
    return applied
