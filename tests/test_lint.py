"""The Python sources pass ``ruff check`` (pyflakes and pycodestyle errors and warnings, lines up to 120).

The settings (rules, line length, excluded folders) live in ``[tool.ruff]`` of pyproject.toml; notebooks are
not linted here, tests/test_notebooks_hygiene.py checks them. ruff is installed by requirements.txt.
"""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def test_ruff_check_passes():
    if importlib.util.find_spec("ruff") is None:
        pytest.fail("ruff is not installed: pip install -r requirements.txt")
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", "."],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, ("ruff check found problems (settings: pyproject.toml [tool.ruff]; "
                                  "`ruff check --fix` repairs some):\n" + proc.stdout + proc.stderr)
