"""Chapter 5: the forward pass of the Sequencer2D block.

The learner writes ``my_block_forward(x, block)`` from the parts of a ``Sequencer2DBlock`` (``block.norm1``,
``block.rnn_tokens``, ``block.norm2``, ``block.mlp_channels``): a pre-norm residual token mixer, then a
pre-norm residual channel MLP, on ``(B, H, W, C)``. It is compared with ``block(x)`` (no drop path), values and
gradients with respect to the input and every parameter of the block.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from sequencer_mini.exercises.checking import Case, Exercise, Mistake
from sequencer_mini.models.blocks import Sequencer2DBlock, SequencerBlock

__all__ = ["block", "block_solution"]


def block_solution(x: Tensor, block: SequencerBlock) -> Tensor:
    """The reference: two pre-norm residual steps, one after the other."""
    x = x + block.rnn_tokens(block.norm1(x))
    x = x + block.mlp_channels(block.norm2(x))
    return x


def _post_norm(x: Tensor, block: SequencerBlock) -> Tensor:
    x = block.norm1(x + block.rnn_tokens(x))
    return block.norm2(x + block.mlp_channels(x))


def _no_mixer_residual(x: Tensor, block: SequencerBlock) -> Tensor:
    x = block.rnn_tokens(block.norm1(x))
    return x + block.mlp_channels(block.norm2(x))


def _norm_over_h(x: Tensor, ln: Any) -> Tensor:
    y = F.layer_norm(x.movedim(1, -1), (x.shape[1],), eps=1e-6).movedim(-1, 1)
    return y * ln.weight + ln.bias


def _layernorm_over_h(x: Tensor, block: SequencerBlock) -> Tensor:
    x = x + block.rnn_tokens(_norm_over_h(x, block.norm1))
    return x + block.mlp_channels(_norm_over_h(x, block.norm2))


def _norm1_twice(x: Tensor, block: SequencerBlock) -> Tensor:
    x = x + block.rnn_tokens(block.norm1(x))
    return x + block.mlp_channels(block.norm1(x))


def _parallel(x: Tensor, block: SequencerBlock) -> Tensor:
    return x + block.rnn_tokens(block.norm1(x)) + block.mlp_channels(block.norm2(x))


def _case(batch: int, height: int, width: int, dim: int, seed: int) -> Case:
    def make() -> dict[str, Any]:
        g = torch.Generator().manual_seed(seed)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            blk = Sequencer2DBlock(dim, dim // 4).eval()
            with torch.no_grad():  # LayerNorm starts at weight 1, bias 0: make them matter
                for m in (blk.norm1, blk.norm2):
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.uniform_(-0.5, 0.5)
        return {"x": torch.randn(batch, height, width, dim, generator=g, requires_grad=True), "block": blk}
    return Case(f"x of shape ({batch}, {height}, {width}, {dim}) and a Sequencer2DBlock({dim}, {dim // 4})", make)


block = Exercise(
    name="block",
    chapter=5,
    task="Write my_block_forward(x, block) -> (B, H, W, C) from block.norm1, block.rnn_tokens (the BiLSTM2D), "
         "block.norm2 and block.mlp_channels: token mixing with a pre-norm residual, then the channel MLP with "
         "a pre-norm residual.",
    reference=block_solution,
    mistakes={
        "post-norm": Mistake(
            _post_norm, "The residual is added before the norm (post-norm, norm(x + f(x))); Sequencer2D is "
                        "pre-norm: x + f(norm(x)), the norm inside the branch."),
        "no mixer residual": Mistake(
            _no_mixer_residual, "The token-mixing step has no residual: x = x + rnn_tokens(norm1(x)) keeps the "
                                "input next to what the LSTMs add."),
        "LayerNorm over H": Mistake(
            _layernorm_over_h, "Your LayerNorm normalises over H instead of C: each token's C channels (the "
                               "last axis of the channels-last map) are normalised, as block.norm1(x) does."),
        "norm1 twice": Mistake(
            _norm1_twice, "The MLP's input goes through norm1; each step has its own LayerNorm: norm2 before "
                          "the MLP."),
        "parallel branches": Mistake(
            _parallel, "The MLP reads the block's input; the two residual steps run one after the other, so "
                       "the MLP reads x after token mixing."),
    },
    hints=[
        "Pre-norm residual: x = x + f(norm(x)). The norm is applied inside the branch, the residual adds "
        "the un-normalised x.",
        "First f = block.rnn_tokens with block.norm1, then f = block.mlp_channels with block.norm2.",
        "The second step reads the x that the first step returned.",
    ],
    cases=[_case(2, 3, 4, 8, 0), _case(1, 2, 5, 12, 1)],
    grads=("x", "block"),
)
