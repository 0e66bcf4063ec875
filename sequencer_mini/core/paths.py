"""Where the repository's files are, from wherever the code runs: the one resolver of the book's files.

A notebook, a benchmark or a test asks for a file by its path inside the repository
(``book/data/paper.json``, ``bench/results/throughput-cuda.json``) or for the recorded results folder
(``book/results``), and gets it from the first place that has it, in this order:

1. the working directory is the repository root: ``<relative>``;
2. the working directory is a folder named ``book`` (where the notebooks run, on Colab too: its setup cell
   clones the repository and changes into ``book/``): ``<relative>`` without its leading ``book/``;
3. the working directory is another folder of the repository (``book/``, ``bench/``): ``../<relative>``;
4. the checkout this package is imported from (:data:`REPO_ROOT`: an editable install, or ``sys.path``);
5. the clone that pip installed this package from (a regular install from a local folder, as Colab's
   setup cell does: :func:`install_source`).

The working directory comes first, so a notebook reads the files of the checkout it runs in. A path that
was found relative to the working directory is returned relative (``results``, ``data/paper.json``), so
what a page prints names no folder of the machine it ran on.
"""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path
from urllib.parse import unquote, urlparse

__all__ = ["REPO_ROOT", "install_source", "repo_file", "results_dir"]

#: The folder that holds this package: the repository root of a checkout (an editable install or a run from
#: the checkout); for a regular install it is ``site-packages``, and :func:`repo_file` also looks in the clone
#: the package was installed from.
REPO_ROOT = Path(__file__).resolve().parents[2]

def install_source() -> Path | None:
    """The local folder ``sequencer_mini`` was pip-installed from (a non-editable install, e.g. Colab's clone)."""
    try:
        origin = json.loads(metadata.distribution("sequencer_mini").read_text("direct_url.json") or "{}")
    except (metadata.PackageNotFoundError, ValueError):
        return None
    url = origin.get("url", "")
    if not url.startswith("file://") or origin.get("dir_info", {}).get("editable"):
        return None

    return Path(unquote(urlparse(url).path))


_WHERE = ("run from a clone of the repository (its root or its book/ folder), or on Colab after the notebook's "
          "setup cell")


def _candidates(relative: str) -> list[Path]:
    rel = Path(relative)
    if rel.is_absolute() or ".." in rel.parts:
        raise ValueError(f"expected a path inside the repository such as 'book/data/paper.json', got {relative!r}")
    candidates = [rel]
    if rel.parts[:1] == ("book",) and len(rel.parts) > 1 and Path.cwd().name == "book":  # data/paper.json
        candidates.append(Path(*rel.parts[1:]))  # only in book/: bench/ has a results/ folder of its own
    candidates += [Path("..") / rel, REPO_ROOT / rel]
    source = install_source()
    if source is not None and source.resolve() != REPO_ROOT:
        candidates.append(source / rel)
    return candidates


def _find(relative: str, missing_ok: bool, is_dir: bool) -> Path | None:
    candidates = _candidates(relative)
    for candidate in candidates:
        if candidate.is_dir() if is_dir else candidate.is_file():
            return candidate
    if missing_ok:
        return None
    tried = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(f"{relative} not found (looked at {tried}); {_WHERE}")


def repo_file(relative: str, missing_ok: bool = False) -> Path | None:
    """``<repository>/<relative>``, from the first place that has it (see the module docstring).

    Args:
        relative: a path inside the repository, e.g. ``"book/data/paper.json"``.
        missing_ok: return None instead of raising when the file is nowhere.

    Raises:
        ValueError: if ``relative`` is absolute or leaves the repository (``..``).
        FileNotFoundError: naming every place looked at (unless ``missing_ok``).
    """
    return _find(relative, missing_ok, is_dir=False)


def results_dir(missing_ok: bool = False) -> Path | None:
    """The recorded results folder ``book/results``, looked for as :func:`repo_file` looks for a file.

    Args:
        missing_ok: return None instead of raising when the folder is nowhere.

    Raises:
        FileNotFoundError: naming every place looked at (unless ``missing_ok``).
    """
    return _find("book/results", missing_ok, is_dir=True)
