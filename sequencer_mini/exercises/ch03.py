"""Chapter 3: patch embedding as a linear layer on flattened patches.

The learner writes ``my_patch_embed(images, weight, bias, patch)``: cut ``(B, C_in, H, W)`` images into
``patch × patch`` squares, flatten each, and apply the stem convolution's weight ``(C, C_in, p, p)`` and bias
``(C,)`` as a linear layer, giving the channels-last token grid ``(B, H/p, W/p, C)`` that
``PatchEmbed`` computes with a strided convolution. Values and gradients (images, weight, bias) are compared.
"""
from __future__ import annotations

from typing import Any

import torch
from einops import rearrange
from torch import Tensor

from sequencer_mini.exercises.checking import Case, Exercise, Mistake

__all__ = ["patch_embed", "patch_embed_solution"]


def patch_embed_solution(images: Tensor, weight: Tensor, bias: Tensor, patch: int) -> Tensor:
    """The reference: flatten each patch in the weight's own (c p1 p2) order, then one matrix product."""
    tokens = rearrange(images, "b c (h p1) (w p2) -> b h w (c p1 p2)", p1=patch, p2=patch)
    return tokens @ weight.reshape(weight.shape[0], -1).T + bias


def _channels_first(images: Tensor, weight: Tensor, bias: Tensor, patch: int) -> Tensor:
    return patch_embed_solution(images, weight, bias, patch).permute(0, 3, 1, 2)


def _pixel_order(images: Tensor, weight: Tensor, bias: Tensor, patch: int) -> Tensor:
    tokens = rearrange(images, "b c (h p1) (w p2) -> b h w (p1 p2 c)", p1=patch, p2=patch)
    return tokens @ weight.reshape(weight.shape[0], -1).T + bias


def _reshape_only(images: Tensor, weight: Tensor, bias: Tensor, patch: int) -> Tensor:
    b, c, h, w = images.shape
    tokens = images.reshape(b, h // patch, w // patch, c * patch * patch)
    return tokens @ weight.reshape(weight.shape[0], -1).T + bias


def _grid_transposed(images: Tensor, weight: Tensor, bias: Tensor, patch: int) -> Tensor:
    return patch_embed_solution(images, weight, bias, patch).transpose(1, 2)


def _no_bias(images: Tensor, weight: Tensor, bias: Tensor, patch: int) -> Tensor:
    tokens = rearrange(images, "b c (h p1) (w p2) -> b h w (c p1 p2)", p1=patch, p2=patch)
    return tokens @ weight.reshape(weight.shape[0], -1).T


def _case(batch: int, c_in: int, height: int, width: int, dim: int, patch: int, seed: int) -> Case:
    def make() -> dict[str, Any]:
        g = torch.Generator().manual_seed(seed)
        return {"images": torch.randn(batch, c_in, height, width, generator=g, requires_grad=True),
                "weight": torch.randn(dim, c_in, patch, patch, generator=g, requires_grad=True),
                "bias": torch.randn(dim, generator=g, requires_grad=True), "patch": patch}
    return Case(f"images of shape ({batch}, {c_in}, {height}, {width}), patch {patch}, {dim} channels", make)


patch_embed = Exercise(
    name="patch_embed",
    chapter=3,
    task="Write my_patch_embed(images, weight, bias, patch) -> (B, H/p, W/p, C) without a convolution: "
         "flatten every p×p patch and apply the stem's weight (C, C_in, p, p) and bias (C,) as a linear layer.",
    reference=patch_embed_solution,
    mistakes={
        "channels first": Mistake(
            _channels_first, "Your output is channels-first, (B, C, H/p, W/p), like a convolution's; the book's "
                             "token grids are channels-last, (B, H/p, W/p, C)."),
        "pixel order": Mistake(
            _pixel_order, "Your patches are flattened in the order (p1 p2 c) but the weight in (c p1 p2): "
                          "flatten both the same way, e.g. 'b c (h p1) (w p2) -> b h w (c p1 p2)' to match "
                          "weight.reshape(C, -1)."),
        "reshape without rearrange": Mistake(
            _reshape_only, "A bare reshape cannot cut patches: it takes consecutive pixels of a row. Use "
                           "rearrange with '(h p1) (w p2)' so that each token holds one p×p square."),
        "grid transposed": Mistake(
            _grid_transposed, "Your grid is transposed: token (h, w), the patch in patch-row h and patch-column "
                              "w, must sit at [:, h, w]."),
        "no bias": Mistake(_no_bias, "The bias is missing: the stem adds bias (C,) to every token."),
    },
    hints=[
        "einops.rearrange(images, 'b c (h p1) (w p2) -> b h w (c p1 p2)', p1=patch, p2=patch) cuts and flattens "
        "the patches.",
        "weight.reshape(C, -1) flattens each filter in the order (c p1 p2), the same order as the tokens above.",
        "tokens @ W.T + bias: (B, H/p, W/p, C_in·p·p) @ (C_in·p·p, C) gives (B, H/p, W/p, C).",
    ],
    cases=[_case(2, 3, 8, 12, 5, 4, 0), _case(1, 1, 14, 7, 3, 7, 1)],
    grads=("images", "weight", "bias"),
)
