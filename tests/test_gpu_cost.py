"""book/data/gpu_cost.json is what tools/gpu_cost.py computes from the measured files now, and the setup
cell's cost line reads it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from sequencer_mini.core.budget import cost_line, expected_cost
from fixtures import load_script

ROOT = Path(__file__).resolve().parent.parent
FILE = ROOT / "book" / "data" / "gpu_cost.json"


def load_tool(name: str):
    return load_script(f"tools/{name}.py")


def differences(a, b, where: str = "") -> list[str]:
    """Where two JSON values differ; numbers may differ by 2 % (activation bytes vary a little across torch
    versions)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{where}/{k}: only in one" for k in set(a) ^ set(b)]
        return out + [d for k in set(a) & set(b) for d in differences(a[k], b[k], f"{where}/{k}")]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{where}: {len(a)} vs {len(b)} items"]
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in differences(x, y, f"{where}[{i}]")]
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return [] if math.isclose(a, b, rel_tol=0.02, abs_tol=1) else [f"{where}: {a} vs {b}"]
    if isinstance(a, str) and isinstance(b, str) and where.endswith("/memory"):
        return []  # holds the calibration factor as text
    return [] if a == b else [f"{where}: {a!r} vs {b!r}"]


@pytest.mark.slow
def test_gpu_cost_file_is_current():
    tool = load_tool("gpu_cost")
    fresh = json.loads(tool.render(tool.build()))
    stored = json.loads(FILE.read_text(encoding="utf-8"))
    problems = differences(stored, fresh)
    assert not problems, ("book/data/gpu_cost.json is not current (run python tools/gpu_cost.py):\n"
                          + "\n".join(problems[:20]))


def test_every_chapter_has_a_cost_and_the_setup_line_shows_it():
    data = json.loads(FILE.read_text(encoding="utf-8"))
    chapters = sorted(p.stem for p in (ROOT / "book").glob("[0-9][0-9]_*.ipynb"))
    assert sorted(data["chapters"]) == chapters
    assert data["assumptions"]["measured_on_gpu"].startswith("none on a T4")
    for stem in chapters:
        entry = expected_cost(stem)
        assert set(entry["gpus"]) == {"T4", "A100"} and all(g["wall_s"] > 0 for g in entry["gpus"].values())
        line = cost_line(stem)
        assert line.startswith("expected at the gpu budget") and "gpu_cost.json" in line
    heavy = expected_cost("07_cifar_gpu")["gpus"]
    assert heavy["T4"]["wall_s"] >= heavy["A100"]["wall_s"] and "GiB" in cost_line("07_cifar_gpu")
    assert expected_cost("no_such_chapter") is None and "not estimated" in cost_line("no_such_chapter")
