"""Chapter 4: BiLSTM2D, the token mixer of Sequencer2D.

A BiLSTM2D runs two bidirectional LSTMs on the same channels-last feature map ``(B, H, W, C)``:

* ``rnn_v`` reads every **column** top-to-bottom and bottom-to-top: ``B·W`` sequences of length ``H``;
* ``rnn_h`` reads every **row** left-to-right and right-to-left: ``B·H`` sequences of length ``W``.

All columns share ``rnn_v``'s weights and all rows share ``rnn_h``'s. The two ``(B, H, W, 2h)`` results
are concatenated to ``(B, H, W, 4h)`` in the order ``[v_fwd | v_bwd | h_fwd | h_bwd]`` and mixed back to
``C`` channels by ``fc``. Sequences of length ``H`` and ``W`` instead of ``H·W`` (the vanilla Sequencer,
chapter 3) are what make this affordable, and the receptive field of one layer is the cross through the
token's row and column.

Module and parameter names (``rnn_v``, ``rnn_h``, ``fc``) are timm's ``LSTM2d``, so its weights load
with ``strict=True``. The ``union`` and ``with_fc`` options reproduce the paper's ablations.
"""

from typing import Literal

import torch
from torch import Tensor, nn

from sequencer_mini.models import checks
from sequencer_mini.models.lstm import LSTM

__all__ = ["BiLSTM2D", "UNIONS", "BACKENDS", "RNN_TYPES"]

Union = Literal["cat", "add", "vertical", "horizontal"]
Backend = Literal["torch", "scratch"]
RNNType = Literal["lstm", "gru", "rnn"]
UNIONS: tuple[str, ...] = ("cat", "add", "vertical", "horizontal")
BACKENDS: tuple[str, ...] = ("torch", "scratch")
RNN_TYPES: tuple[str, ...] = ("lstm", "gru", "rnn")


def make_rnn(
    input_size: int, hidden_size: int, bidirectional: bool, backend: str, rnn: str = "lstm"
) -> nn.Module:
    """A batch-first one-layer recurrent layer ``(N, T, C) → (N, T, D·h)``.

    ``backend='torch'`` gives :class:`torch.nn.LSTM` (cuDNN on a GPU); ``'scratch'`` gives our fused
    :class:`~sequencer_mini.models.lstm.LSTM`. GRU and tanh-RNN (for the ablations of chapter 10) exist only
    with the torch backend.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if rnn not in RNN_TYPES:
        raise ValueError(f"rnn must be one of {RNN_TYPES}, got {rnn!r}")
    if backend == "scratch":
        if rnn != "lstm":
            raise ValueError(f"backend='scratch' implements only rnn='lstm', got rnn={rnn!r}")
        return LSTM(input_size, hidden_size, bidirectional=bidirectional, batch_first=True, fused=True)
    cls = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[rnn]
    return cls(input_size, hidden_size, num_layers=1, batch_first=True, bidirectional=bidirectional)


class BiLSTM2D(nn.Module):
    """Vertical and horizontal (Bi)LSTMs over a channels-last map, then a channel FC.

    Args:
        input_size: channels ``C`` of the input (and of the output).
        hidden_size: ``h`` per direction; the paper uses ``h = C/4`` so that ``cat`` gives ``4h = C``.
        union: ``'cat'`` (the paper's default), ``'add'`` (sum the two branches), ``'vertical'`` or
            ``'horizontal'`` (one branch only).
        with_fc: mix the branches with ``fc``; without it the branch width must already equal ``C``.
        backend: ``'torch'`` (``nn.LSTM``, cuDNN on a GPU) or ``'scratch'`` (our LSTM, chapter 1).
        bidirectional: each branch reads both ways (the paper); ``False`` is the unidirectional ablation.
        rnn: ``'lstm'``, or ``'gru'`` / ``'rnn'`` for the official GRU2D / RNN2D variants.

    Shapes: ``(B, H, W, C) → (B, H, W, C)``.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        union: Union = "cat",
        with_fc: bool = True,
        backend: Backend = "torch",
        bidirectional: bool = True,
        rnn: RNNType = "lstm",
    ) -> None:
        super().__init__()
        if union not in UNIONS:
            raise ValueError(f"union must be one of {UNIONS}, got {union!r}")
        self.input_size, self.hidden_size = input_size, hidden_size
        self.union, self.with_fc, self.backend = union, with_fc, backend
        self.output_size = 2 * hidden_size if bidirectional else hidden_size  # per branch
        self.with_vertical = union != "horizontal"
        self.with_horizontal = union != "vertical"
        mixed = 2 * self.output_size if union == "cat" else self.output_size
        # Register fc before the RNNs, as timm does, so that a seeded build consumes the random
        # generator in the same order and gives timm's initial weights bit for bit.
        if with_fc:
            self.fc: nn.Linear | None = nn.Linear(mixed, input_size)
        else:
            if mixed != input_size:
                raise ValueError(
                    f"with_fc=False needs the mixed width to equal input_size: union={union!r} gives "
                    f"{mixed} channels (hidden_size={hidden_size}, bidirectional={bidirectional}) but "
                    f"input_size={input_size}"
                )
            self.fc = None
        self.rnn_v = make_rnn(input_size, hidden_size, bidirectional, backend, rnn) if self.with_vertical else None
        self.rnn_h = make_rnn(input_size, hidden_size, bidirectional, backend, rnn) if self.with_horizontal else None

    def extra_repr(self) -> str:
        return f"union={self.union!r}, with_fc={self.with_fc}, backend={self.backend!r}"

    def forward(self, x: Tensor) -> Tensor:
        x = checks.check_bilstm2d_input(x, self.input_size)  # an FX leaf: it runs in a traced module too
        batch, height, width, channels = x.shape
        # permute + reshape rather than einops, so that torch.jit.script and torch.fx trace this; each line
        # gives its einops pattern.
        branches: list[Tensor] = []
        if self.rnn_v is not None:
            # Every column is one sequence running down the image: B·W sequences of length H.
            v = x.permute(0, 2, 1, 3).reshape(batch * width, height, channels)  # "b h w c -> (b w) h c"
            v, _ = self.rnn_v(v)
            branches.append(v.reshape(batch, width, height, -1).permute(0, 2, 1, 3))  # "(b w) h d -> b h w d"
        if self.rnn_h is not None:
            # Every row is one sequence running across the image: B·H sequences of length W.
            h = x.reshape(batch * height, width, channels)  # "b h w c -> (b h) w c"
            h, _ = self.rnn_h(h)
            branches.append(h.reshape(batch, height, width, -1))  # "(b h) w d -> b h w d"
        if len(branches) == 2:
            out = torch.cat(branches, dim=-1) if self.union == "cat" else branches[0] + branches[1]
        else:
            out = branches[0]
        if self.fc is not None:
            out = self.fc(out)
        return out
