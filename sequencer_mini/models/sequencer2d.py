"""Chapter 5: the full Sequencer2D (Tatsunami & Taki, NeurIPS 2022), its presets and its initialisation.

The model is a patch embedding, four stages of :class:`~sequencer_mini.models.blocks.Sequencer2DBlock` separated by
:class:`~sequencer_mini.models.blocks.Downsample2D`, a LayerNorm, global average pooling and a linear head. There
is no position embedding and no class token, so the same model runs at any resolution.

**Input sizes, two modes.** ``strict_img_size=True``, the default of this module's constructors and of
:class:`Sequencer2D` (the mode the book uses): the sides must be multiples of the product of the patch sizes
(14 for S/M/L, 4 for the mini presets), and anything else is refused with a ValueError that names the nearest
valid size: nothing is cropped silently. ``strict_img_size=False``, the default of the timm registry entries
(``timm.create_model('sm_sequencer2d_s')``, :mod:`sequencer_mini.interop.timm_models`) and the behaviour of the
official code and of timm's ``Sequencer2d``: any side of at least that product runs, and the strided patch
convolutions floor it (``230×230`` on S gives a ``32×32``, then ``16×16`` grid, the logits of timm's model bit for
bit). Either way a wrong channel count, rank, dtype or an input smaller than one token is a ValueError.

Names follow timm's ``Sequencer2d`` (``stem.proj``, ``stages.{i}.downsample.down``,
``stages.{i}.blocks.{j}.…``, ``norm``, ``head.fc``) so ``model.load_state_dict(timm_model.state_dict())``
works with ``strict=True``; the official release checkpoints convert with
:func:`sequencer_mini.interop.weights.convert_official_state_dict`.

Two details are the official code's and differ from current timm:

* **drop path** grows *linearly* with the global block index, ``rate · k / (N - 1)`` for block ``k`` of
  ``N`` (official ``two_dim_sequencer.py``; timm's first version did the same). timm's refactor of
  2023 (``3386af8c``) passes the same rate to every block, a *uniform* schedule. Weights are unaffected, from-
  scratch training is not; ``drop_path_schedule='uniform'`` reproduces current timm.
* the timm class default ``patch_sizes=(7, 2, 2, 1)`` is **not** what the registered variants use; every
  preset here passes the paper's ``(7, 2, 1, 1)``.

The model speaks timm's model interface (``num_classes=0`` for pooled features, ``reset_classifier``,
``forward_features`` / ``forward_head(pre_logits=...)``, ``pretrained_cfg``, ``feature_info``,
``set_grad_checkpointing``, ``feature_dim``, ``forward_intermediates``, ``prune_intermediate_layers``, timm's
default ``features_only`` stages), and :mod:`sequencer_mini.interop.timm_models` registers the presets with
``timm.create_model``. It runs under ``torch.jit.script``, ``torch.fx.symbolic_trace`` (then TorchScript) and
``torch.export`` with its input checks in place, also in models cut out by FX feature extractors and in timm's
``features_only`` wrappers: the stem checks the whole input (see :mod:`sequencer_mini.models.checks`). No
``from __future__ import annotations`` in this file: FX copies ``forward``'s annotations into the code it
generates, and TorchScript cannot compile them as strings.
"""

import math
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from functools import partial
from types import MappingProxyType
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from sequencer_mini.core.datasets import INPUT_SIDE, MEAN_STD  # the statistics our loaders normalise with
from sequencer_mini.models import checks
from sequencer_mini.models.blocks import Downsample2D, LayerNorm, PatchEmbed, Sequencer2DBlock, VanillaSequencerBlock
from sequencer_mini.models.lstm import LSTM as ScratchLSTM

__all__ = [
    "Sequencer2DConfig",
    "Sequencer2DStage",
    "Sequencer2DStem",
    "Sequencer2D",
    "drop_path_rates",
    "init_weights",
    "lecun_normal_",
    "sequencer2d_s",
    "sequencer2d_m",
    "sequencer2d_l",
    "sequencer2d_mini28",
    "sequencer2d_mini32",
    "sequencer2d_fast28",
    "MODELS",
    "create_model",
    "pretrained_cfg_for",
    "preset_config",
    "Preset",
    "PRESETS",
]


@dataclass
class Sequencer2DConfig:
    """Every knob of Sequencer2D; the defaults are Sequencer2D-S (paper Table 1, official code)."""

    layers: tuple[int, ...] = (4, 3, 8, 3)
    patch_sizes: tuple[int, ...] = (7, 2, 1, 1)
    embed_dims: tuple[int, ...] = (192, 384, 384, 384)
    hidden_sizes: tuple[int, ...] = (48, 96, 96, 96)
    mlp_ratios: tuple[float, ...] = (3.0, 3.0, 3.0, 3.0)
    union: str = "cat"
    with_fc: bool = True
    bidirectional: bool = True
    drop_path_rate: float = 0.0
    drop_path_schedule: str = "linear"
    drop_rate: float = 0.0
    in_chans: int = 3
    num_classes: int = 1000
    backend: str = "torch"
    rnn: str = "lstm"
    block: str = "2d"

    def __post_init__(self) -> None:
        for name in ("layers", "patch_sizes", "embed_dims", "hidden_sizes", "mlp_ratios"):
            setattr(self, name, tuple(getattr(self, name)))
        lengths = {n: len(getattr(self, n))
                   for n in ("layers", "patch_sizes", "embed_dims", "hidden_sizes", "mlp_ratios")}
        if len(set(lengths.values())) != 1:
            raise ValueError("layers, patch_sizes, embed_dims, hidden_sizes and mlp_ratios need one entry per stage, "
                             f"got lengths {lengths}")
        if self.drop_path_schedule not in ("linear", "uniform"):
            raise ValueError("drop_path_schedule must be 'linear' (official) or 'uniform' (current timm), "
                             f"got {self.drop_path_schedule!r}")
        if self.block not in ("2d", "vanilla"):
            raise ValueError(f"block must be '2d' (BiLSTM2D) or 'vanilla' (one BiLSTM over H·W), got {self.block!r}")
        if self.in_chans <= 0 or self.num_classes < 0:
            raise ValueError(
                f"in_chans must be positive and num_classes >= 0 (0: no classifier, the model returns pooled "
                f"features), got in_chans={self.in_chans} and num_classes={self.num_classes}"
            )
        for name in ("layers", "patch_sizes", "embed_dims", "hidden_sizes"):
            bad = [v for v in getattr(self, name) if not (isinstance(v, int) and v >= 1)]
            if bad:
                raise ValueError(f"{name} must be positive integers (one per stage), got {list(getattr(self, name))}")
        if not all(r > 0 for r in self.mlp_ratios):
            raise ValueError(f"mlp_ratios must be positive, got {list(self.mlp_ratios)}")
        if not (isinstance(self.drop_path_rate, (int, float)) and 0.0 <= self.drop_path_rate < 1.0):
            raise ValueError("drop_path_rate must be in [0, 1) (a probability of dropping a block), "
                             f"got {self.drop_path_rate!r}")
        if not (isinstance(self.drop_rate, (int, float)) and 0.0 <= self.drop_rate < 1.0):
            raise ValueError(f"drop_rate must be in [0, 1) (the dropout before the classifier), got {self.drop_rate!r}")

    @property
    def reduction(self) -> int:
        """Input pixels per token side at the last stage: the product of the patch sizes."""
        return math.prod(self.patch_sizes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def drop_path_rates(layers: tuple[int, ...], rate: float, schedule: str = "linear") -> list[list[float]]:
    """Per-stage lists of drop-path rates.

    ``linear`` (official): block ``k`` of ``N`` in the whole network gets ``rate · k / (N - 1)``, so the first
    block is never dropped and the last is dropped with probability ``rate``. ``uniform`` (current timm):
    every block gets ``rate``.
    """
    total = sum(layers)
    if schedule == "linear":
        # On the CPU whatever the default device (a model built under ``torch.device('meta')`` needs numbers here).
        flat = torch.linspace(0.0, rate, total, device="cpu").tolist() if total > 1 else [0.0]
    elif schedule == "uniform":
        flat = [rate] * total
    else:
        raise ValueError(f"schedule must be 'linear' or 'uniform', got {schedule!r}")
    out, start = [], 0
    for depth in layers:
        out.append(flat[start : start + depth])
        start += depth
    return out


class Sequencer2DStage(nn.Module):
    """An optional :class:`Downsample2D` followed by ``depth`` blocks (timm's ``Sequencer2dStage``)."""

    def __init__(
        self, dim_in: int, dim: int, patch_size: int, depth: int, make_block: Callable[[int], nn.Module],
        downsample: bool, strict_img_size: bool = True
    ) -> None:
        super().__init__()
        if not downsample and dim_in != dim:
            raise ValueError(f"a stage without downsampling keeps the width, got {dim_in} → {dim}")
        self.downsample: nn.Module = (Downsample2D(dim_in, dim, patch_size, strict_img_size) if downsample
                                      else nn.Identity())
        # Blocks are built after the downsampling layer, as in timm, so seeded builds draw the same numbers.
        self.blocks = nn.Sequential(*[make_block(j) for j in range(depth)])
        self.grad_checkpointing = False

    def forward(self, x: Tensor) -> Tensor:
        x = self.downsample(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return self._checkpointed_blocks(x)
        return self.blocks(x)

    @torch.jit.unused
    def _checkpointed_blocks(self, x: Tensor) -> Tensor:
        # Keep only each block's input; recompute its inside during the backward pass. The LSTMs' gate
        # activations for every step dominate the memory at high resolution, and they are what this frees.
        for block in self.blocks:
            x = checkpoint(block, x, use_reentrant=False)
        return x


GLOBAL_POOLS = ("avg", "")


class ClassifierHead(nn.Module):
    """Global average pool over the token grid, dropout, linear: ``(B, H, W, C) → (B, num_classes)``.

    ``num_classes=0`` replaces the linear layer by the identity (the head returns ``(B, C)`` pooled features);
    ``pool_type=''`` skips the pooling (timm's convention), so the head returns the ``(B, H, W, C)`` map.
    """

    def __init__(self, dim: int, num_classes: int, drop_rate: float = 0.0, pool_type: str = "avg") -> None:
        super().__init__()
        self.num_features = dim
        self.pool_type = _check_pool(pool_type)
        self.drop = nn.Dropout(drop_rate)
        self.fc: nn.Module = nn.Linear(dim, num_classes) if num_classes > 0 else nn.Identity()

    def reset(self, num_classes: int, pool_type: str | None = None) -> None:
        if pool_type is not None:
            self.pool_type = _check_pool(pool_type)
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        if self.pool_type == "avg":
            x = x.mean(dim=(1, 2))
        x = self.drop(x)
        return x if pre_logits else self.fc(x)


def _check_pool(pool_type: str) -> str:
    if pool_type not in GLOBAL_POOLS:
        raise ValueError(f"global_pool must be 'avg' (mean over the token grid) or '' (no pooling), got {pool_type!r}")
    return pool_type


class Sequencer2DStem(PatchEmbed):
    """Sequencer2D's stem, ``stem.proj``: :class:`~sequencer_mini.models.blocks.PatchEmbed` that checks the whole
    model's input (:func:`~sequencer_mini.models.checks.check_images`: rank, channels, dtype, a non-empty batch, and
    the sides against the product of all patch sizes), so that every way into the model checks it: ``forward``,
    ``forward_intermediates``, timm's ``features_only`` wrappers (which run the stem and the stages themselves)
    and graphs cut out by FX feature extractors (the check's result feeds the convolution, so it is never dropped
    as unused)."""

    def __init__(self, patch_sizes: list[int], in_chans: int, embed_dim: int, strict_img_size: bool = True) -> None:
        super().__init__(patch_sizes[0], in_chans, embed_dim, strict_img_size)
        self.patch_sizes: list[int] = list(patch_sizes)
        self.reduction = math.prod(patch_sizes)

    def forward(self, x: Tensor) -> Tensor:
        x = checks.check_images(x, self.in_chans, self.patch_sizes, self.reduction, self.strict_img_size)
        return self.proj(x).permute(0, 2, 3, 1)  # "b c h w -> b h w c"


def take_indices(num_features: int, indices: int | list[int] | tuple[int, ...] | None) -> tuple[list[int], int]:
    """timm's ``feature_take_indices``: ``None`` all stages, an int ``n`` the last ``n``, a sequence those indices
    (negative ones from the end). Returns the absolute indices and the largest."""
    if indices is None:
        indices = num_features
    if isinstance(indices, int):
        if not 0 < indices <= num_features:
            raise ValueError(f"last-n ({indices}) is out of range (1 to {num_features})")
        taken = [num_features - indices + i for i in range(indices)]
    else:
        taken = []
        for i in indices:
            idx = num_features + i if i < 0 else i
            if not 0 <= idx < num_features:
                raise ValueError(f"feature index {idx} is out of range (0 to {num_features - 1})")
            taken.append(idx)
    if not taken:
        raise ValueError("indices selects no stage")
    return taken, max(taken)


class Sequencer2D(nn.Module):
    """Sequencer2D. Keyword arguments are the fields of :class:`Sequencer2DConfig` (the paper's knobs).

    Shapes: images ``(B, in_chans, H, W)`` → logits ``(B, num_classes)``. :meth:`forward_features` returns the
    normed ``(B, H', W', C)`` map (channels last, ``feature_dim = -1``), with ``H' = H / prod(patch_sizes)``.

    ``strict_img_size=True`` (default): ``H`` and ``W`` must be multiples of ``prod(patch_sizes)``, anything else
    is a ValueError naming the nearest valid size. ``strict_img_size=False`` (the timm registry entries' default,
    and what the official code and timm do): any ``H, W ≥ prod(patch_sizes)``, floored by the strided
    convolutions, ``H' = ⌊H / prod(patch_sizes)⌋``. ``device`` and ``dtype`` (timm's factory arguments) build the
    parameters there; nothing else depends on them.
    """

    def __init__(
        self, config: Sequencer2DConfig | None = None, global_pool: str = "avg", strict_img_size: bool = True,
        device: torch.device | str | None = None, dtype: torch.dtype | None = None, **kwargs: Any
    ) -> None:
        super().__init__()
        if config is not None and kwargs:
            raise ValueError("pass either a Sequencer2DConfig or keyword arguments, not both")
        cfg = config if config is not None else Sequencer2DConfig(**kwargs)
        self.config = cfg
        self.num_classes = cfg.num_classes
        self.in_chans = cfg.in_chans
        self.global_pool = _check_pool(global_pool)
        self.strict_img_size = bool(strict_img_size)
        self.num_features = cfg.embed_dims[-1]
        self.head_hidden_size = self.num_features  # timm: width of the pre-logits features
        # Plain attributes for the input check (TorchScript reads ints and lists, not a dataclass).
        self.patch_sizes: list[int] = list(cfg.patch_sizes)
        self.reduction = cfg.reduction
        self.output_fmt = "NHWC"
        self.feature_dim = -1  # timm: the channel axis of forward_features' (B, H', W', C) output
        reductions = [math.prod(cfg.patch_sizes[: i + 1]) for i in range(len(cfg.layers))]
        #: timm's per-stage feature description: channels, input pixels per token side, module name.
        self.feature_info: list[dict[str, Any]] = [
            dict(num_chs=dim, reduction=red, module=f"stages.{i}")
            for i, (dim, red) in enumerate(zip(cfg.embed_dims, reductions, strict=True))
        ]
        #: timm's data config (input size, mean/std, interpolation, crop); presets set their own.
        self.pretrained_cfg: dict[str, Any] = pretrained_cfg_for(None, cfg)
        self.default_cfg = self.pretrained_cfg  # timm's older name for it
        with torch.device(device) if device is not None else nullcontext():
            self._build_layers(cfg, global_pool)
        if dtype is not None:
            self.to(dtype)

    def _build_layers(self, cfg: Sequencer2DConfig, global_pool: str) -> None:
        # The order of construction is timm's, so that a seeded build draws the same numbers.
        self.stem = Sequencer2DStem(self.patch_sizes, cfg.in_chans, cfg.embed_dims[0], self.strict_img_size)
        dprs = drop_path_rates(cfg.layers, cfg.drop_path_rate, cfg.drop_path_schedule)
        stages = []
        dim_in = cfg.embed_dims[0]
        for i, depth in enumerate(cfg.layers):
            dim, hidden = cfg.embed_dims[i], cfg.hidden_sizes[i]
            make_block = partial(self._make_block, dim, hidden, cfg.mlp_ratios[i], dprs[i])
            stages.append(Sequencer2DStage(dim_in, dim, cfg.patch_sizes[i], depth, make_block, downsample=i > 0,
                                           strict_img_size=self.strict_img_size))
            dim_in = dim
        self.stages = nn.Sequential(*stages)
        self.norm: nn.Module = LayerNorm(self.num_features)
        self.head = ClassifierHead(self.num_features, cfg.num_classes, cfg.drop_rate, global_pool)
        init_weights(self)

    def _make_block(self, dim: int, hidden: int, mlp_ratio: float, drop_paths: list[float], j: int) -> nn.Module:
        cfg, drop_path = self.config, drop_paths[j]
        if cfg.block == "vanilla":
            return VanillaSequencerBlock(
                dim, hidden, mlp_ratio, cfg.bidirectional, drop=0.0, drop_path=drop_path, backend=cfg.backend,
                rnn=cfg.rnn
            )
        return Sequencer2DBlock(
            dim,
            hidden,
            mlp_ratio,
            union=cfg.union,
            with_fc=cfg.with_fc,
            bidirectional=cfg.bidirectional,
            drop_path=drop_path,
            backend=cfg.backend,
            rnn=cfg.rnn,
        )

    def check_input(self, x: Tensor) -> None:
        """Raise a ValueError naming what was expected unless ``x`` is a non-empty floating-point
        ``(B, in_chans, H, W)`` batch whose sides fit the patch grid (multiples of ``prod(patch_sizes)`` when
        ``strict_img_size``, else at least that). The stem runs this same check on every forward pass."""
        checks.check_images(x, self.in_chans, self.patch_sizes, self.reduction, self.strict_img_size)  # an FX leaf

    # ---- timm's model interface

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new (freshly initialised) classifier for ``num_classes``; 0 removes it (the model returns features).
        The new layer takes the model's device, dtype and train/eval mode."""
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}")
        self.head.num_features = self.num_features  # after prune_intermediate_layers, the last kept stage's width
        self.head.reset(num_classes, global_pool)
        self.num_classes = self.config.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = global_pool
        weight = self.stem.proj.weight
        self.head.to(weight.device, weight.dtype)
        self.head.train(self.head.training)  # the new layer starts in training mode; follow the head's

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block in the backward pass instead of storing its activations
        (``bench/grad_checkpointing.py``)."""
        for stage in self.stages:
            cast(Sequencer2DStage, stage).grad_checkpointing = enable

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """Parameter groups for timm's layer-wise lr decay (the same regexes as timm's Sequencer2d)."""
        return dict(
            stem=r"^stem",
            blocks=[(r"^stages\.(\d+)", None), (r"^norm", (99999,))] if coarse else [
                (r"^stages\.(\d+)\.blocks\.(\d+)", None), (r"^stages\.(\d+)\.downsample", (0,)), (r"^norm", (99999,))],
        )

    @torch.jit.ignore
    def forward_intermediates(
        self,
        x: Tensor,
        indices: int | list[int] | tuple[int, ...] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[Tensor] | tuple[Tensor, list[Tensor]]:
        """The stage outputs on the way to the features (timm's ``forward_intermediates``, as in its Sequencer2d).

        Args:
            x: images ``(B, in_chans, H, W)``.
            indices: which stages' outputs: ``None`` all, an int ``n`` the last ``n``, a sequence of indices
                (negative from the end).
            norm: apply the final LayerNorm to the last stage's output when it is taken.
            stop_early: run no stage past the last one taken (then the features returned are that stage's).
            output_fmt: ``'NCHW'`` (timm's default) or ``'NHWC'`` (the model's own layout).
            intermediates_only: return only the list of stage outputs.

        Returns:
            ``(features, intermediates)``, ``features`` being :meth:`forward_features`' output when every stage
            ran; or only ``intermediates``.
        """
        if output_fmt not in ("NCHW", "NHWC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NHWC', got {output_fmt!r}")
        taken, max_index = take_indices(len(self.stages), indices)
        last = len(self.stages) - 1
        x = self.stem(x)
        stages = self.stages[: max_index + 1] if stop_early else self.stages
        intermediates: list[Tensor] = []
        i = 0
        for i, stage in enumerate(stages):
            x = stage(x)
            if i in taken:
                inter = self.norm(x) if norm and i == last else x
                intermediates.append(inter.permute(0, 3, 1, 2).contiguous() if output_fmt == "NCHW" else inter)
        if intermediates_only:
            return intermediates
        if i == last:
            x = self.norm(x)
        return x, intermediates

    @torch.jit.ignore
    def prune_intermediate_layers(
        self, indices: int | list[int] | tuple[int, ...] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drop what the stage outputs ``indices`` do not need (timm's ``prune_intermediate_layers``): the stages
        after the last one taken, then the final norm (``prune_norm``, or when stages were dropped) and the
        classifier (``prune_head``, or when stages were dropped: it was sized for the last stage). Returns the
        absolute indices kept."""
        taken, max_index = take_indices(len(self.stages), indices)
        prune_end = max_index < len(self.stages) - 1
        self.stages = self.stages[: max_index + 1]
        if prune_norm or prune_end:
            self.norm = nn.Identity()
        if prune_end:
            self.num_features = self.head_hidden_size = int(self.feature_info[max_index]["num_chs"])
        if prune_head or prune_end:
            self.reset_classifier(0, "")
        return taken

    def forward_features(self, x: Tensor) -> Tensor:
        """``(B, C_in, H, W) → (B, H', W', C)`` after the final LayerNorm (the stem checks ``x``)."""
        return self.norm(self.stages(self.stem(x)))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """``(B, H', W', C)`` → logits ``(B, num_classes)``, or the pooled ``(B, C)`` with ``pre_logits=True``."""
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


def lecun_normal_(tensor: Tensor) -> Tensor:
    """LeCun normal truncated at ±2 standard deviations, as timm's ``lecun_normal_``: std = 1/√fan_in.

    Sampled by inverting the normal CDF on a uniform draw (the method of timm and older PyTorch), so that a
    seeded build matches timm's numbers exactly.
    """
    fan_in = tensor[0].numel()
    lo, hi = (1.0 + math.erf(-2.0 / math.sqrt(2.0))) / 2.0, (1.0 + math.erf(2.0 / math.sqrt(2.0))) / 2.0
    with torch.no_grad():
        tensor.uniform_(2 * lo - 1, 2 * hi - 1).erfinv_().mul_(math.sqrt(2.0)).clamp_(-2.0, 2.0)
        # .8796 is the std of a unit normal truncated to (-2, 2): divide it out so the final std is 1/√fan_in.
        tensor.mul_(math.sqrt(1.0 / fan_in) / 0.87962566103423978)
    return tensor


def _init_module(module: nn.Module, name: str, head_bias: float = 0.0) -> None:
    """The official ``_init_weights`` rule for one module named ``name``."""
    if isinstance(module, nn.Linear):
        if name.startswith("head"):
            nn.init.zeros_(module.weight)  # the classifier starts at zero: every class equally likely
            nn.init.constant_(module.bias, head_bias)
        else:
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                if "mlp" in name:
                    nn.init.normal_(module.bias, std=1e-6)
                else:
                    nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Conv2d):
        lecun_normal_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.RNN, nn.GRU, nn.LSTM, ScratchLSTM)):
        stdv = 1.0 / math.sqrt(module.hidden_size)
        for weight in module.parameters():
            nn.init.uniform_(weight, -stdv, stdv)


def init_weights(model: nn.Module, head_bias: float = 0.0) -> None:
    """Apply the official init depth-first (children before parents), the order of timm's ``named_apply``.

    xavier-uniform linears (mlp biases ~ N(0, 1e-6), others 0), LeCun-normal convolutions, a zero head,
    LayerNorm (1, 0) and U(-1/√h, 1/√h) for the LSTMs. The order matters only for the random stream: with
    the same seed, ``sequencer2d_s()`` and ``timm.create_model('sequencer2d_s')`` start from the same weights.
    """
    def visit(module: nn.Module, name: str) -> None:
        for child_name, child in module.named_children():
            full = f"{name}.{child_name}" if name else child_name
            visit(child, full)
            _init_module(child, full, head_bias)

    visit(model, "")


# ----------------------------------------------------------------------------------------------- presets


@dataclass(frozen=True)
class Preset:
    """One row of :data:`PRESETS`: a named Sequencer2D, what it was made for, and its names elsewhere.

    Attributes:
        name: the preset's name, also the name of its constructor (``sequencer2d_s`` …) and of its
            :data:`MODELS` entry.
        config: the keyword arguments of :class:`Sequencer2DConfig` it sets (read-only).
        dataset: the data set it was made for, a key of :data:`~sequencer_mini.core.datasets.INPUT_SIDE`: its
            input side and mean/std make the preset's ``pretrained_cfg``; ``'imagenet'`` presets point at the
            authors' weights on the Hugging Face hub.
        timm_name: its name in timm's registry (:data:`sequencer_mini.interop.timm_models.TIMM_NAMES`).
        default_for: the training data sets whose default model it is
            (:data:`sequencer_mini.train.recipes.DEFAULT_MODEL`).
    """

    name: str
    config: Mapping[str, Any] = field(hash=False)  # a mapping is not hashable; the name is
    dataset: str
    timm_name: str
    default_for: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.dataset not in INPUT_SIDE:
            raise ValueError(f"preset {self.name!r}: dataset must be one of {sorted(INPUT_SIDE)}, got {self.dataset!r}")
        object.__setattr__(self, "config", MappingProxyType(dict(self.config)))


_IMAGENET = dict(
    patch_sizes=(7, 2, 1, 1),
    embed_dims=(192, 384, 384, 384),
    hidden_sizes=(48, 96, 96, 96),
    mlp_ratios=(3.0, 3.0, 3.0, 3.0),
)
_MINI = dict(
    layers=(2, 4),
    patch_sizes=(2, 2),
    embed_dims=(64, 128),
    hidden_sizes=(16, 32),
    mlp_ratios=(3.0, 3.0),
    num_classes=10,
)

#: The one table of presets, by name; :data:`MODELS`, timm's names (``interop.timm_models.TIMM_NAMES``) and the
#: training defaults (``train.recipes.DEFAULT_MODEL``) are read from it. timm has its own ``sequencer2d_s/m/l``,
#: so ours register there with the prefix ``sm_`` (sequencer_mini) and neither replaces the other.
PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("sequencer2d_s", {**_IMAGENET, "layers": (4, 3, 8, 3)}, "imagenet", "sm_sequencer2d_s"),
    Preset("sequencer2d_m", {**_IMAGENET, "layers": (4, 3, 14, 3)}, "imagenet", "sm_sequencer2d_m"),
    Preset("sequencer2d_l", {**_IMAGENET, "layers": (8, 8, 16, 4)}, "imagenet", "sm_sequencer2d_l"),
    Preset("sequencer2d_mini28", {**_MINI, "in_chans": 1}, "fashion_mnist", "sequencer2d_mini28",
           default_for=("fashion_mnist",)),
    Preset("sequencer2d_mini32", {**_MINI, "in_chans": 3}, "cifar10", "sequencer2d_mini32",
           default_for=("cifar10", "cifar100", "tiny_imagenet", "imagenette")),
    Preset("sequencer2d_fast28", dict(layers=(4,), patch_sizes=(4,), embed_dims=(128,), hidden_sizes=(32,),
                                      mlp_ratios=(3.0,), num_classes=10, in_chans=1), "fashion_mnist",
           "sequencer2d_fast28"),
)}


def _build(name: str, kwargs: dict[str, Any]) -> Sequencer2D:
    model = Sequencer2D(**{**PRESETS[name].config, **kwargs})
    model.pretrained_cfg = model.default_cfg = pretrained_cfg_for(name, model.config)
    return model


def pretrained_cfg_for(name: str | None, cfg: Sequencer2DConfig) -> dict[str, Any]:
    """timm's ``pretrained_cfg`` for a preset ``name`` (or a custom config when ``None``): input size (with
    ``cfg.in_chans`` channels, mean/std repeated to match when a preset is rebuilt for another channel count),
    ``pool_size`` (the token grid of ``forward_features`` at that size), interpolation, crop, classifier and
    first-layer names, and for S/M/L the hub id of the authors' weights (timm's tags; the state-dict keys are the
    same, so ``timm.create_model('sm_sequencer2d_s', pretrained=True)`` loads them).
    ``timm.data.resolve_data_config`` reads it. ``fixed_input_size`` is False: the model runs at any size on
    its patch grid (any size of at least one token with ``strict_img_size=False``)."""
    dataset = PRESETS[name].dataset if name in PRESETS else "imagenet"
    side = INPUT_SIDE[dataset]
    if side % cfg.reduction:  # a custom config: the nearest multiple of its patch grid
        side = cfg.reduction * max(1, round(side / cfg.reduction))
    mean, std = MEAN_STD[dataset]
    if len(mean) != cfg.in_chans:  # a preset rebuilt for another channel count
        mean, std = ((mean * cfg.in_chans, std * cfg.in_chans) if len(mean) == 1
                     else ((0.5,) * cfg.in_chans, (0.5,) * cfg.in_chans))
    imagenet = dataset == "imagenet"
    out: dict[str, Any] = dict(
        architecture=name, num_classes=cfg.num_classes, input_size=(cfg.in_chans, side, side),
        pool_size=(side // cfg.reduction, side // cfg.reduction),
        crop_pct=0.875 if imagenet else 1.0, crop_mode="center", interpolation="bicubic" if imagenet else "bilinear",
        fixed_input_size=False, mean=tuple(mean), std=tuple(std), first_conv="stem.proj", classifier="head.fc",
        license="apache-2.0",
    )
    if imagenet and name is not None:
        out["hf_hub_id"] = f"timm/{name}.in1k"
        out["tag"] = "in1k"
    return out


def preset_config(name: str, **kwargs: Any) -> Sequencer2DConfig:
    """The :class:`Sequencer2DConfig` of a preset (with overrides), without building the model."""
    if name not in PRESETS:
        raise ValueError(f"unknown model {name!r}; expected one of {sorted(PRESETS)}")
    return Sequencer2DConfig(**{**PRESETS[name].config, **kwargs})


#: Every preset's constructor by name, for :func:`create_model` and the training CLI (filled by ``_constructor``
#: below, in the order of :data:`PRESETS`).
MODELS: dict[str, Callable[..., Sequencer2D]] = {}


def _constructor(fn: Callable[..., Sequencer2D]) -> Callable[..., Sequencer2D]:
    """Enter a named constructor in :data:`MODELS`; its name must be a row of :data:`PRESETS`."""
    if fn.__name__ not in PRESETS:
        raise ValueError(f"{fn.__name__} is not a preset; expected one of {sorted(PRESETS)}")
    MODELS[fn.__name__] = fn
    return fn


@_constructor
def sequencer2d_s(**kwargs: Any) -> Sequencer2D:
    """Sequencer2D-S: layers (4, 3, 8, 3), 27,651,688 parameters, 8.3 GMACs at 224×224 (paper: 28M, 8.4G)."""
    return _build("sequencer2d_s", kwargs)


@_constructor
def sequencer2d_m(**kwargs: Any) -> Sequencer2D:
    """Sequencer2D-M: layers (4, 3, 14, 3), 38,307,688 parameters, 11.1 GMACs at 224×224 (paper: 38M, 11.1G)."""
    return _build("sequencer2d_m", kwargs)


@_constructor
def sequencer2d_l(**kwargs: Any) -> Sequencer2D:
    """Sequencer2D-L: layers (8, 8, 16, 4), 54,298,216 parameters, 16.5 GMACs at 224×224 (paper: 54M, 16.6G)."""
    return _build("sequencer2d_l", kwargs)


@_constructor
def sequencer2d_mini28(**kwargs: Any) -> Sequencer2D:
    """A CPU-sized Sequencer2D for 28×28 grey images (Fashion-MNIST), under 1 M parameters.

    The ImageNet models' 7-pixel stem would leave a 4×4 grid on 28 pixels, far too coarse; here a 2-pixel stem
    gives a 14×14 grid of 64-wide tokens (2 blocks), then a 2×2 downsampling a 7×7 grid of 128-wide tokens
    (4 blocks). ``h = C/4`` and MLP ratio 3 as in the paper.
    """
    return _build("sequencer2d_mini28", kwargs)


@_constructor
def sequencer2d_mini32(**kwargs: Any) -> Sequencer2D:
    """The same shape as :func:`sequencer2d_mini28` for 32×32 colour images (CIFAR): grids 16×16, then 8×8."""
    return _build("sequencer2d_mini32", kwargs)


@_constructor
def sequencer2d_fast28(**kwargs: Any) -> Sequencer2D:
    """A faster CPU preset for 28×28 grey images: one stage, a 4-pixel stem, a 7×7 grid of 128-wide tokens, 4 blocks.

    798,858 parameters and 38.6 M MACs per image (``sequencer2d_mini28``: 930,378 and 59.5 M): with no 14×14
    stage, every LSTM reads 7 steps instead of 14, and a training step costs about half as much on a CPU
    (chapter 6 races it against a CNN and a ViT of the same size on a CPU). ``h = C/4`` and MLP ratio 3 as in the paper.
    """
    return _build("sequencer2d_fast28", kwargs)


if list(MODELS) != list(PRESETS):  # every row has its constructor, in the table's order
    raise ImportError(f"the preset constructors {list(MODELS)} do not match PRESETS {list(PRESETS)}")


def create_model(name: str, **kwargs: Any) -> Sequencer2D:
    """Build a preset by name, e.g. ``create_model('sequencer2d_mini28', drop_path_rate=0.1)``."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; expected one of {sorted(MODELS)}")
    return MODELS[name](**kwargs)
