"""Chapters 3 to 5: the models' input checks, each a ValueError that names what was expected and what came.

They are free functions registered with ``torch.fx.wrap`` (at module level, here, where they are defined: that
is where ``torch.fx.wrap`` looks them up). ``torch.fx.symbolic_trace`` then records each as one call, which
still runs, on real tensors, in the traced module, instead of failing on an ``if`` over a symbolic shape; and
each compiles under ``torch.jit.script`` (hence :func:`shape_str` instead of ``tuple(x.shape)`` in the messages).

Used by :class:`~sequencer_mini.models.blocks.PatchEmbed`, :class:`~sequencer_mini.models.blocks.Downsample2D`,
:func:`~sequencer_mini.models.blocks.patchify`, :class:`~sequencer_mini.models.bilstm2d.BiLSTM2D` and
:class:`~sequencer_mini.models.sequencer2d.Sequencer2D`.
"""

from __future__ import annotations

import torch
import torch.fx
from torch import Tensor

__all__ = [
    "shape_str",
    "check_divisible",
    "check_patch_embed_input",
    "check_channels_last",
    "check_bilstm2d_input",
    "check_images",
]


def shape_str(x: Tensor) -> str:
    """``'(2, 3, 224, 224)'``: a tensor's shape as Python prints a tuple, in a form TorchScript compiles."""
    return "(" + ", ".join([str(s) for s in x.shape]) + ")"


def check_divisible(x: Tensor, patch: int, where: str) -> None:
    """``x``'s last two sides (``H``, ``W`` of ``(B, C, H, W)``) must be multiples of ``patch``."""
    height, width = x.shape[-2], x.shape[-1]
    if height % patch != 0 or width % patch != 0:
        raise ValueError(
            f"{where}: height and width must be multiples of the patch size {patch}, got {height}×{width} "
            f"(input shape {shape_str(x)}); resize or pad the input instead of letting it be cropped"
        )


def check_patch_embed_input(x: Tensor, in_chans: int, patch: int) -> None:
    """PatchEmbed's input: images ``(B, in_chans, H, W)`` with sides that are multiples of ``patch``."""
    if x.dim() != 4 or x.shape[1] != in_chans:
        raise ValueError(f"PatchEmbed expected images (B, {in_chans}, H, W), got shape {shape_str(x)}")
    check_divisible(x, patch, "PatchEmbed")


def check_channels_last(x: Tensor, patch: int) -> None:
    """Downsample2D's input: a channels-last map ``(B, H, W, C)`` with ``H``, ``W`` multiples of ``patch``."""
    height, width = x.shape[1], x.shape[2]
    if height % patch != 0 or width % patch != 0:
        raise ValueError(
            f"Downsample2D: height and width must be multiples of the patch size {patch}, got {height}×{width} "
            f"(input shape {shape_str(x)}); resize or pad the input instead of letting it be cropped"
        )


def check_bilstm2d_input(x: Tensor, input_size: int) -> None:
    """BiLSTM2D's input: a channels-last map ``(B, H, W, input_size)``."""
    if x.dim() != 4 or x.shape[-1] != input_size:
        raise ValueError(f"BiLSTM2D expected a channels-last input (B, H, W, {input_size}), got {shape_str(x)}")


def check_images(x: Tensor, in_chans: int, patch_sizes: list[int], reduction: int) -> None:
    """Raise a ValueError naming what was expected unless ``x`` is a non-empty float ``(B, in_chans, H, W)`` batch
    whose sides are multiples of ``reduction`` (Sequencer2D's input)."""
    if x.dim() != 4:
        raise ValueError(f"Sequencer2D expected images (B, {in_chans}, H, W), "
                         f"got a {x.dim()}-D tensor of shape {shape_str(x)}")
    if x.shape[1] != in_chans:
        raise ValueError(f"Sequencer2D expected {in_chans} input channels, "
                         f"got {x.shape[1]} (input shape {shape_str(x)})")
    if x.shape[0] == 0:
        raise ValueError(f"Sequencer2D expected a non-empty batch of images (B ≥ 1, {in_chans}, H, W), "
                         f"got shape {shape_str(x)}")
    if not x.is_floating_point():
        raise ValueError(
            "Sequencer2D expected floating-point images (float32, float16 or bfloat16) "
            f"of shape (B, {in_chans}, H, W), got dtype {x.dtype}: "
            "convert integer pixels with x.float() / 255 and normalise them"
        )
    height, width = x.shape[-2], x.shape[-1]
    if height % reduction != 0 or width % reduction != 0:
        raise ValueError(
            f"Sequencer2D with patch_sizes {patch_sizes} needs height and width that are multiples of "
            f"{reduction}, got {height}×{width}; nothing is cropped silently: resize to e.g. "
            f"{max(reduction, int(round(height / reduction)) * reduction)}×"
            f"{max(reduction, int(round(width / reduction)) * reduction)}"
        )


# Leaves for torch.fx: traced as calls (that still run and raise) rather than traced through. The checks that
# modules call in forward are wrapped; check_divisible and shape_str run only inside them (and in patchify,
# which is not traced: einops is not FX-traceable).
for _name in ("check_patch_embed_input", "check_channels_last", "check_bilstm2d_input", "check_images"):
    torch.fx.wrap(_name)
del _name
