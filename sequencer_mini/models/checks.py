"""Chapters 3 to 5: the models' input checks, each a ValueError that names what was expected and what came.

They are free functions registered with ``torch.fx.wrap`` (at module level, here, where they are defined: that
is where ``torch.fx.wrap`` looks them up). ``torch.fx.symbolic_trace`` then records each as one call, which
still runs, on real tensors, in the traced module, instead of failing on an ``if`` over a symbolic shape; and
each compiles under ``torch.jit.script`` (hence :func:`shape_str` instead of ``tuple(x.shape)`` in the messages).

The checks that modules call in ``forward`` return their input, and the module goes on with what they return
(``x = checks.check_images(x, ...)``): the traced call is then on the path to the output, so graph clean-ups
that drop unused nodes (``Graph.eliminate_dead_code``, which torchvision's ``create_feature_extractor`` and
timm's FX feature extractor run) keep it.

Input sizes, two modes (``strict``): strict, the sides must be multiples of the patch size (of the product of
the patch sizes for a whole model), and nothing is cropped silently; not strict, as the official code and timm
do, any side of at least one patch is accepted and the strided convolutions floor it (a ``230×230`` image on
Sequencer2D-S's 7-pixel stem gives a ``32×32`` grid: the last 6 rows and columns are not read).

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
    "check_at_least",
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


def check_at_least(x: Tensor, side: int, height_dim: int, where: str) -> None:
    """The sides ``x.shape[height_dim]`` and ``x.shape[height_dim + 1]`` must be at least ``side``."""
    height, width = x.shape[height_dim], x.shape[height_dim + 1]
    if height < side or width < side:
        raise ValueError(
            f"{where}: height and width must be at least {side} (one patch), got {height}×{width} "
            f"(input shape {shape_str(x)})"
        )


def check_patch_embed_input(x: Tensor, in_chans: int, patch: int, strict: bool = True) -> Tensor:
    """PatchEmbed's input: images ``(B, in_chans, H, W)`` with sides that are multiples of ``patch`` (``strict``)
    or at least ``patch`` (not ``strict``: the strided convolution floors them). Returns ``x``."""
    if x.dim() != 4 or x.shape[1] != in_chans:
        raise ValueError(f"PatchEmbed expected images (B, {in_chans}, H, W), got shape {shape_str(x)}")
    if strict:
        check_divisible(x, patch, "PatchEmbed")
    else:
        check_at_least(x, patch, 2, "PatchEmbed")
    return x


def check_channels_last(x: Tensor, patch: int, strict: bool = True) -> Tensor:
    """Downsample2D's input: a channels-last map ``(B, H, W, C)`` with ``H``, ``W`` multiples of ``patch``
    (``strict``) or at least ``patch`` (not ``strict``). Returns ``x``."""
    height, width = x.shape[1], x.shape[2]
    if strict and (height % patch != 0 or width % patch != 0):
        raise ValueError(
            f"Downsample2D: height and width must be multiples of the patch size {patch}, got {height}×{width} "
            f"(input shape {shape_str(x)}); resize or pad the input instead of letting it be cropped"
        )
    if not strict:
        check_at_least(x, patch, 1, "Downsample2D")
    return x


def check_bilstm2d_input(x: Tensor, input_size: int) -> Tensor:
    """BiLSTM2D's input: a channels-last map ``(B, H, W, input_size)``. Returns ``x``."""
    if x.dim() != 4 or x.shape[-1] != input_size:
        raise ValueError(f"BiLSTM2D expected a channels-last input (B, H, W, {input_size}), got {shape_str(x)}")
    return x


def check_images(x: Tensor, in_chans: int, patch_sizes: list[int], reduction: int, strict: bool = True) -> Tensor:
    """Raise a ValueError naming what was expected unless ``x`` is a non-empty float ``(B, in_chans, H, W)`` batch
    whose sides are multiples of ``reduction`` (``strict``) or at least ``reduction`` (not ``strict``: one token
    at the last stage; the strided convolutions floor the rest) — Sequencer2D's input. Returns ``x``."""
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
    if strict and (height % reduction != 0 or width % reduction != 0):
        raise ValueError(
            f"Sequencer2D with patch_sizes {patch_sizes} needs height and width that are multiples of "
            f"{reduction}, got {height}×{width}; nothing is cropped silently: resize to e.g. "
            f"{max(reduction, int(round(height / reduction)) * reduction)}×"
            f"{max(reduction, int(round(width / reduction)) * reduction)}"
        )
    if height < reduction or width < reduction:
        raise ValueError(
            f"Sequencer2D with patch_sizes {patch_sizes} needs height and width of at least {reduction} "
            f"(one token at the last stage), got {height}×{width} (input shape {shape_str(x)})"
        )
    return x


# Leaves for torch.fx: traced as calls (that still run and raise) rather than traced through. The checks that
# modules call in forward are wrapped; check_divisible and shape_str run only inside them (and in patchify,
# which is not traced: einops is not FX-traceable).
for _name in ("check_patch_embed_input", "check_channels_last", "check_bilstm2d_input", "check_images"):
    torch.fx.wrap(_name)
del _name
