"""The GitHub Actions workflow is linted here, so a broken one fails before any push.

actionlint (syntax, expressions, job graph; shellcheck on ``run:`` scripts when shellcheck is installed) and
zizmor (security: permissions, credential persistence, injection, unpinned actions), both installed by
requirements.txt; plus the project's own rules: every action pinned to a full commit SHA, and CI runs .ci/run.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: pip install -r requirements.txt")
    return path


def test_there_is_a_workflow():
    assert [p.name for p in WORKFLOWS] == ["book.yml"]


def test_actionlint():
    proc = subprocess.run([tool("actionlint"), "-no-color", *map(str, WORKFLOWS)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_zizmor():
    proc = subprocess.run([tool("zizmor"), "--offline", "--no-progress", "--format", "plain", *map(str, WORKFLOWS)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def steps(workflow: dict) -> list[dict]:
    return [step for job in workflow["jobs"].values() for step in job.get("steps", [])]


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_actions_pinned_to_commits_and_ci_runs_the_project_script(path):
    workflow = yaml.safe_load(path.read_text())
    uses = [step["uses"] for step in steps(workflow) if "uses" in step]
    unpinned = [u for u in uses if not re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", u)]
    assert uses and not unpinned, unpinned
    assert any(step.get("run", "").strip() == "bash .ci/run" for step in steps(workflow))
    upload = [s for s in steps(workflow) if s.get("uses", "").startswith("actions/upload-pages-artifact@")]
    assert upload and upload[0]["with"]["path"] == "_build/html"  # the strict build's output is the site
