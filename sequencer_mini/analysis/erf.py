"""Chapter 9: the effective receptive field (ERF) of any layer of any image model.

The *effective* receptive field (Luo et al., NeurIPS 2016) of an output unit is how strongly each input
pixel actually moves it: the gradient of that unit with respect to the image. The recipe here is the one
of the official Sequencer code (``generate_erf.py``, ``erf/models.py``), itself RepLKNet's (Ding et al.,
CVPR 2022):

1. hook the chosen layer; take its output at the **centre position**, summed over channels;
2. back-propagate that scalar to the input images;
3. keep the positive part of the input gradient (ReLU) and sum it over images and colour channels, giving
   an ``H × W`` map ``raw``;
4. show ``log10(raw + 1)``, min-max scaled to ``[0, 1]``.

Summary numbers, measured on the same log-scaled map:

* ``areas[t]``: RepLKNet's *high-contribution area ratio*: the smallest square centred on the centre
  pixel that holds at least a share ``t`` of the total mass, as a fraction of the image area
  (``t = 0.2, 0.5, 0.99``);
* ``cross_share``: the share of the mass on the rows and columns of pixels that the centre position covers:
  1 for a single BiLSTM2D layer, ``(H + W - 1) / (H·W)`` for a uniform map and a one-pixel centre.

The centre position. The official code takes index ``H//2 - 1`` (``centre='official'``). For an even grid
this is one of the four central positions (as good as ``H//2``); for an **odd** grid, such as the 7×7 grid
of ``sequencer2d_mini28``'s second stage, it is one position up and left of the true centre.
``centre='exact'`` takes ``H//2``, the true centre of an odd grid and the choice of Luo et al. and RepLKNet.
A tuple ``(i, j)`` picks any position.

Feature layouts are recognised from the hooked output's shape (override with ``layout=``):

* ``'bhwc'``: channels-last maps, as Sequencer2D's blocks ``(B, H, W, C)``;
* ``'bchw'``: channels-first maps, as a CNN's ``(B, C, H, W)``;
* ``'tokens'``: ``(B, N, C)`` with ``N = P + h·w``; the ``P`` leading prefix tokens (a ViT's class token)
  are skipped and the rest is read as an ``h × w`` grid (the official code's token index
  ``N//2 - √N//2`` for DeiT's ``N = 197`` is the same token as ``centre='official'`` here).

Batches: the centre outputs of a batch are summed before one backward pass. In eval mode the samples do not
interact (BatchNorm uses its running statistics), so the gradient of the sum with respect to image ``b`` is
exactly the gradient of image ``b``'s own centre output, and ReLU is applied per image, as in the official
one-image-at-a-time loop. cuDNN refuses the backward pass of an RNN in eval mode ("cudnn RNN backward can
only be called in training mode"), so on a GPU every ``nn.LSTM``/``nn.GRU``/``nn.RNN`` is switched to train
mode for the call (the official ``train_rnn``; Sequencer's LSTMs have no dropout, so nothing changes
numerically). Every module's mode is restored afterwards.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from einops import rearrange, reduce
from torch import Tensor, nn

__all__ = [
    "ERF",
    "THRESHOLDS",
    "effective_receptive_field",
    "effective_receptive_fields",
    "area_ratios",
    "cross_share",
    "mass_radius",
    "effective_area",
    "uniform_cross_share",
    "log_minmax",
    "joint_minmax",
    "block_layers",
    "detect_layout",
    "centre_index",
]

Layout = Literal["bhwc", "bchw", "tokens"]
Centre = Literal["official", "exact"] | tuple[int, int]

#: The mass shares for which :func:`area_ratios` reports an area (RepLKNet also uses 0.3).
THRESHOLDS: tuple[float, ...] = (0.2, 0.5, 0.99)


@dataclass
class ERF:
    """The effective receptive field of one layer.

    Attributes:
        map: ``(H, W)`` float tensor on the CPU: ``log10(raw + 1)`` min-max scaled to ``[0, 1]``, or the raw
            summed gradient when the call used ``return_raw=True``.
        raw: ``(H, W)``: ``Σ_images Σ_channels ReLU(∂ centre / ∂ image)``, un-normalised.
        areas: ``{t: ratio}``: the smallest centred square holding ``≥ t`` of the mass, as a fraction of ``H·W``.
        cross_share: share of the mass on the centre position's rows and columns of pixels.
        layer: the hooked module's dotted name.
        n_images: how many images were summed.
        layout: ``'bhwc'``, ``'bchw'`` or ``'tokens'``.
        grid: ``(h, w)`` of the hooked feature map.
        centre: ``(i, j)``, the feature-grid position whose output was differentiated.
        centre_pixel: the input pixel at the middle of that position's footprint (centre of the squares).
        rows, cols: ``(start, stop)`` of the pixel rows/columns the centre position covers (its footprint).
    """

    map: Tensor
    raw: Tensor
    areas: dict[float, float]
    cross_share: float
    layer: str
    n_images: int
    layout: str
    grid: tuple[int, int]
    centre: tuple[int, int]
    centre_pixel: tuple[int, int]
    rows: tuple[int, int] = field(repr=False, default=(0, 0))
    cols: tuple[int, int] = field(repr=False, default=(0, 0))

    @property
    def radius50(self) -> float:
        """:func:`mass_radius` of the map that ``areas`` and ``cross_share`` measure (``log10(raw + 1)``): the
        radius in pixels around ``centre_pixel`` holding half the mass, a continuous companion of ``A_50``."""
        return mass_radius(torch.log10(self.raw.double() + 1), self.centre_pixel, 0.5)

    @property
    def effective_area(self) -> float:
        """:func:`effective_area` of the same map: ``exp(entropy)`` over the pixel count."""
        return effective_area(torch.log10(self.raw.double() + 1))

    @property
    def uniform_cross_share(self) -> float:
        """The cross share a uniform map would have on this footprint: the baseline for ``cross_share``."""
        return uniform_cross_share((self.raw.shape[0], self.raw.shape[1]), self.rows, self.cols)

    def summary(self) -> str:
        """One line: layer, grid, areas and cross share."""
        areas = ", ".join(f"{int(round(t * 100))}%: {a:.3f}" for t, a in self.areas.items())
        return (f"{self.layer} [{self.layout} {self.grid[0]}×{self.grid[1]}, centre {self.centre}, "
                f"{self.n_images} images] areas {{{areas}}} cross share {self.cross_share:.3f}")


class _StopForward(Exception):
    """Raised by the last hook: nothing after the deepest hooked layer needs computing."""


# ----------------------------------------------------------------------------------------------- layouts


def _layout_hint(module: nn.Module | None) -> Layout | None:
    """Tie-breaker for a square map with as many channels as pixels per side: the last layer with weights.
    A convolution or BatchNorm writes channels-first; a Linear, LayerNorm or RNN works on channels-last."""
    if module is None:
        return None
    last = None
    for leaf in module.modules():
        if next(leaf.children(), None) is None and any(True for _ in leaf.parameters(recurse=False)):
            last = leaf
    if isinstance(last, (nn.Conv2d, nn.BatchNorm2d, nn.GroupNorm)):
        return "bchw"
    if isinstance(last, (nn.Linear, nn.LayerNorm, nn.RNNBase)):
        return "bhwc"
    return None


def detect_layout(shape: Sequence[int], image_hw: tuple[int, int], module: nn.Module | None = None) -> Layout:
    """Guess the layout of a hooked output from its shape and the input size ``(H, W)``.

    3-D → ``'tokens'``. 4-D: a spatial pair must divide the image in the image's aspect ratio; channels-last
    when dims 1-2 fit and dim 3 does not, channels-first when dims 2-3 fit and dim 1 does not. When both fit
    (e.g. 8 channels on an 8×8 map), the last layer with weights inside ``module`` decides (a convolution or
    BatchNorm: channels-first; a Linear, LayerNorm or RNN: channels-last); failing that, a ValueError asks
    for ``layout=``.
    """
    if len(shape) == 3:
        return "tokens"
    if len(shape) != 4:
        raise ValueError(f"cannot read a feature map of shape {tuple(shape)}: expected (B, N, C) tokens or a 4-D map")
    height, width = image_hw

    def spatial(a: int, b: int) -> bool:  # an a×b grid on an H×W image: same aspect ratio, not larger
        return 0 < a <= height and 0 < b <= width and a * width == b * height

    last, first = spatial(shape[1], shape[2]), spatial(shape[2], shape[3])
    if last and not first:
        return "bhwc"
    if first and not last:
        return "bchw"
    hint = _layout_hint(module) if last and first else None
    if hint is not None:
        return hint
    raise ValueError(
        f"cannot tell whether the feature map {tuple(shape)} (input {height}×{width}) is channels-first or "
        f"channels-last; pass layout='bchw' or layout='bhwc'"
    )


def centre_index(size: int, centre: str) -> int:
    """The centre index along an axis of ``size``: ``size//2 - 1`` ('official') or ``size//2`` ('exact')."""
    if centre == "official":
        return max(size // 2 - 1, 0)
    if centre == "exact":
        return size // 2
    raise ValueError(f"centre must be 'official', 'exact' or a tuple (i, j), got {centre!r}")


def _to_grid(out: Tensor, layout: str, num_prefix_tokens: int | None) -> Tensor:
    """Any hooked output → a channels-last grid ``(B, h, w, C)``."""
    if layout == "bhwc":
        return out
    if layout == "bchw":
        return rearrange(out, "b c h w -> b h w c")
    if layout == "tokens":
        n = out.shape[1]
        side = math.isqrt(n)
        prefix = n - side * side if num_prefix_tokens is None else num_prefix_tokens
        side = math.isqrt(n - prefix)
        if side * side != n - prefix:
            raise ValueError(
                f"{n} tokens with {prefix} prefix token(s) do not form a square grid; pass num_prefix_tokens="
            )
        return rearrange(out[:, prefix:], "b (h w) c -> b h w c", h=side)
    raise ValueError(f"layout must be 'bhwc', 'bchw' or 'tokens', got {layout!r}")


# ----------------------------------------------------------------------------------------------- measures


def log_minmax(raw: Tensor) -> Tensor:
    """``log10(raw + 1)`` scaled to ``[0, 1]`` (all zeros if the map is constant)."""
    return joint_minmax([torch.log10(raw + 1)])[0]


def _check_maps(maps: Sequence[Tensor]) -> None:
    """One sentence for what no ERF measure can use: no maps, a map with no pixels, NaN or infinity."""
    if len(maps) == 0:
        raise ValueError("expected at least one ERF map, got none")
    for m in maps:
        if m.numel() == 0:
            raise ValueError(f"an ERF map must have pixels, got an empty map of shape {tuple(m.shape)}")
        if not bool(torch.isfinite(m).all()):
            raise ValueError(f"an ERF map must be finite, got one of shape {tuple(m.shape)} holding NaN or infinity")


def joint_minmax(maps: Sequence[Tensor]) -> list[Tensor]:
    """Min-max scale several maps with one shared minimum and maximum (the official figures scale every
    model and layer jointly, so that brightness is comparable across panels)."""
    _check_maps(maps)
    lo = min(float(m.min()) for m in maps)
    hi = max(float(m.max()) for m in maps)
    scale = hi - lo
    return [(m - lo) / scale if scale > 0 else torch.zeros_like(m) for m in maps]


def area_ratios(
    mass: Tensor, centre: tuple[int, int], thresholds: Iterable[float] = THRESHOLDS
) -> dict[float, float]:
    """RepLKNet's high-contribution area ratio of a non-negative ``(H, W)`` map.

    For each ``t``: the smallest square of odd side ``2k + 1`` centred on ``centre`` (clipped to the image)
    whose mass is at least ``t`` of the total, as its pixel count over ``H·W``. NaN for an all-zero map.
    """
    _check_maps([mass])
    mass = mass.double()
    height, width = mass.shape
    total = float(mass.sum())
    thresholds = tuple(thresholds)
    if total <= 0:
        return {t: float("nan") for t in thresholds}
    cy, cx = centre
    out: dict[float, float] = {}
    for k in range(max(height, width)):
        top, bottom = max(cy - k, 0), min(cy + k + 1, height)
        left, right = max(cx - k, 0), min(cx + k + 1, width)
        share = float(mass[top:bottom, left:right].sum()) / total
        for t in thresholds:
            if t not in out and share >= t - 1e-12:
                out[t] = (bottom - top) * (right - left) / (height * width)
        if len(out) == len(thresholds):
            break
    return {t: out.get(t, 1.0) for t in thresholds}


def mass_radius(mass: Tensor, centre: tuple[float, float], share: float = 0.5) -> float:
    """The radius, in pixels, of the disc around ``centre`` that holds ``share`` of a non-negative ``(H, W)``
    map's mass: a continuous spread measure (A_t's squares grow in odd steps, so two maps can share an A_50 and
    differ in spread). Pixels are sorted by their distance to the centre and the cumulative mass is interpolated
    linearly between distances. NaN for an all-zero map."""
    _check_maps([mass])
    if not 0.0 < share <= 1.0:
        raise ValueError(f"share must be in (0, 1], got {share}")
    mass = mass.double()
    total = float(mass.sum())
    if total <= 0:
        return float("nan")
    height, width = mass.shape
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64),
                            indexing="ij")
    dist = torch.hypot(ys - centre[0], xs - centre[1]).flatten()
    # the mass within each distinct distance: a curve that rises at the distances that hold mass
    d, where = torch.unique(dist.round(decimals=9), return_inverse=True)
    cum = torch.cumsum(torch.zeros_like(d).index_add_(0, where, mass.flatten()), 0) / total
    k = min(int(torch.searchsorted(cum, torch.tensor(share - 1e-12, dtype=torch.float64))), len(d) - 1)
    if k == 0:
        return float(d[0])
    lo_c, hi_c, lo_d, hi_d = float(cum[k - 1]), float(cum[k]), float(d[k - 1]), float(d[k])
    return lo_d + (share - lo_c) / (hi_c - lo_c) * (hi_d - lo_d)  # hi_c > lo_c: k is the first to reach share


def effective_area(mass: Tensor) -> float:
    """``exp(entropy)`` of the normalised map over its pixel count: 1/(H·W) for all mass on one pixel, 1 for a
    uniform map. A second continuous spread measure, independent of any centre. NaN for an all-zero map."""
    _check_maps([mass])
    p = mass.double().flatten()
    total = float(p.sum())
    if total <= 0:
        return float("nan")
    p = p / total
    nz = p[p > 0]
    return float(torch.exp(-(nz * nz.log()).sum())) / p.numel()


def uniform_cross_share(shape: tuple[int, int], rows: tuple[int, int], cols: tuple[int, int]) -> float:
    """:func:`cross_share` of a uniform map of ``shape``: the share a map with no preference for the cross
    would still put on it (the baseline a measured cross share is compared with)."""
    return cross_share(torch.ones(shape), rows, cols)


def cross_share(mass: Tensor, rows: tuple[int, int], cols: tuple[int, int]) -> float:
    """Share of the mass of a non-negative ``(H, W)`` map on pixel rows ``rows`` or columns ``cols``
    (``(start, stop)`` ranges). NaN for an all-zero map."""
    _check_maps([mass])
    mass = mass.double()
    total = float(mass.sum())
    if total <= 0:
        return float("nan")
    off_cross = torch.ones_like(mass, dtype=torch.bool)
    off_cross[rows[0] : rows[1], :] = False
    off_cross[:, cols[0] : cols[1]] = False
    return 1.0 - float(mass[off_cross].sum()) / total  # exactly 1.0 when nothing lies off the cross


def _footprint(index: int, grid: int, size: int) -> tuple[tuple[int, int], int]:
    """Pixels ``(start, stop)`` covered by position ``index`` of a ``grid``-long axis over ``size`` pixels,
    and the middle pixel. Assumes the grid tiles the image evenly (stride ``size / grid``)."""
    stride = size / grid
    start, stop = int(math.floor(index * stride)), int(math.ceil((index + 1) * stride))
    return (start, min(stop, size)), min(int((index + 0.5) * stride), size - 1)


# ----------------------------------------------------------------------------------------------- the ERF


def _module_name(model: nn.Module, layer: str | nn.Module) -> tuple[str, nn.Module]:
    if isinstance(layer, str):
        try:
            return layer, model.get_submodule(layer)
        except AttributeError as err:
            hint = ", ".join(block_layers(model)[:8])
            raise ValueError(f"{type(model).__name__} has no module {layer!r}; block-level layers: {hint} …") from err
    for name, module in model.named_modules():
        if module is layer:
            return name or "<model>", module
    raise ValueError(f"the module {type(layer).__name__} is not part of the model")


def _rnn_modules(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.RNNBase)]


@contextlib.contextmanager
def _erf_modes(model: nn.Module, rnn_train: bool) -> Iterator[None]:
    """Eval mode (RNNs in train mode when ``rnn_train``, for cuDNN) for the block; every module's mode restored."""
    modes = {module: module.training for module in model.modules()}
    try:
        model.eval()
        if rnn_train:
            for rnn in _rnn_modules(model):
                rnn.train()
        yield
    finally:
        for module, mode in modes.items():
            module.train(mode)


class _Taps:
    """Forward hooks that keep the output of each hooked layer; the last one to fire stops the forward pass."""

    def __init__(self, named: Sequence[tuple[str, nn.Module]]) -> None:
        self.names = [name for name, _ in named]
        self.outputs: dict[int, Tensor] = {}
        self.pending: set[int] = set()
        self.handles = [module.register_forward_hook(self._hook(k)) for k, (_, module) in enumerate(named)]

    def _hook(self, k: int) -> Callable[..., None]:
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            if k in self.outputs:  # a module called twice: its first call is the one of the forward pass
                return
            self.outputs[k] = output[0] if isinstance(output, (tuple, list)) else output
            self.pending.discard(k)
            if not self.pending:
                raise _StopForward

        return hook

    def run(self, model: nn.Module, x: Tensor) -> list[Tensor]:
        """The hooked layers' outputs for input ``x``, in the order of the layers."""
        self.outputs.clear()
        self.pending.update(range(len(self.names)))
        with contextlib.suppress(_StopForward):
            model(x)
        if self.pending:
            missing = [self.names[k] for k in sorted(self.pending)]
            raise RuntimeError(f"the forward pass never reached layer(s) {missing}")
        outputs = [self.outputs[k] for k in range(len(self.names))]
        self.outputs.clear()
        return outputs

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


#: Where a layer's ERF was taken: its layout, its ``(h, w)`` grid and the centre position ``(i, j)``.
_Where = tuple[str, tuple[int, int], tuple[int, int]]


def _centre_score(out: Tensor, name: str, module: nn.Module, image_hw: tuple[int, int], layout: Layout | None,
                  centre: Centre, num_prefix_tokens: int | None) -> tuple[Tensor, _Where]:
    """The centre outputs of every image and channel of one hooked output, summed to a scalar, and where."""
    kind = layout or detect_layout(out.shape, image_hw, module)
    grid = _to_grid(out, kind, num_prefix_tokens)  # (B, h, w, C)
    gh, gw = grid.shape[1:3]
    ci, cj = centre if isinstance(centre, tuple) else (centre_index(gh, centre), centre_index(gw, centre))
    if not (0 <= ci < gh and 0 <= cj < gw):
        raise ValueError(f"centre {(ci, cj)} is outside the {gh}×{gw} grid of {name}")
    return grid[:, ci, cj, :].sum(), (kind, (gh, gw), (ci, cj))


def _erf_of(name: str, raw: Tensor, where: _Where, image_hw: tuple[int, int], n_images: int,
            thresholds: tuple[float, ...], return_raw: bool) -> ERF:
    """The :class:`ERF` of one layer from its summed input gradient ``raw``."""
    kind, grid_hw, (ci, cj) = where
    rows, cy = _footprint(ci, grid_hw[0], image_hw[0])
    cols, cx = _footprint(cj, grid_hw[1], image_hw[1])
    log_map = torch.log10(raw + 1)
    return ERF(
        map=(raw if return_raw else log_minmax(raw)).float(),
        raw=raw.float(),
        areas=area_ratios(log_map, (cy, cx), thresholds),
        cross_share=cross_share(log_map, rows, cols),
        layer=name,
        n_images=n_images,
        layout=kind,
        grid=grid_hw,
        centre=(ci, cj),
        centre_pixel=(cy, cx),
        rows=rows,
        cols=cols,
    )


def effective_receptive_fields(
    model: nn.Module,
    images: Tensor,
    layers: Sequence[str | nn.Module],
    *,
    centre: Centre = "official",
    layout: Layout | None = None,
    num_prefix_tokens: int | None = None,
    batch_size: int = 64,
    rnn_train: bool | None = None,
    thresholds: Iterable[float] = THRESHOLDS,
    return_raw: bool = False,
) -> list[ERF]:
    """ERFs of several layers from one forward pass per batch (the official code's ``retain_graph`` loop).

    Args:
        model: any image model; run in eval mode for the call, every module's mode restored afterwards.
        images: ``(N, C, H, W)`` inputs, already normalised as the model expects.
        layers: dotted module names (``'stages.0.blocks.1'``) or the modules themselves.
        centre: ``'official'`` (``H//2 - 1``, the official code), ``'exact'`` (``H//2``) or a tuple ``(i, j)``.
        layout: ``'bhwc'``, ``'bchw'`` or ``'tokens'``; default: :func:`detect_layout` on the hooked output.
        num_prefix_tokens: leading non-grid tokens for ``'tokens'`` (default: ``N - ⌊√N⌋²``).
        batch_size: images per forward pass.
        rnn_train: put ``nn.LSTM``/``GRU``/``RNN`` modules in train mode for the call; default: only when
            the model is on a GPU (cuDNN's RNN backward needs it).
        thresholds: the mass shares for :attr:`ERF.areas`.
        return_raw: make :attr:`ERF.map` the raw summed gradient instead of the normalised log map.

    Returns:
        One :class:`ERF` per layer, in the order given.
    """
    if images.dim() != 4 or images.shape[0] == 0 or not images.is_floating_point():
        raise ValueError(f"images must be a float (N, C, H, W) batch with N >= 1, got {images.dtype} "
                         f"{tuple(images.shape)}")
    if not bool(torch.isfinite(images).all()):
        bad = int((~torch.isfinite(images)).sum())
        raise ValueError(f"images hold {bad} non-finite value(s) (NaN or infinity): their gradients would turn the "
                         f"ERF into NaN or an all-zero map; pass finite images")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a whole number of images >= 1, got {batch_size!r}")
    named = [_module_name(model, layer) for layer in layers]
    if not named:
        raise ValueError("give at least one layer")
    thresholds = tuple(thresholds)
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else images.device
    if rnn_train is None:
        rnn_train = device.type == "cuda"
    image_hw = (images.shape[-2], images.shape[-1])
    raws = [torch.zeros(*image_hw, dtype=torch.float64) for _ in named]
    where: list[_Where] = []
    taps = _Taps(named)
    try:
        with _erf_modes(model, rnn_train), torch.enable_grad():
            for start in range(0, len(images), batch_size):
                x = images[start : start + batch_size].to(device).detach().requires_grad_(True)
                for k, out in enumerate(taps.run(model, x)):
                    score, here = _centre_score(out, *named[k], image_hw, layout, centre, num_prefix_tokens)
                    if start == 0:
                        where.append(here)
                    (grad,) = torch.autograd.grad(score, x, retain_graph=k < len(named) - 1)
                    # ReLU per image, then sum over images and channels: (B, C, H, W) → (H, W)
                    raws[k] += reduce(grad.clamp(min=0), "b c h w -> h w", "sum").double().cpu()
    finally:
        taps.remove()
    return [_erf_of(name, raw, here, image_hw, len(images), thresholds, return_raw)
            for (name, _), raw, here in zip(named, raws, where, strict=True)]


def effective_receptive_field(
    model: nn.Module, images: Tensor, layer: str | nn.Module, **kwargs: Any
) -> ERF:
    """The ERF of one layer; keyword arguments as :func:`effective_receptive_fields`.

    Example::

        erf = effective_receptive_field(model, images, "stages.0.blocks.1")
        plt.imshow(erf.map, cmap="pink"); print(erf.areas, erf.cross_share)
    """
    return effective_receptive_fields(model, images, [layer], **kwargs)[0]


def block_layers(model: nn.Module) -> list[str]:
    """The block-level layers of a model in forward order, the natural depth axis of an ERF study.

    Sequencer2D (ours and timm's) ``stages.i.blocks.j``; ViTs ``blocks.j``; our ``SmallCNN`` each
    conv-BN-ReLU ``stages.i.k``; ResNets ``layerI.j``. Anything else: the direct children of the first
    ``nn.Sequential``-like container named ``blocks``/``stages``/``features``.
    """
    names = [name for name, _ in model.named_modules()]
    patterns = [
        r"(^|\.)stages\.\d+\.blocks\.\d+$",  # Sequencer2D, ConvNeXt, …
        r"^blocks\.\d+$",  # ViT, DeiT
        r"^layer\d+\.\d+$",  # ResNet
    ]
    for pattern in patterns:
        found = [n for n in names if re.search(pattern, n)]
        if found:
            return found
    found = [n for n, m in model.named_modules() if type(m).__name__ == "ConvBNReLU"]
    if found:
        return found
    for container in ("blocks", "stages", "features"):
        module = getattr(model, container, None)
        if isinstance(module, nn.Module):
            return [f"{container}.{child}" for child, _ in module.named_children()]
    return []
