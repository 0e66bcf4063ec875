"""The Colab setup cell, run as on Colab: a fresh environment, a clone, ``pip install .[colab]``, ``cd book``.

The test builds a virtual environment that holds only what Colab preinstalls and this book relies on
(:data:`COLAB_PREINSTALLED` and their dependencies, linked from this machine's site-packages, so that no large
wheel is copied), makes a local git remote whose branch named in ``_config.yml`` points at this checkout's
``HEAD``, and runs, in a kernel of that environment and a Colab-like working folder:

1. a cell that makes ``"google.colab" in sys.modules`` true;
2. the setup cell exactly as ``tools/stamp_setup_cells.py`` writes it, with ``SEQUENCER_REPO_URL`` and
   ``SEQUENCER_COLAB_DIR`` pointing the clone at the local remote and a temporary folder;
3. one chapter (:data:`CHAPTER`, at the ``ci`` budget);
4. checks: ``sequencer_mini`` is imported from the environment (not from this checkout), was installed from the
   clone, the clone is at this checkout's commit (and so is ``provenance.git_commit()``), ``data/`` and
   ``results/`` resolve, and the chapter's imports (timm from the ``colab`` extra) work.

``pip`` installs the packages that Colab lacks (einops, tqdm, timm and their dependencies, setuptools for the
build) from a wheel folder, ``_build/wheelhouse``, filled once with ``pip download`` (PyPI through pip's cache;
the only network access of the test suite, and only while that folder is incomplete) at this machine's
versions; the install itself runs with ``--no-index``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import nbformat
import pytest
import yaml
from fixtures import load_script

ROOT = Path(__file__).resolve().parent.parent
WHEELHOUSE = ROOT / "_build" / "wheelhouse"
CHAPTER = "04_bilstm2d"
#: What Colab preinstalls among this book's needs (Colab has far more; these are the ones the book uses).
COLAB_PREINSTALLED = ("torch", "torchvision", "numpy", "matplotlib", "ipywidgets", "scikit-learn", "ipykernel")

pytestmark = pytest.mark.slow


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(roots: list[str], extras: dict[str, set[str]] | None = None) -> dict[str, metadata.Distribution]:
    """The installed distributions ``roots`` need, transitively (markers evaluated here, extras followed)."""
    from packaging.requirements import Requirement

    found: dict[str, metadata.Distribution] = {}
    todo = [(r, set((extras or {}).get(r, ()))) for r in roots]
    while todo:
        name, wanted = todo.pop()
        key = _norm(name)
        if key in found and not wanted:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        found[key] = dist
        for text in dist.requires or []:
            req = Requirement(text)
            applies = req.marker is None or any(req.marker.evaluate({"extra": e}) for e in (wanted or {""}))
            if applies and (_norm(req.name) not in found or req.extras):
                todo.append((req.name, set(req.extras)))
    return found


def link_into(site: Path, dists: dict[str, metadata.Distribution]) -> None:
    """Symlink each distribution's top-level files and its .dist-info into ``site``."""
    for dist in dists.values():
        tops = {Path(str(f)).parts[0] for f in (dist.files or []) if not str(f).startswith("..")}
        for top in sorted(tops):
            target = Path(str(dist.locate_file(top)))
            link = site / top
            if target.exists() and not link.exists() and not top.endswith(".pth") and top != "__pycache__":
                link.symlink_to(target)


def fill_wheelhouse(names: dict[str, metadata.Distribution]) -> None:
    """``pip download`` the wheels of these installed versions once (kept in _build/wheelhouse)."""
    WHEELHOUSE.mkdir(parents=True, exist_ok=True)
    have = {_norm(p.name.split("-")[0]) + "==" + p.name.split("-")[1] for p in WHEELHOUSE.glob("*.whl")}
    wanted = [f"{d.metadata['Name']}=={d.version}" for d in names.values()]
    missing = [w for w in wanted if _norm(w.split("==")[0]) + "==" + w.split("==")[1] not in have]
    if missing:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                        "-d", str(WHEELHOUSE), *missing], check=True, timeout=600)


def run_git(*args: str, cwd: Path | None = None) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def load_tool(name: str):
    return load_script(f"tools/{name}.py")


CHECK = '''\
import json, os, sys
from importlib.metadata import distribution
from pathlib import Path
import sequencer_mini
from sequencer_mini.core.provenance import git_commit, read_results
results = sorted(Path("results").glob("*/results.json"))
print("COLAB-CHECK " + json.dumps({
    "file": sequencer_mini.__file__, "prefix": sys.prefix, "cwd": os.getcwd(),
    "direct_url": json.loads(distribution("sequencer_mini").read_text("direct_url.json")),
    "git_commit": git_commit(), "paper_json": Path("data/paper.json").is_file(),
    "results": [str(p) for p in results], "first_result_has_provenance": bool(results) and
    "provenance" in read_results(results[0]), "timm": __import__("timm").__file__,
}))'''


def test_setup_cell_installs_from_a_clone_in_a_colab_like_env(tmp_path, monkeypatch):
    if subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True).returncode != 0:
        pytest.skip("not a git checkout: the setup cell clones the repository")
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    started = time.perf_counter()
    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    branch = str(config["repository"].get("branch", "main"))
    head = run_git("rev-parse", "HEAD", cwd=ROOT)

    # 1. a "Colab": a venv with the preinstalled packages only
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    pre = closure(list(COLAB_PREINSTALLED))
    link_into(site, {k: d for k, d in pre.items() if k not in ("pip", "setuptools")})
    # what the setup cell's pip must add: sequencer_mini's requirements and its colab extra, minus the above
    needed = closure(["sequencer_mini"], {"sequencer_mini": {"colab"}})
    to_fetch = {k: d for k, d in needed.items() if k not in pre and k != "sequencer-mini"}
    to_fetch["setuptools"] = metadata.distribution("setuptools")  # the build backend (pyproject.toml)
    fill_wheelhouse(to_fetch)
    before = subprocess.run([str(python), "-c", "import sequencer_mini"], capture_output=True)
    assert before.returncode != 0, "the fresh environment must not see sequencer_mini before the setup cell"

    # 2. the repository as Colab sees it: a remote whose branch from _config.yml is this checkout's HEAD
    remote = tmp_path / "origin.git"
    run_git("clone", "-q", "--bare", str(ROOT), str(remote))
    run_git("update-ref", f"refs/heads/{branch}", head, cwd=remote)

    # 3. a kernel of the venv, started in a Colab-like folder, without this checkout on its path
    kernels = tmp_path / "jupyter" / "kernels" / "colab-venv"
    kernels.mkdir(parents=True)
    (kernels / "kernel.json").write_text(json.dumps({
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Colab-like venv", "language": "python"}))
    content = tmp_path / "content"
    content.mkdir()
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.delenv("PYTHONPATH", raising=False)
    for name, value in {"SEQUENCER_REPO_URL": f"file://{remote}",
                        "SEQUENCER_COLAB_DIR": str(content / "sequencer-book"),
                        "SEQUENCER_BUDGET": "ci", "SEQUENCER_OFFLINE": "1", "SEQUENCER_QUIET": "1",
                        "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(WHEELHOUSE),
                        "PIP_DISABLE_PIP_VERSION_CHECK": "1", "MPLBACKEND": "Agg"}.items():
        monkeypatch.setenv(name, value)

    stamp = load_tool("stamp_setup_cells")
    chapter = nbformat.read(ROOT / "book" / f"{CHAPTER}.ipynb", as_version=4)
    cells = [nbformat.v4.new_code_cell('import sys, types\n'
                                       'sys.modules["google.colab"] = types.ModuleType("google.colab")'),
             nbformat.v4.new_code_cell(stamp.setup_source(chapter=CHAPTER))]
    cells += [c for c in chapter.cells[1:] if c.cell_type == "code"]
    cells.append(nbformat.v4.new_code_cell(CHECK))
    nb = nbformat.v4.new_notebook(cells=cells, metadata={"kernelspec": {"name": "colab-venv", "language": "python",
                                                                        "display_name": "Colab-like venv"}})
    client = NotebookClient(nb, timeout=600, kernel_name="colab-venv", startup_timeout=300,
                            resources={"metadata": {"path": str(content)}})
    try:
        client.execute()
    except CellExecutionError as err:
        pytest.fail(f"the Colab path failed:\n{err}", pytrace=False)

    setup_out = "".join(o.get("text", "") for o in nb.cells[1].outputs)
    assert "budget: ci" in setup_out and "expected at the gpu budget" in setup_out, setup_out
    report = next(line for o in nb.cells[-1].outputs for line in o.get("text", "").splitlines()
                  if line.startswith("COLAB-CHECK "))
    found = json.loads(report.removeprefix("COLAB-CHECK "))
    clone = content / "sequencer-book"
    assert Path(found["prefix"]) == venv
    assert Path(found["file"]).is_relative_to(site), found["file"]  # the installed copy, not this checkout
    assert found["direct_url"]["url"] == clone.as_uri(), found["direct_url"]
    assert run_git("rev-parse", "HEAD", cwd=clone) == head
    assert run_git("rev-parse", "--abbrev-ref", "HEAD", cwd=clone) == branch
    assert found["git_commit"] == head  # provenance names the commit the page came from
    assert Path(found["cwd"]) == clone / "book"
    assert found["paper_json"] and found["results"] and found["first_result_has_provenance"]
    assert Path(found["timm"]).is_relative_to(site)  # the colab extra was installed
    print(f"Colab install path: {time.perf_counter() - started:.0f} s")
