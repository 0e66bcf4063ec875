#!/usr/bin/env python
"""Write the module map of ``sequencer_mini`` into CONTRIBUTING.md, from the package itself.

Every module of the package gets one row: its layer, its path and the first line of its docstring. The rows
go between ``<!-- module-map:start -->`` and ``<!-- module-map:end -->``; ``tests/test_architecture.py`` fails
while the map is stale, so a new or renamed module shows up in the contributors' guide or the tests say so.

Usage::

    python tools/module_map.py           # rewrite CONTRIBUTING.md
    python tools/module_map.py --check   # exit 1 if the map would change
"""
from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "sequencer_mini"
CONTRIBUTING = ROOT / "CONTRIBUTING.md"
START, END = "<!-- module-map:start -->", "<!-- module-map:end -->"
sys.path.insert(0, str(ROOT))  # the package of this checkout
from sequencer_mini import LAYERS as _LAYER_GROUPS  # noqa: E402 (after the path)

#: the layers, lowest first (sequencer_mini.LAYERS; tests/test_architecture.py holds the rule they follow)
LAYERS = tuple(name for group in _LAYER_GROUPS for name in group)


def _summary(path: Path) -> str:
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    first = doc.strip().split("\n\n")[0].replace("\n", " ").strip()
    if not first:
        raise SystemExit(f"{path.relative_to(ROOT)} has no docstring: the module map needs its first line")
    return first.replace("|", "\\|")


def module_map() -> str:
    """The Markdown table of every module, layer by layer."""
    rows = ["| layer | module | what it holds |", "|---|---|---|"]
    rows.append(f"| (public API) | `sequencer_mini/__init__.py` | {_summary(PACKAGE / '__init__.py')} |")
    for layer in LAYERS:
        for i, path in enumerate(sorted((PACKAGE / layer).glob("*.py"), key=lambda p: (p.name != "__init__.py", p))):
            label = f"**{layer}**" if i == 0 else ""
            rows.append(f"| {label} | `{path.relative_to(ROOT).as_posix()}` | {_summary(path)} |")
    return "\n".join(rows)


def rewrite(text: str) -> str:
    pattern = re.compile(re.escape(START) + r".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        raise SystemExit(f"CONTRIBUTING.md has no {START} ... {END} block")
    return pattern.sub(lambda _: f"{START}\n{module_map()}\n{END}", text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="exit 1 if CONTRIBUTING.md's module map is stale")
    args = p.parse_args(argv)
    old = CONTRIBUTING.read_text(encoding="utf-8")
    new = rewrite(old)
    if args.check:
        if new != old:
            print("CONTRIBUTING.md's module map is stale: run python tools/module_map.py", file=sys.stderr)
            return 1
        return 0
    CONTRIBUTING.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
