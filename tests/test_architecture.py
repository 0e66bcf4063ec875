"""The package's layers, read from the source: imports point down only, and sit at the top of the file.

``sequencer_mini`` is built in layers (CONTRIBUTING.md, "Layout")::

    core  <-  models  <-  interop, measure  <-  train  <-  analysis  <-  book, exercises

A module may import its own layer and the layers below it, never one above (``interop`` and ``measure`` are
siblings and do not import each other). Every import is read, at module level and inside functions alike,
so a lazy import cannot hide an upward dependency. An import inside a function needs a comment saying why
(an optional dependency, the cost of importing it) on its line or the line above.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import sequencer_mini

PACKAGE = Path(__file__).resolve().parent.parent / "sequencer_mini"

#: layer -> rank (from the package's own list); a module may import ranks <= its own, siblings excepted.
LAYERS: dict[str, int] = {name: rank for rank, names in enumerate(sequencer_mini.LAYERS) for name in names}
SIBLINGS = {frozenset(names) for names in sequencer_mini.LAYERS if len(names) > 1}
TOP = len(sequencer_mini.LAYERS)  # sequencer_mini/__init__.py: the public API, may re-export any layer


def _layer_of_module(dotted: str) -> str | None:
    """``sequencer_mini.models.lstm`` -> ``models``; ``sequencer_mini`` (the package itself) -> ``top``."""
    parts = dotted.split(".")
    if parts[0] != "sequencer_mini":
        return None
    if len(parts) == 1:
        return "top"
    return parts[1] if parts[1] in LAYERS else "top"


def _layer_of_file(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else "top"


def _rank(layer: str) -> int:
    return TOP if layer == "top" else LAYERS[layer]


def _imports(tree: ast.AST, module: str) -> list[tuple[int, str]]:
    """Every ``sequencer_mini`` module that ``tree`` imports, with its line; relative imports resolved."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: -node.level]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if node.module is None or target in ("sequencer_mini",) or target.count(".") == 1:
                # `from sequencer_mini.train import loop`: the names may be submodules of that package
                out += [(node.lineno, f"{target}.{a.name}") for a in node.names]
            out.append((node.lineno, target))
    return [(line, name) for line, name in out if name.startswith("sequencer_mini")]


def layer_violations(source: str, path: Path) -> list[str]:
    """Each import in ``source`` (the file at ``path`` inside the package) that points up or sideways."""
    module = ".".join(("sequencer_mini", *path.relative_to(PACKAGE).with_suffix("").parts))
    own = _layer_of_file(path)
    problems = []
    for line, target in _imports(ast.parse(source), module):
        layer = _layer_of_module(target)
        if layer is None or layer == own:
            continue
        if layer == "top":
            if target == "sequencer_mini":
                problems.append(f"{path.name}:{line} imports the package root `sequencer_mini` (the public API); "
                                f"import the module that defines the name instead")
            continue
        if _rank(layer) > _rank(own) or frozenset({own, layer}) in SIBLINGS:
            problems.append(f"{path.relative_to(PACKAGE)}:{line}: the {own} layer imports {target} "
                            f"(the {layer} layer, not below it)")
    return problems


def unexplained_local_imports(source: str) -> list[int]:
    """Lines of imports inside functions with no comment on that line or the line above."""
    lines = source.splitlines()
    bad = []
    for fn in ast.walk(ast.parse(source)):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    here, above = lines[node.lineno - 1], lines[node.lineno - 2]
                    if "#" not in here and not above.strip().startswith("#"):
                        bad.append(node.lineno)
    return sorted(set(bad))


FILES = sorted(PACKAGE.rglob("*.py"))


def test_the_layers_exist_and_the_top_level_is_small():
    folders = sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file())
    assert folders == sorted(LAYERS), f"subpackages {folders}, expected {sorted(LAYERS)}"
    top_modules = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert top_modules == ["__init__.py"], f"modules at the top level besides __init__.py: {top_modules}"


def test_imports_point_down_only():
    problems = [p for path in FILES for p in layer_violations(path.read_text(encoding="utf-8"), path)]
    assert not problems, "imports against the layers:\n" + "\n".join(problems)


def test_local_imports_say_why():
    problems = [f"{path.relative_to(PACKAGE)}:{line}" for path in FILES
                for line in unexplained_local_imports(path.read_text(encoding="utf-8"))]
    assert not problems, ("imports inside functions without a comment saying why (optional dependency, import "
                          "cost, a cycle): " + ", ".join(problems))


@pytest.mark.parametrize("source, where", [
    ("from sequencer_mini.train.loop import fit\n", "models/lstm.py"),
    ("def f():\n    from sequencer_mini.train import data  # lazy\n", "models/blocks.py"),
    ("from ..analysis import erf\n", "train/loop.py"),
    ("import sequencer_mini.book.plotting\n", "core/budget.py"),
    ("from sequencer_mini.measure.macs import count_macs\n", "interop/weights.py"),
    ("from sequencer_mini import train\n", "models/sequencer2d.py"),
])
def test_the_checker_catches_an_upward_import(source, where):
    """The check itself: a planted upward import, lazy, relative or absolute, is reported."""
    assert layer_violations(source, PACKAGE / where), f"not caught: {source!r} in {where}"


def test_the_checker_allows_downward_imports():
    assert not layer_violations("from sequencer_mini.models.lstm import LSTM\nfrom ..core import budget\n",
                                PACKAGE / "train" / "loop.py")
    assert unexplained_local_imports("def f():\n    import timm\n") == [2]
    assert unexplained_local_imports("def f():\n    import timm  # optional dependency\n") == []


def test_contributing_module_map_is_current():
    """CONTRIBUTING.md's module map is generated from the package: every module is listed, none invented."""
    import importlib.util as util

    spec = util.spec_from_file_location("module_map", PACKAGE.parent / "tools" / "module_map.py")
    module_map = util.module_from_spec(spec)
    spec.loader.exec_module(module_map)
    text = (PACKAGE.parent / "CONTRIBUTING.md").read_text(encoding="utf-8")
    assert module_map.rewrite(text) == text, "CONTRIBUTING.md's module map is stale: python tools/module_map.py"
