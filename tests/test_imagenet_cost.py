"""The appendix's ImageNet cost table is what tools/imagenet_cost.py computes from the book's data files."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("imagenet_cost", REPO / "tools" / "imagenet_cost.py")
imagenet_cost = importlib.util.module_from_spec(spec)
spec.loader.exec_module(imagenet_cost)


def test_table_in_the_appendix_is_current():
    assert imagenet_cost.main(["--check"]) == 0, "run: python tools/imagenet_cost.py"


def test_estimate_follows_from_the_published_numbers():
    est = imagenet_cost.estimate()
    paper = json.loads((REPO / "book" / "data" / "paper.json").read_text())
    assert est["epochs"] == paper["training_recipe_imagenet"]["epochs"] == 300
    assert est["global_batch"] == 2048 and est["gpus"] == 8
    small = next(r for r in est["rows"] if r["model"] == "Sequencer2D-S")
    assert small["steps"] == 300 * (est["images"] // 2048)
    # images seen = GPU-seconds x speed; compute = 6 FLOP per MAC per image
    assert abs(small["gpu_hours"] * 3600 * small["images_per_s"] - est["images"] * 300) < 1
    assert abs(small["exaflop"] * 1e18 - 6 * 8.4e9 * est["images"] * 300) < 1e12
    assert [r["model"] for r in est["rows"]] == ["Sequencer2D-S", "Sequencer2D-M", "Sequencer2D-L"]
