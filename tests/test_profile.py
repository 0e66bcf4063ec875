"""measure.profile: the recurrent kernels' share of a training step, from torch.profiler."""
from __future__ import annotations

import pytest
import torch
from fixtures import single_thread  # noqa: F401 (fixture)
from torch import nn

from sequencer_mini.measure.profile import profile_training_step
from sequencer_mini.models.sequencer2d import create_model

pytestmark = pytest.mark.usefixtures("single_thread")


def test_a_sequencer_spends_part_of_its_step_in_the_lstms_and_a_cnn_none():
    model = create_model("sequencer2d_mini28", layers=(1, 1), embed_dims=(16, 32), hidden_sizes=(4, 8)).eval()
    p = profile_training_step(model, (2, 1, 28, 28), top=3)
    assert 0 < p.rnn_share < 1 and p.rnn_ms > 0 and len(p.top) == 3
    assert not model.training and all(q.grad is None for q in model.parameters())  # given back as it was
    cnn = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.LazyLinear(10))
    cnn(torch.zeros(1, 1, 28, 28))
    assert profile_training_step(cnn, (2, 1, 28, 28)).rnn_share == 0.0


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        profile_training_step(nn.Identity(), (2, 28, 28))


def test_the_profilers_native_log_lines_are_kept_out_of_the_output():
    import subprocess
    import sys

    code = ("import torch; from sequencer_mini.measure.profile import profile_training_step\n"
            "m = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))\n"
            "print(round(profile_training_step(m, (2, 1, 2, 2)).rnn_share, 3))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "0.0"
    assert "profiler_start" not in out.stderr and "gpuGetDeviceCount" not in out.stderr
