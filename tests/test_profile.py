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
