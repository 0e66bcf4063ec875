"""Static checks of the stored notebooks in book/ (no kernel needed; fast).

The book shows the outputs stored in the notebooks (``execute_notebooks: off``), so a notebook must
be saved from a clean, in-order run without errors. These tests also enforce the contract in
CONTRIBUTING.md: the stamped setup cell, the ci time budget in the metadata, at least three
``# NBVAL_CHECK_OUTPUT`` cells per chapter, the 3 MB limit, and a table of contents that lists
exactly the notebooks that exist.

Each check is one test that runs over every notebook and fails naming every notebook (and cell) that breaks it.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterable
from pathlib import Path

import nbformat
import pytest
import yaml
from fixtures import load_script

ROOT = Path(__file__).resolve().parent.parent
BOOK = ROOT / "book"
NOTEBOOKS = sorted(BOOK.glob("*.ipynb"))
CHAPTER = re.compile(r"^\d\d_")
MIN_CHECK_CELLS = 3
MAX_BYTES = 3 * 1024 * 1024
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


def _load_tool(name: str):
    return load_script(f"tools/{name}.py")


stamp = _load_tool("stamp_setup_cells")


@functools.cache
def _read(path: Path) -> nbformat.NotebookNode:
    """A stored notebook, read once for the module's checks (which only read it)."""
    return nbformat.read(path, as_version=4)


@pytest.fixture(scope="module", autouse=True)
def _forget_notebooks():
    yield
    _read.cache_clear()


def _every(paths: Iterable[Path], check: Callable[[Path], None]) -> None:
    """Run ``check`` on every path and fail once, with every failing path's message (each names its file)."""
    paths = list(paths)
    failures = []
    for path in paths:
        try:
            check(path)
        except Exception as exc:  # an assertion, or e.g. nbformat's ValidationError: report it with the file
            message = str(exc)
            if isinstance(exc, AssertionError) and "\nassert " in message:  # the message, without pytest's
                message = message.split("\nassert ", 1)[0]                  # rewrite of the assert statement
            if path.name not in message:
                message = f"{path.name}: {type(exc).__name__}: {message}"
            failures.append(message)
    if failures:
        pytest.fail(f"{len(failures)} of {len(paths)} files fail this check:\n\n" + "\n\n".join(failures),
                    pytrace=False)


def _code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def _is_check_cell(cell) -> bool:
    return any(line.strip() == "# NBVAL_CHECK_OUTPUT" for line in cell.source.splitlines()) or (
        "nbval-check-output" in cell.get("metadata", {}).get("tags", []))


def toc_files() -> list[str]:
    return _load_tool("make_toc").toc_files()


CHAPTERS = [p for p in NOTEBOOKS if CHAPTER.match(p.name)]


def test_there_are_notebooks():
    assert NOTEBOOKS, "book/ has no notebooks"


def _valid_nbformat_and_python_kernel(path):
    nb = nbformat.read(path, as_version=4)  # a fresh copy: validate may repair what it is given
    nbformat.validate(nb)
    kernel = nb.metadata.get("kernelspec", {}).get("name")
    assert kernel == "python3", f"{path.name}: kernelspec.name is {kernel!r}, expected 'python3'"


def test_valid_nbformat_and_python_kernel():
    _every(NOTEBOOKS, _valid_nbformat_and_python_kernel)


def _stored_outputs_from_a_clean_in_order_run(path):
    nb = _read(path)
    cells = [c for c in _code_cells(nb) if c.source.strip()]
    assert cells, f"{path.name} has no code cells"
    assert any(c.outputs for c in cells), (
        f"{path.name} has no stored outputs; record them with "
        f"python tools/execute_notebooks.py book/{path.name}")
    counts = [c.execution_count for c in cells]
    assert None not in counts, (
        f"{path.name}: {counts.count(None)} code cell(s) were not executed; "
        f"run python tools/execute_notebooks.py book/{path.name}")
    expected = list(range(1, len(cells) + 1))
    assert counts == expected, (
        f"{path.name}: execution counts {counts} are not 1..{len(cells)} in order "
        "(saved after out-of-order or repeated execution); re-run the notebook from a fresh kernel")
    for index, cell in enumerate(nb.cells):
        for output in cell.get("outputs", []):
            assert output.get("output_type") != "error", (
                f"{path.name}: cell {index} has a stored error: "
                f"{output.get('ename')}: {output.get('evalue')}")
            if output.get("output_type") == "stream" and output.get("name") == "stderr":
                assert "Traceback (most recent call last)" not in output.get("text", ""), (
                    f"{path.name}: cell {index} printed a traceback to stderr")


def test_stored_outputs_from_a_clean_in_order_run():
    _every(NOTEBOOKS, _stored_outputs_from_a_clean_in_order_run)


def _ci_time_budget_declared(path):
    meta = _read(path).metadata.get("sequencer") or {}
    budget = meta.get("ci_budget_s")
    assert isinstance(budget, (int, float)) and not isinstance(budget, bool) and budget > 0, (
        f'{path.name}: add "sequencer": {{"ci_budget_s": N}} to the notebook metadata '
        "(wall seconds for the whole notebook at the ci budget)")


def test_ci_time_budget_declared():
    _every(NOTEBOOKS, _ci_time_budget_declared)


def _recorded_run_metadata(path):
    meta = _read(path).metadata.get("sequencer") or {}
    recorded = meta.get("recorded") or {}
    assert {"date", "device", "budget"} <= set(recorded), (
        f"{path.name}: no metadata.sequencer.recorded; store the outputs with "
        f"python tools/execute_notebooks.py book/{path.name}")
    assert f"{recorded['budget']}_time_s" in meta


def test_recorded_run_metadata():
    _every(NOTEBOOKS, _recorded_run_metadata)


def _setup_cell_is_current(path):
    problem = stamp.setup_cell_problem(_read(path), chapter=path.stem)
    assert problem is None, (
        f"{path.name}: {problem}; run python tools/stamp_setup_cells.py book/{path.name}")


def test_setup_cell_is_current():
    _every(NOTEBOOKS, _setup_cell_is_current)


def _enough_check_output_cells(path):
    checks = [c for c in _code_cells(_read(path)) if _is_check_cell(c)]
    assert len(checks) >= MIN_CHECK_CELLS, (
        f"{path.name} has {len(checks)} cells marked # NBVAL_CHECK_OUTPUT; "
        f"each chapter needs at least {MIN_CHECK_CELLS} (shapes, parameter counts, equalities)")
    empty = [i for i, c in enumerate(checks) if not c.outputs]
    assert not empty, (
        f"{path.name}: check cells without stored output compare nothing under nbval: {empty}")


def test_enough_check_output_cells():
    _every(CHAPTERS, _enough_check_output_cells)


def _no_progress_bars_in_check_cells(path):
    for cell in _code_cells(_read(path)):
        if not _is_check_cell(cell):
            continue
        for output in cell.outputs:
            text = output.get("text", "") if output.get("output_type") == "stream" else ""
            assert not re.search(r"\d+%\|", text), (
                f"{path.name}: tqdm output in a # NBVAL_CHECK_OUTPUT cell:\n{cell.source[:200]}")


def test_no_progress_bars_in_check_cells():
    _every(NOTEBOOKS, _no_progress_bars_in_check_cells)


def _size_limit(path):
    size = path.stat().st_size
    assert size <= MAX_BYTES, f"{path.name} is {size / 2**20:.1f} MB; keep notebooks under 3 MB"


def test_size_limit():
    _every(NOTEBOOKS, _size_limit)


def _widget_views_have_stored_state(path):
    nb = _read(path)
    state = ((nb.metadata.get("widgets") or {}).get(WIDGET_STATE) or {}).get("state") or {}
    for index, cell in enumerate(nb.cells):
        for output in cell.get("outputs", []):
            view = (output.get("data") or {}).get(WIDGET_VIEW)
            if view:
                assert view["model_id"] in state, (
                    f"{path.name}: cell {index} shows a widget whose state is not stored, so it "
                    "is blank in the book; execute with tools/execute_notebooks.py "
                    "(store_widget_state=True)")


def test_widget_views_have_stored_state():
    _every(NOTEBOOKS, _widget_views_have_stored_state)


def test_toc_is_current():
    """_toc.yml lists exactly the pages that exist and the notebooks whose outputs are recorded
    (unrecorded notebooks fail test_recorded_run_metadata instead)."""
    files = toc_files()
    missing = [f for f in files if not any((ROOT / f"{f}{ext}").exists()
                                            for ext in (".ipynb", ".md", ".rst"))]
    assert not missing, f"_toc.yml lists files that do not exist: {missing}"
    make_toc = _load_tool("make_toc")
    assert make_toc.render() == (ROOT / "_toc.yml").read_text(encoding="utf-8"), (
        "_toc.yml is out of date; run: python tools/make_toc.py")


def test_vendored_html_manager_matches_ipywidgets():
    ipywidgets_version = pytest.importorskip("ipywidgets._version")
    wanted = ipywidgets_version.__html_manager_version__  # e.g. "^1.0.1"
    vendored = (BOOK / "_vendor" / "html-manager" / "VERSION").read_text().strip()
    match = re.fullmatch(r"\^?(\d+)\.(\d+)\.(\d+)", wanted)
    assert match, f"unexpected html-manager requirement {wanted!r}"
    major, minor, patch = map(int, match.groups())
    have = tuple(map(int, vendored.split(".")))
    assert have[0] == major and have >= (major, minor, patch), (
        f"book/_vendor/html-manager is {vendored}; ipywidgets wants {wanted}. "
        "Update HTML_MANAGER_VERSION in tools/vendor_widget_js.sh and run it")


def test_widget_and_math_javascript_served_locally():
    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    sphinx = config["sphinx"]["config"]
    static = [ROOT / p for p in sphinx["html_static_path"]]
    scripts = list(sphinx["nb_ipywidgets_js"]) + [sphinx["mathjax_path"]] + list(sphinx.get("html_js_files", []))
    for script in scripts:
        assert not re.match(r"^(https?:)?//", script), f"{script} is loaded from the network"
        assert any((d / script).is_file() for d in static), f"{script} not found in {static}"
    assert not (ROOT / "_static").exists(), (
        "a top-level _static/ makes Jupyter Book add every .js in it to every page; "
        "keep vendored files in book/_vendor")


def test_paper_numbers_have_sources():
    paper = json.loads((BOOK / "data" / "paper.json").read_text(encoding="utf-8"))
    for key, block in paper.items():
        if isinstance(block, dict) and key not in ("paper",):
            assert "source" in block, f"book/data/paper.json: {key} has no source"


# --- the book says only what it shows ------------------------------------------------------------

# Outputs are read by everyone: they must not show the recording machine's folders, nor the
# mechanics of how a run was copied between machines. /content/ (Colab) and the documented Debian
# data folder /usr/share/datasets/ are paths a reader uses, so they are allowed.
MACHINE_PATH = re.compile(r"(?<![\w~.<])(?:/root|/home|/tmp|/work|/var|/private|/Users|/mnt|/srv|/opt)/"
                          r"|(?<![\w])[A-Z]:\\\\")
INTERNAL_NAMES = re.compile(r"gpu_session\.sh|gpu_checks\.py|\bno \.git\b|\.git\b(?!hub)")


def _output_text(output) -> str:
    if output.get("output_type") == "stream":
        return output.get("text", "")
    data = output.get("data") or {}
    return "\n".join(v for k, v in data.items() if k.startswith("text/") and isinstance(v, str))


def _outputs_show_no_machine_paths_or_internal_names(path):
    found = []
    for index, cell in enumerate(_read(path).cells):
        for output in cell.get("outputs", []):
            text = _output_text(output)
            for pattern in (MACHINE_PATH, INTERNAL_NAMES):
                for match in pattern.finditer(text):
                    start = max(0, match.start() - 60)
                    found.append(f"cell {index}: ...{text[start:match.end() + 40]!r}")
    assert not found, (f"{path.name}: stored outputs show machine paths or internal names (print "
                       "sequencer_mini.book.bookfiles.public_provenance(...) / public_command(...) instead):\n"
                       + "\n".join(found[:10]))


def test_outputs_show_no_machine_paths_or_internal_names():
    _every(NOTEBOOKS, _outputs_show_no_machine_paths_or_internal_names)


_RESULT_PATH = re.compile(r"(?:book/)?(?:bench/)?results/[A-Za-z0-9_.\-/*<>]+")


# One entry per piece of prose: each notebook's markdown cells, setup.md, README.md.
PROSE = [*NOTEBOOKS, BOOK / "setup.md", ROOT / "README.md"]


def _prose_names_only_results_files_that_exist(path):
    """A concrete results path in prose (no wildcard or <placeholder>) must exist in the repository:
    prose may say where a run *would* go only with a placeholder such as book/results/<run>/."""
    if path.suffix == ".ipynb":
        pieces = [(f"cell {i}", c.source) for i, c in enumerate(_read(path).cells) if c.cell_type == "markdown"]
    else:
        pieces = [("text", path.read_text(encoding="utf-8"))]
    missing = []
    for where, text in pieces:
        for match in _RESULT_PATH.finditer(text):
            name = match.group(0).rstrip(".,;:)/")
            if any(ch in name for ch in "*<>") or name.endswith(("results", "-")):
                continue
            rel = name if name.startswith(("book/", "bench/")) else f"book/{name}"
            if not (ROOT / rel).exists():
                missing.append(f"{where}: {name}")
    assert not missing, f"{path.name} names results files that do not exist:\n" + "\n".join(missing)


def test_prose_names_only_results_files_that_exist():
    _every(PROSE, _prose_names_only_results_files_that_exist)


def test_generated_claims_are_current():
    """README's chapter table and the setup page's recorded-runs text match book/results/."""
    stale = _load_tool("write_results_claims").stale()
    assert not stale, f"{stale}: run python tools/write_results_claims.py"


def test_intro_chapter_map_matches_the_results_files():
    """Chapter 0 shows the chapter map generated from book/results/ when it was recorded; it must
    still be what the results files say (re-record 00_intro.ipynb after adding or removing runs)."""
    from sequencer_mini.book.bookfiles import chapter_map, recorded_runs

    nb = _read(BOOK / "00_intro.ipynb")
    cells = [c for c in nb.cells if c.cell_type == "code" and "chapter_map(" in c.source]
    assert len(cells) == 1, "00_intro.ipynb should show the chapter map from one cell calling chapter_map()"
    shown = [o["data"]["text/markdown"] for o in cells[0].outputs if "text/markdown" in (o.get("data") or {})]
    assert shown == [chapter_map(recorded_runs(BOOK / "results"))], (
        "00_intro.ipynb's stored chapter map differs from book/results/; "
        "run python tools/execute_notebooks.py book/00_intro.ipynb")
