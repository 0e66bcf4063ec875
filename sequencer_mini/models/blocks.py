"""Chapters 3 and 5: images as token grids, and the blocks that Sequencer2D stacks.

* :func:`patchify` cuts an image into non-overlapping patches (the view that :class:`PatchEmbed` computes
  with one strided convolution).
* :class:`PatchEmbed` (``stem.proj``) and :class:`Downsample2D` (``downsample.down``) change the token grid.
* :class:`SequencerBlock` is the pre-norm residual block ``x + mixer(LN(x))``, ``x + MLP(LN(x))``, for a given
  token mixer; :class:`Sequencer2DBlock` is it with a BiLSTM2D mixer, :class:`VanillaSequencerBlock` with one
  BiLSTM over all ``H·W`` tokens in raster order (:class:`FlatBiLSTM`).

All feature maps are channels-last ``(B, H, W, C)``, as in the official code and timm.

Traceable: every forward here runs under ``torch.jit.script``, ``torch.fx.symbolic_trace`` and
``torch.export``. That is why the forward passes use ``permute``/``reshape`` (each with its einops pattern in a
comment: einops functions are neither scriptable nor FX-traceable) and why the input checks are free functions
registered with ``torch.fx.wrap`` (in :mod:`sequencer_mini.models.checks`, called as ``checks.check_…`` so that
FX's patching of that module's names applies): FX records them as calls that still run, on real tensors, in the
traced module, instead of failing on ``if`` over a symbolic shape. (No ``from __future__ import annotations``
here: FX copies the annotations of a traced ``forward`` into its graph, and TorchScript cannot read them as
strings.)
"""

from functools import partial

import torch
import torch.fx
from einops import rearrange
from torch import Tensor, nn

from sequencer_mini.models import checks
from sequencer_mini.models.bilstm2d import BiLSTM2D, make_rnn

__all__ = [
    "patchify",
    "PatchEmbed",
    "Downsample2D",
    "MLP",
    "DropPath",
    "SequencerBlock",
    "Sequencer2DBlock",
    "FlatBiLSTM",
    "VanillaSequencerBlock",
    "LayerNorm",
    "drop_path",
]

#: The norm used everywhere in Sequencer: LayerNorm over channels with eps 1e-6 (official code, timm).
LayerNorm = partial(nn.LayerNorm, eps=1e-6)


def drop_path(x: Tensor, drop_prob: float, training: bool) -> Tensor:
    """Stochastic depth on a batch: zero whole samples with probability ``drop_prob``, scale the rest by ``1/(1-p)``."""
    if drop_prob == 0.0 or not training:
        return x
    keep = 1.0 - drop_prob
    shape = [x.shape[0]] + [1] * (x.dim() - 1)  # one coin per sample, broadcast over the rest
    mask = x.new_empty(shape).bernoulli_(keep)
    return x * mask / keep


torch.fx.wrap("drop_path")  # a leaf for torch.fx: its mask shape is computed from x.dim(), which FX cannot trace


def patchify(images: Tensor, patch: int) -> Tensor:
    """Cut ``(B, C, H, W)`` images into a grid of flattened patches ``(B, H/p, W/p, p·p·C)``.

    Each token is one ``p×p`` patch with its pixels in ``(p1, p2, c)`` order; a linear layer on these tokens
    is the same as :class:`PatchEmbed`'s strided convolution with the weight reshaped.
    """
    if images.dim() != 4:
        raise ValueError(f"patchify expected images (B, C, H, W), got shape {tuple(images.shape)}")
    checks.check_divisible(images, patch, "patchify")
    return rearrange(images, "b c (gh p1) (gw p2) -> b gh gw (p1 p2 c)", p1=patch, p2=patch)


class PatchEmbed(nn.Module):
    """The stem: a ``p×p`` convolution with stride ``p``, one token per patch.

    Shapes: ``(B, in_chans, H, W) → (B, H/p, W/p, embed_dim)``. With ``strict_img_size=True`` (the default)
    ``H`` and ``W`` must be multiples of ``p``: a strided convolution would silently drop the remainder, so we
    raise instead. With ``strict_img_size=False`` (timm's and the official code's behaviour) any side of at least
    ``p`` runs and the convolution floors it: ``(B, C, H, W) → (B, ⌊H/p⌋, ⌊W/p⌋, embed_dim)``.
    """

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int, strict_img_size: bool = True) -> None:
        super().__init__()
        self.patch_size, self.in_chans = patch_size, in_chans
        self.strict_img_size = strict_img_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        x = checks.check_patch_embed_input(x, self.in_chans, self.patch_size, self.strict_img_size)
        return self.proj(x).permute(0, 2, 3, 1)  # "b c h w -> b h w c"


class Downsample2D(nn.Module):
    """Merge ``p×p`` tokens into one between stages: ``(B, H, W, C_in) → (B, H/p, W/p, C_out)``.

    With ``p = 1`` (Sequencer2D's last two stages) it is a pointwise linear map that only changes ``C``.
    ``strict_img_size`` as in :class:`PatchEmbed`: refuse sides that are not multiples of ``p`` (default), or
    floor them.
    """

    def __init__(self, input_dim: int, output_dim: int, patch_size: int, strict_img_size: bool = True) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.strict_img_size = strict_img_size
        self.down = nn.Conv2d(input_dim, output_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        x = checks.check_channels_last(x, self.patch_size, self.strict_img_size)
        x = x.permute(0, 3, 1, 2)  # "b h w c -> b c h w"
        return self.down(x).permute(0, 2, 3, 1)  # "b c h w -> b h w c"


class MLP(nn.Module):
    """The channel MLP ``fc1 → GELU → dropout → fc2 → dropout``, applied to every token: ``(..., C) → (..., C)``."""

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


class DropPath(nn.Module):
    """Stochastic depth (Huang et al. 2016): in training, skip a residual branch for a random subset of samples.

    A kept branch is scaled by ``1/(1-p)`` so that its expected value is unchanged; at eval it is the identity.
    """

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= drop_prob < 1.0:
            raise ValueError(f"drop_prob must be in [0, 1), got {drop_prob}")
        self.drop_prob = drop_prob

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob:.3f}"

    def forward(self, x: Tensor) -> Tensor:
        return drop_path(x, self.drop_prob, self.training)


class SequencerBlock(nn.Module):
    """``x + DropPath(mixer(LN(x)))``, then ``x + DropPath(MLP(LN(x)))``: ``(B, H, W, C) → (B, H, W, C)``.

    The one Sequencer block: a pre-norm residual token mixer, then a pre-norm residual channel MLP. The token
    mixer is given (a :class:`~sequencer_mini.models.bilstm2d.BiLSTM2D` in :class:`Sequencer2DBlock`, a
    :class:`FlatBiLSTM` in :class:`VanillaSequencerBlock`); it must map ``(B, H, W, dim)`` to ``(B, H, W, dim)``.
    Submodule names are timm's ``Sequencer2dBlock`` (``norm1``, ``rnn_tokens``, ``drop_path``, ``norm2``,
    ``mlp_channels.fc1/fc2``), registered in its order, so timm's state dicts load with ``strict=True``.
    """

    def __init__(self, dim: int, mixer: nn.Module, mlp_ratio: float = 3.0, drop: float = 0.0,
                 drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm1 = LayerNorm(dim)
        self.rnn_tokens = mixer
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = LayerNorm(dim)
        self.mlp_channels = MLP(dim, int(mlp_ratio * dim), drop=drop)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path(self.rnn_tokens(self.norm1(x)))  # token mixing (along rows and columns in 2D)
        x = x + self.drop_path(self.mlp_channels(self.norm2(x)))  # channel mixing per token
        return x


class Sequencer2DBlock(SequencerBlock):
    """The Sequencer2D block: :class:`SequencerBlock` with a :class:`~sequencer_mini.models.bilstm2d.BiLSTM2D`
    token mixer of ``hidden_size`` per direction (the paper: ``dim/4``). Shapes: ``(B, H, W, C) → (B, H, W, C)``.

    ``union``, ``with_fc``, ``bidirectional``, ``backend`` and ``rnn`` are BiLSTM2D's.
    """

    def __init__(
        self,
        dim: int,
        hidden_size: int,
        mlp_ratio: float = 3.0,
        union: str = "cat",
        with_fc: bool = True,
        bidirectional: bool = True,
        drop: float = 0.0,
        drop_path: float = 0.0,
        backend: str = "torch",
        rnn: str = "lstm",
    ) -> None:
        # The mixer is built first, then the norms and the MLP: the order in which timm's block draws its
        # random numbers (LayerNorm draws none), so a seeded build is unchanged.
        mixer = BiLSTM2D(
            dim, hidden_size, union=union, with_fc=with_fc, backend=backend, bidirectional=bidirectional, rnn=rnn  # type: ignore[arg-type]
        )
        super().__init__(dim, mixer, mlp_ratio, drop=drop, drop_path=drop_path)


class FlatBiLSTM(nn.Module):
    """One (Bi)LSTM over all ``H·W`` tokens in raster order (the official vanilla Sequencer's ``LSTM``).

    Shapes: ``(B, H, W, C) → (B, H, W, D·h)``; the paper uses ``h = C/2`` so that the output has ``C`` channels.
    """

    def __init__(
        self, input_size: int, hidden_size: int, bidirectional: bool = True, backend: str = "torch", rnn: str = "lstm"
    ) -> None:
        super().__init__()
        self.rnn = make_rnn(input_size, hidden_size, bidirectional, backend, rnn)

    def forward(self, x: Tensor) -> Tensor:
        batch, height, width, channels = x.shape
        tokens = x.reshape(batch, height * width, channels)  # "b h w c -> b (h w) c": one sequence per image
        tokens, _ = self.rnn(tokens)
        return tokens.reshape(batch, height, width, -1)  # "b (h w) d -> b h w d"


class VanillaSequencerBlock(SequencerBlock):
    """The vanilla Sequencer block: :class:`SequencerBlock` with a :class:`FlatBiLSTM` (and no FC).

    ``hidden_size`` must be ``dim/2`` (bidirectional) so that the BiLSTM's output has ``dim`` channels.
    Shapes: ``(B, H, W, C) → (B, H, W, C)``.
    """

    def __init__(
        self,
        dim: int,
        hidden_size: int,
        mlp_ratio: float = 3.0,
        bidirectional: bool = True,
        drop: float = 0.0,
        drop_path: float = 0.0,
        backend: str = "torch",
        rnn: str = "lstm",
    ) -> None:
        out = 2 * hidden_size if bidirectional else hidden_size
        if out != dim:
            raise ValueError(
                f"VanillaSequencerBlock needs the (Bi)LSTM output width to equal dim: hidden_size={hidden_size}, "
                f"bidirectional={bidirectional} gives {out} but dim={dim}"
            )
        mixer = FlatBiLSTM(dim, hidden_size, bidirectional=bidirectional, backend=backend, rnn=rnn)
        super().__init__(dim, mixer, mlp_ratio, drop=drop, drop_path=drop_path)
