"""Unit tests for sequencer_mini.core.budget, .provenance, .paths and .plotting."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from sequencer_mini.book.plotting import BOOK_RC, use_book_style
from sequencer_mini.core import budget as budget_mod
from sequencer_mini.core import paths
from sequencer_mini.core.budget import BUDGETS, budget, pick, quiet
from sequencer_mini.core.paths import repo_file, results_dir
from sequencer_mini.core.provenance import provenance, read_results, write_results


@pytest.fixture
def clean_env(monkeypatch):
    for name in ("SEQUENCER_BUDGET", "CI", "SEQUENCER_QUIET"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.mark.parametrize("value", BUDGETS)
def test_budget_from_env(clean_env, value):
    clean_env.setenv("SEQUENCER_BUDGET", value)
    assert budget() == value


def test_budget_env_is_case_and_space_insensitive(clean_env):
    clean_env.setenv("SEQUENCER_BUDGET", "  CPU ")
    assert budget() == "cpu"


def test_budget_invalid_names_the_allowed_values(clean_env):
    clean_env.setenv("SEQUENCER_BUDGET", "huge")
    with pytest.raises(ValueError) as err:
        budget()
    message = str(err.value)
    assert "huge" in message
    for name in BUDGETS:
        assert repr(name) in message


@pytest.mark.parametrize("cuda, expected", [(True, "gpu"), (False, "cpu")])
def test_budget_autodetects(clean_env, cuda, expected):
    clean_env.setattr(budget_mod, "_cuda_available", lambda: cuda)
    assert budget() == expected


def test_empty_env_means_autodetect(clean_env):
    clean_env.setenv("SEQUENCER_BUDGET", "")
    clean_env.setattr(budget_mod, "_cuda_available", lambda: False)
    assert budget() == "cpu"


@pytest.mark.parametrize("value, expected", [("ci", 1), ("cpu", 8), ("gpu", 100)])
def test_pick(clean_env, value, expected):
    clean_env.setenv("SEQUENCER_BUDGET", value)
    assert pick(ci=1, cpu=8, gpu=100) == expected


def test_pick_is_keyword_only_and_complete():
    with pytest.raises(TypeError):
        pick(1, 8, 100)  # type: ignore[misc]
    with pytest.raises(TypeError):
        pick(ci=1, cpu=8)  # type: ignore[call-arg]


@pytest.mark.parametrize("env, expected", [
    ({}, False), ({"CI": "true"}, True), ({"CI": "1"}, True), ({"CI": "0"}, False),
    ({"CI": "false"}, False), ({"SEQUENCER_QUIET": "1"}, True), ({"SEQUENCER_QUIET": ""}, False),
])
def test_quiet(clean_env, env, expected):
    for key, value in env.items():
        clean_env.setenv(key, value)
    assert quiet() is expected


def test_provenance_fields(clean_env):
    clean_env.setenv("SEQUENCER_BUDGET", "ci")
    info = provenance()
    for key in ("command", "git_commit", "device", "python", "torch", "torchvision", "timm",
                "budget", "date"):
        assert key in info, key
    assert info["budget"] == "ci"
    assert re.fullmatch(r"[0-9a-f]{40}|unknown", info["git_commit"])
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\+00:00", info["date"])
    assert info["device"]
    json.dumps(info)  # serialisable


def test_provenance_survives_bad_budget(clean_env):
    clean_env.setenv("SEQUENCER_BUDGET", "nonsense")
    assert provenance()["budget"] is None


def test_git_commit_unknown_outside_a_repository(tmp_path):
    from sequencer_mini.core.provenance import git_commit

    assert git_commit(tmp_path) == "unknown"


def test_git_dirty_ignores_results_folders(tmp_path):
    """Rewriting a committed results file is a run's output, not a code change; any other edit is dirty,
    also when asked from a sub-folder."""
    import subprocess

    from sequencer_mini.core.provenance import _git_dirty

    git = lambda *a: subprocess.run(["git", *a], cwd=tmp_path, check=True, capture_output=True)  # noqa: E731
    git("init", "-q")
    (tmp_path / "book" / "results").mkdir(parents=True)
    (tmp_path / "book" / "results" / "r.json").write_text("{}")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("add", ".")
    git("-c", "user.email=ci@example.org", "-c", "user.name=ci", "commit", "-q", "-m", "init")
    assert _git_dirty(tmp_path) is False
    (tmp_path / "book" / "results" / "r.json").write_text('{"new": 1}')
    assert _git_dirty(tmp_path) is False
    (tmp_path / "code.py").write_text("x = 2\n")
    assert _git_dirty(tmp_path / "book") is True


def test_write_and_read_results(tmp_path):
    path = tmp_path / "sub" / "result.json"
    written = write_results(path, {"accuracy": 0.9, "epochs": [1, 2]})
    assert written == path
    data = read_results(path)
    assert data["accuracy"] == 0.9 and data["epochs"] == [1, 2]
    assert "provenance" in data and "device" in data["provenance"]
    assert [p.name for p in path.parent.iterdir()] == ["result.json"]  # no temp file left


def test_write_results_is_atomic_on_failure(tmp_path):
    path = tmp_path / "result.json"
    write_results(path, {"v": 1})
    with pytest.raises(TypeError):
        write_results(path, {"v": object()})  # not JSON-serialisable
    assert read_results(path)["v"] == 1  # the old file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_write_results_rejects_bad_payload(tmp_path):
    with pytest.raises(TypeError):
        write_results(tmp_path / "x.json", [1, 2])  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        write_results(tmp_path / "x.json", {"provenance": {}})


def test_read_results_missing_names_the_command(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        read_results(tmp_path / "nope.json", command="python bench/findings.py")
    assert "python bench/findings.py" in str(err.value)
    assert "nope.json" in str(err.value)


def test_use_book_style_opaque_white():
    import matplotlib as mpl

    applied = use_book_style()
    assert applied == BOOK_RC
    assert mpl.colors.to_rgba(mpl.rcParams["figure.facecolor"]) == (1.0, 1.0, 1.0, 1.0)
    assert mpl.colors.to_rgba(mpl.rcParams["savefig.facecolor"]) == (1.0, 1.0, 1.0, 1.0)
    assert mpl.rcParams["savefig.transparent"] is False
    assert mpl.rcParams["figure.dpi"] <= 100
    use_book_style({"figure.dpi": 90})
    assert mpl.rcParams["figure.dpi"] == 90
    use_book_style()


ROOT = Path(__file__).resolve().parent.parent


def test_repo_file(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT / "book")
    assert repo_file("book/data/paper.json").resolve() == (ROOT / "book/data/paper.json").resolve()
    monkeypatch.chdir(tmp_path)  # outside the checkout: found through the installed package
    assert repo_file("book/data/paper.json").is_file()
    assert repo_file("book/data/nothing.json", missing_ok=True) is None
    with pytest.raises(FileNotFoundError, match="nothing.json"):
        repo_file("book/data/nothing.json")
    with pytest.raises(ValueError, match="inside the repository"):
        repo_file("/etc/passwd")


def test_results_dir_from_the_root_from_book_and_from_elsewhere(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert results_dir() == Path("book/results")  # relative as found: printed, it names no machine folder
    monkeypatch.chdir(ROOT / "book")
    assert results_dir() == Path("results") and repo_file("book/data/paper.json") == Path("data/paper.json")
    monkeypatch.chdir(ROOT / "bench")
    assert results_dir() == Path("../book/results")
    monkeypatch.chdir(tmp_path)
    assert results_dir().resolve() == (ROOT / "book" / "results").resolve()  # the checkout of the package
    monkeypatch.setattr(paths, "REPO_ROOT", tmp_path / "site-packages")  # a regular install: not a checkout
    monkeypatch.setattr(paths, "install_source", lambda: None)
    assert results_dir(missing_ok=True) is None
    with pytest.raises(FileNotFoundError, match="book/results not found .*run from a clone of the repository"):
        results_dir()


def test_repo_file_finds_the_clone_pip_installed_from(tmp_path, monkeypatch):
    """Colab: the package lives in site-packages, the files in the clone it was installed from."""
    clone = tmp_path / "clone"
    (clone / "book" / "results").mkdir(parents=True)
    (clone / "book" / "data").mkdir()
    (clone / "book" / "data" / "paper.json").write_text("{}")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(paths, "REPO_ROOT", tmp_path / "site-packages")
    monkeypatch.setattr(paths, "install_source", lambda: clone)
    assert repo_file("book/data/paper.json") == clone / "book" / "data" / "paper.json"
    assert results_dir() == clone / "book" / "results"
