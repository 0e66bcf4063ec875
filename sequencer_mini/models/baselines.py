"""Chapter 6: two baselines with about the parameter count of ``sequencer2d_mini28`` (0.93 M).

* ``SmallCNN``: three stages of two 3x3 conv-BN-ReLU layers, max-pooling between stages, global average pooling.
* ``SmallViT``: a plain ViT (patch 4, class token, learned absolute position embeddings, pre-norm blocks).

Both take ``(in_chans, num_classes, img_size)`` like the Sequencer presets and map images
``(B, in_chans, H, W)`` to logits ``(B, num_classes)``; like timm models (and our Sequencer2D) they have
``forward_features`` / ``forward_head(pre_logits=...)``, ``num_features`` and ``reset_classifier``, and
``num_classes=0`` makes them return pooled features. The CNN accepts any size; the ViT accepts any
size divisible by its patch size and resamples its position embeddings to the new grid the way timm's
``resample_abs_pos_embed`` does (bicubic, antialiased, class token kept as is), so a model trained at
28x28 can be evaluated at 56x56 without any other change.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

__all__ = ["SmallCNN", "SmallViT", "small_cnn", "small_vit", "BASELINES", "resample_pos_embed"]


# ----------------------------------------------------------------------------- CNN

class ConvBNReLU(nn.Sequential):
    """3x3 conv (no bias: BN follows) -> BatchNorm -> ReLU. ``(B, C_in, H, W) -> (B, C_out, H, W)``."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class SmallCNN(nn.Module):
    """A VGG-style CNN: stages of two ``ConvBNReLU``; ``MaxPool2d(2)`` between stages; GAP; linear head.

    Shapes for 28x28 input and widths (56, 112, 224): ``(B,1,28,28) -> (B,56,28,28) -> (B,112,14,14)
    -> (B,224,7,7) -> (B,224) -> (B,num_classes)``.
    """

    def __init__(self, in_chans: int = 1, num_classes: int = 10, img_size: int = 28,
                 widths: tuple[int, ...] = (56, 112, 224), drop_rate: float = 0.0):
        super().__init__()
        self.img_size = img_size  # not needed by the layers; kept so every model has the same interface
        stages, c_in = [], in_chans
        for i, width in enumerate(widths):
            pool = [nn.MaxPool2d(2)] if i > 0 else []
            stages.append(nn.Sequential(*pool, ConvBNReLU(c_in, width), ConvBNReLU(width, width)))
            c_in = width
        self.stages = nn.Sequential(*stages)
        self.num_classes, self.num_features = num_classes, c_in
        self.head_drop = nn.Dropout(drop_rate)
        self.head = _linear_or_identity(c_in, num_classes)

    def reset_classifier(self, num_classes: int) -> None:
        """A new classifier for ``num_classes`` (0: none, the model returns pooled features)."""
        self.num_classes, self.head = num_classes, _linear_or_identity(self.num_features, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        """``(B, in_chans, H, W) -> (B, C, H/4, W/4)``."""
        return self.stages(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        pooled = self.head_drop(x.mean(dim=(2, 3)))     # (B, C)
        return pooled if pre_logits else self.head(pooled)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, in_chans, H, W) -> (B, num_classes)``."""
        return self.forward_head(self.forward_features(x))


def _linear_or_identity(dim: int, num_classes: int) -> nn.Module:
    if num_classes < 0:
        raise ValueError(f"num_classes must be >= 0 (0: no classifier), got {num_classes}")
    return nn.Linear(dim, num_classes) if num_classes > 0 else nn.Identity()


# ----------------------------------------------------------------------------- ViT

def resample_pos_embed(pos_embed: Tensor, new_grid: tuple[int, int], old_grid: tuple[int, int],
                       num_prefix_tokens: int = 1) -> Tensor:
    """Resize learned position embeddings ``(1, P + h*w, D)`` to a new ``(h', w')`` grid.

    The ``P`` prefix tokens (class token) are kept; the grid part is reshaped to an image ``(1, D, h, w)``,
    resized with bicubic antialiased interpolation in float32, and flattened back: what
    ``timm.layers.resample_abs_pos_embed`` does (tested against it).
    """
    if tuple(new_grid) == tuple(old_grid):
        return pos_embed
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    image = rearrange(grid.float(), "1 (h w) d -> 1 d h w", h=old_grid[0], w=old_grid[1])
    image = F.interpolate(image, size=tuple(new_grid), mode="bicubic", antialias=True)
    grid = rearrange(image, "1 d h w -> 1 (h w) d").to(pos_embed.dtype)
    return torch.cat([prefix, grid], dim=1)


class PatchEmbedding(nn.Module):
    """Non-overlapping ``p x p`` patches -> tokens: ``(B, C, H, W) -> (B, H/p * W/p, D)``."""

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride=patch_size)  # = a linear map per patch

    def forward(self, x: Tensor) -> Tensor:
        return rearrange(self.proj(x), "b d h w -> b (h w) d")


class Attention(nn.Module):
    """Multi-head self-attention: ``(B, N, D) -> (B, N, D)``."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim must be divisible by num_heads, got {dim} and {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = rearrange(self.qkv(x), "b n (qkv heads d) -> qkv b heads n d", qkv=3, heads=self.num_heads)
        out = F.scaled_dot_product_attention(q, k, v)                     # (B, heads, N, d)
        return self.proj(rearrange(out, "b heads n d -> b n (heads d)"))


class TransformerBlock(nn.Module):
    """Pre-norm block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``; ``(B, N, D) -> (B, N, D)``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, drop: float = 0.0):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(drop), nn.Linear(hidden, dim),
                                 nn.Dropout(drop))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class SmallViT(nn.Module):
    """A small ViT. For 28x28 and patch 4: ``(B,1,28,28) -> (B,49,D)`` patches, prepend the class token
    ``-> (B,50,D)``, add position embeddings, ``depth`` blocks, LayerNorm, class token ``(B,D) -> (B,num_classes)``.
    """

    def __init__(self, in_chans: int = 1, num_classes: int = 10, img_size: int = 28, patch_size: int = 4,
                 embed_dim: int = 128, depth: int = 7, num_heads: int = 4, mlp_ratio: float = 2.0,
                 drop_rate: float = 0.0):
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f"img_size must be divisible by patch_size, got {img_size} and {patch_size}")
        self.patch_size, self.grid = patch_size, (img_size // patch_size, img_size // patch_size)
        self.patch_embed = PatchEmbedding(in_chans, embed_dim, patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.randn(1, 1 + math.prod(self.grid), embed_dim) * 0.02)
        self.blocks = nn.Sequential(*[TransformerBlock(embed_dim, num_heads, mlp_ratio, drop_rate)
                                      for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.num_classes, self.num_features = num_classes, embed_dim
        self.head = _linear_or_identity(embed_dim, num_classes)
        self.apply(self._init_weights)

    def reset_classifier(self, num_classes: int) -> None:
        """A new classifier for ``num_classes`` (0: none, the model returns the class token's features)."""
        self.num_classes, self.head = num_classes, _linear_or_identity(self.num_features, num_classes)
        self.head.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):  # as timm's ViT: truncated normal weights, zero biases
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def pos_embed_for(self, grid: tuple[int, int]) -> Tensor:
        """Position embeddings ``(1, 1 + h*w, D)`` for a token grid; resampled when it is not the training grid."""
        return resample_pos_embed(self.pos_embed, grid, self.grid)

    def forward_features(self, x: Tensor) -> Tensor:
        """``(B, in_chans, H, W) -> (B, 1 + N, D)`` normed tokens, class token first."""
        H, W = x.shape[-2:]
        if H % self.patch_size or W % self.patch_size:
            raise ValueError(f"SmallViT needs H and W divisible by the patch size {self.patch_size}, got {H}x{W}")
        tokens = self.patch_embed(x)                                          # (B, N, D)
        cls = self.cls_token.expand(len(tokens), -1, -1)                      # (B, 1, D)
        tokens = torch.cat([cls, tokens], dim=1) + self.pos_embed_for((H // self.patch_size, W // self.patch_size))
        return self.norm(self.blocks(tokens))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        return x[:, 0] if pre_logits else self.head(x[:, 0])

    def forward(self, x: Tensor) -> Tensor:
        """``(B, in_chans, H, W) -> (B, num_classes)``; ``H`` and ``W`` multiples of the patch size."""
        return self.forward_head(self.forward_features(x))


# ----------------------------------------------------------------------------- registry

def small_cnn(in_chans: int = 1, num_classes: int = 10, img_size: int = 28, **kwargs) -> SmallCNN:
    """``SmallCNN`` with widths (56, 112, 224): 0.88 M parameters for 1 channel, 10 classes."""
    return SmallCNN(in_chans, num_classes, img_size, **kwargs)


def small_vit(in_chans: int = 1, num_classes: int = 10, img_size: int = 28, **kwargs) -> SmallViT:
    """``SmallViT`` with patch 4, D=128, 7 blocks, 4 heads, MLP ratio 2: 0.94 M parameters for 1 channel, 10 classes."""
    return SmallViT(in_chans, num_classes, img_size, **kwargs)


BASELINES: dict[str, Callable[..., nn.Module]] = {"small_cnn": small_cnn, "small_vit": small_vit}

