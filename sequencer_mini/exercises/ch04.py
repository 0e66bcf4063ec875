"""Chapter 4: BiLSTM2D from two BiLSTMs and ``rearrange``.

The learner writes ``my_bilstm2d(x, rnn_v, rnn_h)``: ``rnn_v`` reads every column of the channels-last grid
``x (B, H, W, C)`` from top to bottom and back, ``rnn_h`` every row, both ``nn.LSTM(C, h, batch_first=True,
bidirectional=True)``; the result is the two branches concatenated, vertical first, ``(B, H, W, 4h)``: the
library's ``BiLSTM2D(with_fc=False)`` with the same LSTMs (``tests/test_exercises.py`` checks the reference
against it). The grids have unequal sides, so that rows and columns cannot be confused by luck. Values and
gradients (input and both LSTMs' parameters) are compared.
"""
from __future__ import annotations

from typing import Any

import torch
from einops import rearrange
from torch import Tensor, nn

from sequencer_mini.exercises.checking import Case, Exercise, Mistake

__all__ = ["bilstm2d", "bilstm2d_solution"]


def bilstm2d_solution(x: Tensor, rnn_v: nn.LSTM, rnn_h: nn.LSTM) -> Tensor:
    """The reference: columns and rows become batches of sequences, and come back."""
    b, h, w, _ = x.shape
    v, _ = rnn_v(rearrange(x, "b h w c -> (b w) h c"))
    v = rearrange(v, "(b w) h d -> b h w d", b=b, w=w)
    hor, _ = rnn_h(rearrange(x, "b h w c -> (b h) w c"))
    hor = rearrange(hor, "(b h) w d -> b h w d", b=b, h=h)
    return torch.cat([v, hor], dim=-1)


def _rows_as_columns(x: Tensor, rnn_v: nn.LSTM, rnn_h: nn.LSTM) -> Tensor:
    b, h, w, c = x.shape
    v, _ = rnn_v(x.reshape(b * w, h, c))
    v = v.reshape(b, w, h, -1).permute(0, 2, 1, 3)
    hor, _ = rnn_h(x.reshape(b * h, w, c))
    return torch.cat([v, hor.reshape(b, h, w, -1)], dim=-1)


def _branches_swapped(x: Tensor, rnn_v: nn.LSTM, rnn_h: nn.LSTM) -> Tensor:
    out = bilstm2d_solution(x, rnn_v, rnn_h)
    half = out.shape[-1] // 2
    return torch.cat([out[..., half:], out[..., :half]], dim=-1)


def _summed(x: Tensor, rnn_v: nn.LSTM, rnn_h: nn.LSTM) -> Tensor:
    out = bilstm2d_solution(x, rnn_v, rnn_h)
    half = out.shape[-1] // 2
    return out[..., :half] + out[..., half:]


def _not_restored(x: Tensor, rnn_v: nn.LSTM, rnn_h: nn.LSTM) -> Tensor:
    b, h, w, c = x.shape
    v, _ = rnn_v(rearrange(x, "b h w c -> (b w) h c"))
    v = v.reshape(b, h, w, -1)
    hor, _ = rnn_h(rearrange(x, "b h w c -> (b h) w c"))
    return torch.cat([v, hor.reshape(b, h, w, -1)], dim=-1)


def _one_lstm(x: Tensor, rnn_v: nn.LSTM, rnn_h: nn.LSTM) -> Tensor:
    return bilstm2d_solution(x, rnn_h, rnn_h)


def _case(batch: int, height: int, width: int, c: int, hid: int, seed: int) -> Case:
    def make() -> dict[str, Any]:
        g = torch.Generator().manual_seed(seed)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            rnn_v = nn.LSTM(c, hid, batch_first=True, bidirectional=True)
            rnn_h = nn.LSTM(c, hid, batch_first=True, bidirectional=True)
        return {"x": torch.randn(batch, height, width, c, generator=g, requires_grad=True),
                "rnn_v": rnn_v, "rnn_h": rnn_h}
    return Case(f"x of shape ({batch}, {height}, {width}, {c}) (H = {height}, W = {width}), hidden size {hid}",
                make)


bilstm2d = Exercise(
    name="bilstm2d",
    chapter=4,
    task="Write my_bilstm2d(x, rnn_v, rnn_h) -> (B, H, W, 4h): rnn_v reads every column of x (B, H, W, C), "
         "rnn_h every row, and the two branches are concatenated, vertical first (BiLSTM2D without its FC).",
    reference=bilstm2d_solution,
    mistakes={
        "vertical reads rows": Mistake(
            _rows_as_columns, "The vertical branch reads along rows: a permute/rearrange is missing. A bare "
                              "x.reshape(B * W, H, C) keeps the row-major order; 'b h w c -> (b w) h c' moves "
                              "w into the batch so that each sequence is a column."),
        "branches swapped": Mistake(
            _branches_swapped, "The branches are swapped: the paper and timm concatenate the vertical branch "
                               "first, [vertical ; horizontal]."),
        "summed": Mistake(
            _summed, "The branches are added (union='add'); this layer concatenates them: 4h channels per token."),
        "vertical not restored": Mistake(
            _not_restored, "The vertical outputs are put back with a bare reshape: '(b w) h d -> b h w d' must "
                           "move w back after h, or each column lands in a row."),
        "one LSTM": Mistake(
            _one_lstm, "Both branches use rnn_h's weights; the vertical branch has its own LSTM, rnn_v."),
    },
    hints=[
        "rearrange(x, 'b h w c -> (b w) h c') gives B·W sequences of length H: the columns. "
        "'b h w c -> (b h) w c' gives the rows.",
        "A bidirectional nn.LSTM returns (output, state); output is (sequences, length, 2h).",
        "Undo each rearrange ('(b w) h d -> b h w d', with b= and w= given), then torch.cat([v, h], dim=-1).",
    ],
    cases=[_case(2, 3, 5, 4, 2, 0), _case(1, 4, 2, 3, 3, 1)],
    grads=("x", "rnn_v", "rnn_h"),
)
