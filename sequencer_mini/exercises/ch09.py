"""Chapter 9: an effective receptive field (ERF) from gradients, as the official Sequencer code computes it.

The learner writes ``my_erf(features, images) -> (H, W)``: ``features`` maps images ``(N, C_in, H, W)`` to a
channels-last map ``(N, h, w, C)``; the ERF is the gradient of the centre token's outputs (summed over
channels and images) with respect to the images, its positive part per image, summed over images and
channels. The centre is ``(h // 2 - 1, w // 2 - 1)``, the official code's. The result equals
:func:`sequencer_mini.analysis.erf.effective_receptive_fields` with ``return_raw=True``
(``tests/test_exercises.py`` checks the reference against it).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from sequencer_mini.exercises.checking import Case, Exercise, Mistake
from sequencer_mini.models.blocks import PatchEmbed, Sequencer2DBlock

__all__ = ["erf", "erf_solution"]

Features = Callable[[Tensor], Tensor]


def _centre_grad(features: Features, images: Tensor, centre: str = "official", whole: bool = False) -> Tensor:
    x = images.detach().clone().requires_grad_(True)
    out = features(x)
    h, w = out.shape[1:3]
    i, j = (h // 2 - 1, w // 2 - 1) if centre == "official" else (h // 2, w // 2)
    score = out.sum() if whole else out[:, i, j, :].sum()
    (grad,) = torch.autograd.grad(score, x)
    return grad


def erf_solution(features: Features, images: Tensor) -> Tensor:
    """The reference: ReLU of each image's gradient, summed over images and channels."""
    return _centre_grad(features, images).clamp(min=0).sum(dim=(0, 1))


def _abs(features: Features, images: Tensor) -> Tensor:
    return _centre_grad(features, images).abs().sum(dim=(0, 1))


def _signed(features: Features, images: Tensor) -> Tensor:
    return _centre_grad(features, images).sum(dim=(0, 1))


def _whole_output(features: Features, images: Tensor) -> Tensor:
    return _centre_grad(features, images, whole=True).clamp(min=0).sum(dim=(0, 1))


def _exact_centre(features: Features, images: Tensor) -> Tensor:
    return _centre_grad(features, images, centre="exact").clamp(min=0).sum(dim=(0, 1))


def _per_channel(features: Features, images: Tensor) -> Tensor:
    return _centre_grad(features, images).clamp(min=0).sum(dim=0)


def _relu_after_sum(features: Features, images: Tensor) -> Tensor:
    return _centre_grad(features, images).sum(dim=(0, 1)).clamp(min=0)


def _case(n: int, c_in: int, side: int, patch: int, dim: int, seed: int) -> Case:
    def make() -> dict[str, Any]:
        g = torch.Generator().manual_seed(seed)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = nn.Sequential(PatchEmbed(patch, c_in, dim), Sequencer2DBlock(dim, dim // 4)).eval()
        return {"features": model, "images": torch.randn(n, c_in, side, side, generator=g)}
    grid = side // patch
    return Case(f"{n} images of shape ({c_in}, {side}, {side}) and a one-block Sequencer with a {grid}×{grid} grid",
                make)


erf = Exercise(
    name="erf",
    chapter=9,
    task="Write my_erf(features, images) -> (H, W): the gradient of the centre token's outputs (at "
         "(h // 2 - 1, w // 2 - 1) of the (N, h, w, C) map, summed over channels and images) with respect to the "
         "images, its positive part per image, summed over images and input channels.",
    reference=erf_solution,
    mistakes={
        "absolute value": Mistake(
            _abs, "You took the gradient's absolute value; the official ERF keeps its positive part "
                  "(clamp(min=0)), so a pixel that lowers the output does not count."),
        "signed": Mistake(
            _signed, "You summed the signed gradient: positive and negative contributions cancel. Clamp each "
                     "image's gradient at zero first."),
        "whole output": Mistake(
            _whole_output, "That is the gradient of the whole map's sum, every token's; the ERF is of the centre "
                           "token only: out[:, h // 2 - 1, w // 2 - 1, :].sum()."),
        "exact centre": Mistake(
            _exact_centre, "You took the centre at (h // 2, w // 2); the official code, and this book, use "
                           "(h // 2 - 1, w // 2 - 1), one token up and left on an even grid."),
        "one map per channel": Mistake(
            _per_channel, "You returned one map per input channel: sum over the channels too (dim 1), the ERF "
                          "is one (H, W) map."),
        "ReLU after the sum": Mistake(
            _relu_after_sum, "The ReLU comes after summing over the images; the official code clamps each "
                             "image's gradient first, so images cannot cancel each other."),
    },
    hints=[
        "Make the images a leaf that records gradients: x = images.clone().requires_grad_(True); out = features(x).",
        "score = out[:, h // 2 - 1, w // 2 - 1, :].sum(); (grad,) = torch.autograd.grad(score, x).",
        "grad.clamp(min=0) keeps the positive part per image; .sum(dim=(0, 1)) sums images and channels.",
    ],
    cases=[_case(3, 3, 16, 2, 8, 0), _case(2, 1, 12, 2, 4, 1)],
)
