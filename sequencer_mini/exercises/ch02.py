"""Chapter 2: a BiLSTM from two one-directional LSTMs.

The learner writes ``my_bilstm(x, forward_lstm, backward_lstm)``: two ``nn.LSTM(batch_first=True)`` of hidden
size ``h`` read ``x`` of shape ``(B, T, in)``, one forwards and one backwards, and the result is
``(B, T, 2h)``, equal to ``nn.LSTM(bidirectional=True)`` with the same weights (``tests/test_exercises.py``
checks the reference against it). Values and gradients (input and both LSTMs' parameters) are compared.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from sequencer_mini.exercises.checking import Case, Exercise, Mistake

__all__ = ["bilstm", "bilstm_solution"]


def bilstm_solution(x: Tensor, forward_lstm: nn.LSTM, backward_lstm: nn.LSTM) -> Tensor:
    """The reference: the backward LSTM reads the reversed sequence; its outputs are reversed back."""
    fwd, _ = forward_lstm(x)
    bwd, _ = backward_lstm(x.flip(1))
    return torch.cat([fwd, bwd.flip(1)], dim=-1)


def _not_flipped_back(x: Tensor, forward_lstm: nn.LSTM, backward_lstm: nn.LSTM) -> Tensor:
    return torch.cat([forward_lstm(x)[0], backward_lstm(x.flip(1))[0]], dim=-1)


def _reads_forwards(x: Tensor, forward_lstm: nn.LSTM, backward_lstm: nn.LSTM) -> Tensor:
    return torch.cat([forward_lstm(x)[0], backward_lstm(x)[0]], dim=-1)


def _halves_swapped(x: Tensor, forward_lstm: nn.LSTM, backward_lstm: nn.LSTM) -> Tensor:
    return torch.cat([backward_lstm(x.flip(1))[0].flip(1), forward_lstm(x)[0]], dim=-1)


def _summed(x: Tensor, forward_lstm: nn.LSTM, backward_lstm: nn.LSTM) -> Tensor:
    return forward_lstm(x)[0] + backward_lstm(x.flip(1))[0].flip(1)


def _one_lstm(x: Tensor, forward_lstm: nn.LSTM, backward_lstm: nn.LSTM) -> Tensor:
    return torch.cat([forward_lstm(x)[0], forward_lstm(x.flip(1))[0].flip(1)], dim=-1)


def _case(batch: int, steps: int, d: int, hid: int, seed: int) -> Case:
    def make() -> dict[str, Any]:
        g = torch.Generator().manual_seed(seed)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            fwd, bwd = nn.LSTM(d, hid, batch_first=True), nn.LSTM(d, hid, batch_first=True)
        return {"x": torch.randn(batch, steps, d, generator=g, requires_grad=True),
                "forward_lstm": fwd, "backward_lstm": bwd}
    return Case(f"x of shape ({batch}, {steps}, {d}), hidden size {hid}", make)


bilstm = Exercise(
    name="bilstm",
    chapter=2,
    task="Write my_bilstm(x, forward_lstm, backward_lstm) -> (B, T, 2h): the forward LSTM reads x from left "
         "to right, the backward one from right to left, and position t holds [→h_t ; ←h_t], as "
         "nn.LSTM(bidirectional=True) does.",
    reference=bilstm_solution,
    mistakes={
        "not flipped back": Mistake(
            _not_flipped_back, "The backward outputs are still in reversed order: flip them back (.flip(1)) so "
                               "that position t holds ←h_t, the state after reading x_T, ..., x_t."),
        "reads forwards": Mistake(
            _reads_forwards, "Your backward LSTM reads the sequence forwards: feed it x.flip(1), then flip its "
                             "outputs back."),
        "halves swapped": Mistake(
            _halves_swapped, "The two halves are swapped: nn.LSTM(bidirectional=True) puts the forward "
                             "direction first, [→h_t ; ←h_t]."),
        "summed": Mistake(
            _summed, "The two directions are added; a BiLSTM concatenates them, 2h features per position."),
        "one LSTM": Mistake(
            _one_lstm, "Both directions use forward_lstm's weights; the backward direction has its own LSTM, "
                       "backward_lstm."),
    },
    hints=[
        "Run forward_lstm on x. An nn.LSTM returns (output, (h_n, c_n)); you need output, (B, T, h).",
        "The backward LSTM is an ordinary LSTM fed the reversed sequence: x.flip(1) reverses the time axis.",
        "Reverse the backward outputs again so that position t lines up, then torch.cat([...], dim=-1), "
        "forward half first.",
    ],
    cases=[_case(2, 5, 3, 4, 0), _case(3, 7, 4, 2, 1)],
    grads=("x", "forward_lstm", "backward_lstm"),
)
