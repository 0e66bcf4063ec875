"""The package type-checks: ``mypy`` over ``sequencer_mini`` (settings in pyproject.toml ``[tool.mypy]``).

Type hints cover the library's functions; this keeps them true. mypy is installed by requirements.txt.
"""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def test_mypy_passes_over_the_package():
    if importlib.util.find_spec("mypy") is None:
        pytest.fail("mypy is not installed: pip install -r requirements.txt")
    proc = subprocess.run([sys.executable, "-m", "mypy", "--no-color-output", "sequencer_mini"], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, "mypy found type errors (settings: pyproject.toml [tool.mypy]):\n" + proc.stdout


def test_pre_commit_config_is_valid():
    """The pre-commit hooks (ruff, mypy, the quick tests) parse, and run only local tools (nothing downloaded)."""
    import yaml  # test dependency, as in the other config tests

    config = yaml.safe_load((REPO / ".pre-commit-config.yaml").read_text(encoding="utf-8"))
    assert [r["repo"] for r in config["repos"]] == ["local"], "pre-commit hooks must be local (no downloads)"
    ids = {h["id"] for r in config["repos"] for h in r["hooks"]}
    assert {"ruff", "mypy", "quick-tests"} <= ids, ids
    if importlib.util.find_spec("pre_commit") is not None:
        proc = subprocess.run([sys.executable, "-m", "pre_commit", "validate-config", ".pre-commit-config.yaml"],
                              cwd=REPO, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    for hook in (h for r in config["repos"] for h in r["hooks"]):
        for path in hook["entry"].split():
            if path.startswith("tests/"):
                assert (REPO / path).is_file(), f"pre-commit hook {hook['id']} names a missing file {path}"
