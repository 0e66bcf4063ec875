"""analysis.gates: forget gates recomputed from an LSTM's input and output equal the gates the LSTM ran with."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from sequencer_mini.analysis.gates import _gate, forget_gates, half_life, summarise
from sequencer_mini.models.sequencer2d import create_model


def _stepwise_forget_gates(lstm: nn.LSTM, x: torch.Tensor, suffix: str, reverse: bool) -> torch.Tensor:
    """f_t of one direction, stepping the equations by hand (PyTorch's gate order i, f, g, o)."""
    w_ih, w_hh = getattr(lstm, f"weight_ih_l0{suffix}"), getattr(lstm, f"weight_hh_l0{suffix}")
    b = getattr(lstm, f"bias_ih_l0{suffix}") + getattr(lstm, f"bias_hh_l0{suffix}")
    n, t_len, _ = x.shape
    h = c = torch.zeros(n, lstm.hidden_size)
    gates: list[torch.Tensor] = [torch.empty(0)] * t_len
    for t in (reversed(range(t_len)) if reverse else range(t_len)):
        i, f, g, o = (x[:, t] @ w_ih.T + h @ w_hh.T + b).chunk(4, -1)
        c = f.sigmoid() * c + i.sigmoid() * g.tanh()
        h = o.sigmoid() * c.tanh()
        gates[t] = f.sigmoid()
    return torch.stack(gates, 1)


@torch.no_grad()
def test_recomputed_gates_equal_the_gates_of_the_run():
    torch.manual_seed(0)
    lstm = nn.LSTM(8, 5, batch_first=True, bidirectional=True)
    x = torch.randn(3, 6, 8)
    out, _ = lstm(x)
    assert torch.allclose(_gate(x, out[..., :5], lstm, "", False), _stepwise_forget_gates(lstm, x, "", False),
                          atol=1e-6)
    assert torch.allclose(_gate(x, out[..., 5:], lstm, "_reverse", True),
                          _stepwise_forget_gates(lstm, x, "_reverse", True), atol=1e-6)


def test_forget_gates_of_a_sequencer():
    torch.manual_seed(0)
    model = create_model("sequencer2d_mini28", layers=(1, 1), embed_dims=(16, 32), hidden_sizes=(4, 8)).train()
    stats = forget_gates(model, torch.randn(5, 1, 28, 28), batch_size=2)
    assert model.training  # its mode is given back
    assert len(stats) == 2 * 2 * 2  # 2 blocks x (rnn_v, rnn_h) x (forward, backward)
    assert {(s.axis, s.direction) for s in stats} == {(a, d) for a in ("vertical", "horizontal")
                                                      for d in ("forward", "backward")}
    assert {s.steps for s in stats} == {14, 7}  # 28 px / patch 2 -> 14 tokens a side; then / 2 -> 7
    assert all(0 < s.mean < 1 and len(s.unit_means) in (4, 8) for s in stats)
    rows = summarise(stats)
    assert rows[0]["half_life_steps"] == pytest.approx(half_life(stats[0].mean))
    # at PyTorch's default initialisation the gates sit near sigmoid(0) = 0.5 (chapter 1)
    assert all(abs(s.mean - 0.5) < 0.1 for s in stats)


def test_half_life():
    assert half_life(0.5) == pytest.approx(1.0)
    assert half_life(0.5 ** (1 / 7)) == pytest.approx(7.0)
    assert half_life(1.0) == math.inf and half_life(0.0) == 0.0
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        half_life(1.5)


def test_bad_inputs_are_refused_with_a_sentence():
    model = create_model("sequencer2d_mini28", layers=(1, 1), embed_dims=(16, 32), hidden_sizes=(4, 8))
    bad = torch.zeros(2, 1, 28, 28)
    bad[0, 0, 0, 0] = math.nan
    with pytest.raises(ValueError, match="NaN"):
        forget_gates(model, bad)
    with pytest.raises(ValueError, match="non-empty batch"):
        forget_gates(model, torch.zeros(0, 1, 28, 28))
    with pytest.raises(ValueError, match="rnn_v / rnn_h"):
        forget_gates(nn.Sequential(nn.Flatten(), nn.Linear(784, 10)), torch.zeros(2, 1, 28, 28))
