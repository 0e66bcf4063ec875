"""``glue(name, value)``: a value computed on a page, for its prose (``{glue:}`` in the rendered book).

With myst-nb installed (the book build) this is myst-nb's ``glue``. Without it (e.g. on Colab, which does not
need the book's tools) a value that would be displayed is printed instead, and one kept only for the prose is
dropped: the page's own outputs show it.
"""
from __future__ import annotations

from typing import Any

try:  # optional: only the book build needs myst-nb
    from myst_nb import glue as _myst_glue
except ImportError:  # pragma: no cover - exercised on machines without the book's tools
    _myst_glue = None

__all__ = ["glue"]


def glue(name: str, value: Any, display: bool = True) -> None:
    """Store ``value`` under ``name`` for the page's prose; shown in place when ``display``."""
    if _myst_glue is not None:
        _myst_glue(name, value, display=display)
    elif display:
        print(f"{name} = {value}")
