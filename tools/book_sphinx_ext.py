"""Sphinx extension for the book (registered in ``_config.yml`` under ``sphinx.local_extensions``).

1. ``book/api.md`` holds the line ``<!-- api-modules -->``; while Sphinx reads that page it is
   replaced with one section per layer of ``sequencer_mini`` (``sequencer_mini.LAYERS``, lowest first) and one
   ``automodule`` entry per public module in it (names starting with ``_`` are skipped), so a new module
   appears on the page without editing it.
2. Type aliases defined in the library (``Backend = Literal[...]``) are not classes Sphinx can
   link to; they are added to ``nitpick_ignore`` so annotations that use them do not fail the
   strict (``-n``) build.
3. A reference such as ``:class:`Downsample2D``` inside ``sequencer_mini.models.sequencer2d`` names a
   class that module imports from ``sequencer_mini.models.blocks``; Sphinx does not follow imports, so
   such references are resolved here through the import to the documented object.
4. Napoleon reads the first line of an attribute or property docstring as ``type: description``.
   A line such as ``Input pixels per token side: the product of ...`` would become a broken
   cross-reference to a class named "Input pixels per token side". When the text before the colon
   is prose rather than a type, the line is passed on with an empty type instead.
5. Every page's scripts are de-duplicated: with Jupyter Book 1.0.4 and sphinx-thebe 0.3.1 the
   inline ``const THEBE_JS_URL = ...`` script is emitted twice, which is a JavaScript error
   ("Identifier 'THEBE_JS_URL' has already been declared") on every page.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
import typing
from pathlib import Path

MARKER = "<!-- api-modules -->"
PACKAGE = "sequencer_mini"


def public_modules(package_dir: Path) -> list[str]:
    """Names of the public modules in the package, layer by layer (lowest first), sorted within a layer."""
    from sequencer_mini import LAYERS  # the checkout's package, as autodoc imports it

    out = []
    for layer in (name for group in LAYERS for name in group):
        out += sorted(f"{PACKAGE}.{layer}.{info.name}" for info in pkgutil.iter_modules([str(package_dir / layer)])
                      if not info.name.startswith("_"))
    return out


def render(modules: list[str]) -> str:
    parts, layer = [], None
    for name in modules:
        if name.split(".")[1] != layer:
            layer = name.split(".")[1]
            parts.append(f"## `{PACKAGE}.{layer}`\n\n```{{eval-rst}}\n.. automodule:: {PACKAGE}.{layer}\n"
                         "   :no-members:\n```\n")
        parts.append(
            f"### `{name}`\n\n"
            "```{eval-rst}\n"
            f".. automodule:: {name}\n"
            "   :members:\n"
            "   :show-inheritance:\n"
            "```\n"
        )
    return "\n".join(parts)


def _source_read(app, docname: str, source: list[str]) -> None:
    if MARKER not in source[0]:
        return
    package_dir = Path(app.confdir) / PACKAGE
    source[0] = source[0].replace(MARKER, render(public_modules(package_dir)))


def _is_type_alias(obj: object) -> bool:
    if isinstance(obj, typing.TypeVar):
        return True
    return typing.get_origin(obj) is not None and not isinstance(obj, type)


def _ignore_type_aliases(app, config) -> None:
    package_dir = Path(app.confdir) / PACKAGE
    ignore = set(map(tuple, config.nitpick_ignore or []))
    for modname in public_modules(package_dir):
        try:
            module = importlib.import_module(modname)
        except Exception:  # autodoc reports import errors itself
            continue
        for name, obj in vars(module).items():
            if not name.startswith("__") and _is_type_alias(obj):
                ignore.add(("py:class", name))
                ignore.add(("py:class", f"{modname}.{name}"))
    config.nitpick_ignore = sorted(ignore)


# "int", "dict[str, Any]", "torch.Tensor | None", "Literal['a', 'b']": types, not prose.
_TYPE_LIKE = re.compile(r"^[\w.\[\]`~'\"]+(\s*[,|]\s*[\w.\[\]`~'\"]+)*\]*$")
_SINGLE_COLON = re.compile(r"(?<!:):(?!:)")


def _protect_attribute_summary(app, what, name, obj, options, lines) -> None:
    if what not in ("attribute", "property", "data") or not lines:
        return
    first = lines[0]
    match = _SINGLE_COLON.search(first)
    if not match or "`" in first[: match.start()]:
        return
    before = first[: match.start()].strip()
    if before and not _TYPE_LIKE.match(before):
        lines[0] = ": " + first


def _resolve_through_imports(app, env, node, contnode):
    """``missing-reference`` handler: follow a library module's imports to the real object."""
    if node.get("refdomain") != "py":
        return None
    modname = node.get("py:module") or ""
    target = node.get("reftarget", "")
    if not modname.startswith(PACKAGE) or not target or target.startswith(PACKAGE):
        return None
    try:
        obj = importlib.import_module(modname)
        for part in target.split("."):
            obj = getattr(obj, part)
    except Exception:
        return None
    real_module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if not real_module or not qualname or not real_module.startswith(PACKAGE):
        return None
    real = f"{real_module}.{qualname}"
    if real == f"{modname}.{target}":
        return None
    domain = env.get_domain("py")
    return domain.resolve_xref(env, node["refdoc"], app.builder, node["reftype"], real, node, contnode)


def _script_key(script) -> tuple:
    attributes = getattr(script, "attributes", {}) or {}
    # the same inline script may come once with filename None and once with ""
    return (str(getattr(script, "filename", script) or ""),
            tuple(sorted((k, str(v)) for k, v in attributes.items())))


def _dedupe_scripts(app, pagename, templatename, context, doctree) -> None:
    scripts = context.get("script_files")
    if not scripts:
        return
    seen: set[tuple] = set()
    unique = []
    for script in scripts:
        key = _script_key(script)
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def setup(app):
    app.connect("source-read", _source_read)
    app.connect("config-inited", _ignore_type_aliases)
    app.connect("missing-reference", _resolve_through_imports)
    app.connect("html-page-context", _dedupe_scripts, priority=900)
    # before sphinx.ext.napoleon (priority 500)
    app.connect("autodoc-process-docstring", _protect_attribute_summary, priority=400)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
