"""timm's ``train.py`` and ``validate.py`` train and validate our presets, through
``python -m sequencer_mini.interop.timm_models``, on a tiny ImageFolder, with no flag about the input.

The scripts are timm's, unchanged, from the pinned commit that ``python tools/timm_upstream.py`` fetches into
``tests/_vendor/`` (skipped where they are missing; under ``CI`` a failure). One epoch of 8 images each, on
the CPU, in subprocesses (the scripts set global torch flags and logging):

* ``sequencer2d_mini32`` (3 channels, 32 px): trained and validated, RGB.
* ``sequencer2d_mini28`` (1 channel, 28 px): ``train.py`` passes ``in_chans=3`` unless given ``--in-chans``, so
  without flags it trains the 3-channel variant of the preset; the model's cfg says ``(3, 28, 28)`` and the
  scripts load RGB images for it. With ``--in-chans 1`` it is the preset itself, fed greyscale (``L``) images.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

timm = pytest.importorskip("timm")

ROOT = Path(__file__).resolve().parents[1]
UPSTREAM = ROOT / "tests" / "_vendor" / f"timm-{timm.__version__}"
SCRIPTS = {name: UPSTREAM / name for name in ("train.py", "validate.py")}
if not all(path.exists() for path in SCRIPTS.values()):
    message = (f"timm's train.py / validate.py are not in {UPSTREAM.relative_to(ROOT)}: "
               "run `python tools/timm_upstream.py`")
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message, allow_module_level=True)

RUNTIME = ["-b", "4", "-j", "0", "--device", "cpu"]  # batch size, no loader workers, the CPU: not about the input


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    """``train/`` and ``validation/``, two classes of four 36×36 RGB PNGs each (resized to the model's size)."""
    root = tmp_path_factory.mktemp("imagefolder")
    rng = np.random.default_rng(0)
    for split in ("train", "validation"):
        for label in ("a", "b"):
            (root / split / label).mkdir(parents=True)
            for i in range(4):
                pixels = rng.integers(0, 256, (36, 36, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / label / f"{i}.png")
    return root


def run_script(script: str, args: list[str], cwd: Path) -> str:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-m", "sequencer_mini.interop.timm_models", str(SCRIPTS[script]), *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{script} {' '.join(args)} failed:\n{output[-4000:]}"
    return output


def train(model: str, data: Path, out: Path, *extra: str) -> tuple[Path, str]:
    log = run_script("train.py", ["--data-dir", str(data), "--model", model, "--epochs", "1", *RUNTIME,
                                  "--output", str(out), "--experiment", model, "--checkpoint-hist", "1", *extra], out)
    run = out / model
    assert (run / "summary.csv").exists() and (run / "last.pth.tar").exists(), sorted(p.name for p in run.iterdir())
    return run, log


def validate(model: str, data: Path, checkpoint: Path, *extra: str) -> dict:
    log = run_script("validate.py", ["--data-dir", str(data), "--split", "validation", "--model", model, *RUNTIME,
                                     "--checkpoint", str(checkpoint), *extra], checkpoint.parent)
    result = json.loads(log[log.index("--result") + len("--result"):].strip().split("\n}")[0] + "\n}")
    assert 0.0 <= result["top1"] <= 100.0
    return result


def stem_weight(checkpoint: Path) -> torch.Tensor:
    return torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]["stem.proj.weight"]


@pytest.mark.parametrize(("model", "channels"), [("sequencer2d_mini32", 3), ("sequencer2d_mini28", 3)])
def test_train_and_validate_without_input_flags(model, channels, image_folder, tmp_path):
    run, log = train(model, image_folder, tmp_path)
    assert f"input_size: ({channels}, " in log  # the data config timm derived from the model's cfg
    assert stem_weight(run / "last.pth.tar").shape[1] == channels
    result = validate(model, image_folder, run / "last.pth.tar")
    assert result["model"] == model and result["img_size"] == int(model[-2:])


def test_train_the_one_channel_preset_itself(image_folder, tmp_path):
    run, log = train("sequencer2d_mini28", image_folder, tmp_path, "--in-chans", "1")
    assert "input_size: (1, 28, 28)" in log  # greyscale ('L') images for the preset's own 1-channel stem
    assert stem_weight(run / "last.pth.tar").shape[1] == 1
