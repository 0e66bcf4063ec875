"""Chapter 9: the ERF explorer, live (with a kernel) and static (in the rendered book, with no kernel).

Two explorers with the same controls: *model*, *weights* (trained or random init) and *depth* (block index).

* :class:`LiveExplorer` recomputes :func:`~sequencer_mini.analysis.erf.effective_receptive_field` in the kernel at every
  change (Colab, Jupyter). It can also switch the input images.
* :func:`static_explorer` is built from maps computed once, at the time the notebook is executed, and is
  linked **only on the client**: the pictures sit in nested ``ipywidgets.Stack`` widgets (model → weights →
  depth) whose ``selected_index`` is tied to the controls' ``index`` by ``ipywidgets.jslink``. The page stores
  the widget state, the widget JavaScript served by the book renders it, and moving a control changes the
  picture with no kernel and no network.

Pictures are small PNGs: a ``28×28`` map upscaled with nearest-neighbour pixels to about 140 px.
"""

from __future__ import annotations

import html
import io
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from torch import Tensor, nn

from sequencer_mini.analysis.erf import ERF, effective_receptive_field

if TYPE_CHECKING:  # pragma: no cover
    import ipywidgets

__all__ = ["Panel", "erf_png", "colour_bar_png", "colour_bar", "caption", "static_explorer", "LiveExplorer"]


@dataclass
class Panel:
    """One precomputed picture of the static explorer: PNG bytes and an HTML caption."""

    png: bytes
    caption: str


def erf_png(erf_map: Tensor | np.ndarray, size: int = 140, cmap: str = "pink") -> bytes:
    """An ``(H, W)`` map in ``[0, 1]`` as PNG bytes, upscaled by whole pixels to about ``size`` px per side.

    ``cmap='pink'`` is the official Sequencer figures' colour map (bright = strong gradient).
    """
    # import cost: matplotlib loads only when a figure is drawn
    from matplotlib import colormaps

    # import cost: matplotlib loads only when a figure is drawn
    from matplotlib.image import imsave

    values = np.asarray(erf_map.detach().cpu() if isinstance(erf_map, Tensor) else erf_map, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"expected an (H, W) map, got shape {values.shape}")
    scale = max(1, round(size / max(values.shape)))
    rgba = colormaps[cmap](np.clip(values, 0.0, 1.0))  # (H, W, 4)
    rgba = rgba.repeat(scale, axis=0).repeat(scale, axis=1)  # nearest-neighbour: each map pixel stays a square
    buffer = io.BytesIO()
    imsave(buffer, (rgba[..., :3] * 255).round().astype(np.uint8), format="png")
    return buffer.getvalue()


def colour_bar_png(width: int = 140, height: int = 12, cmap: str = "pink") -> bytes:
    """The colour bar of :func:`erf_png`'s maps: ``cmap`` from 0 (left) to 1 (right), as PNG bytes."""
    # import cost: matplotlib loads only when a figure is drawn
    from matplotlib import colormaps

    # import cost: matplotlib loads only when a figure is drawn
    from matplotlib.image import imsave

    ramp = np.repeat(np.linspace(0.0, 1.0, width)[None, :], height, axis=0)
    buffer = io.BytesIO()
    imsave(buffer, (colormaps[cmap](ramp)[..., :3] * 255).round().astype(np.uint8), format="png")
    return buffer.getvalue()


COLOUR_BAR_TEXT = ("<small>0 &nbsp;&larr; no gradient &nbsp;·&nbsp; largest gradient &rarr;&nbsp; 1 "
                   "(log scale, each map scaled to 0-1)</small>")


def colour_bar(size: int = 140, cmap: str = "pink") -> ipywidgets.HBox:
    """A colour bar for the explorers' maps: the ramp (a ``data-map`` image, shown as it is in the dark theme)
    and what its ends mean."""
    # optional dependency: only the book's interactive cells need ipywidgets
    import ipywidgets as widgets

    bar = widgets.Image(value=colour_bar_png(size, 12, cmap), format="png", width=size, height=12)
    bar.add_class("data-map")
    bar.add_class("erf-colour-bar")
    return widgets.HBox([bar, widgets.HTML(COLOUR_BAR_TEXT, layout=widgets.Layout(margin="0 0 0 12px"))])


def caption(erf: ERF, title: str = "") -> str:
    """An HTML caption with the layer, the 50 % / 99 % areas and the cross share."""
    parts = [f"<b>{html.escape(title)}</b><br>" if title else ""]
    parts.append(f"<code>{html.escape(erf.layer)}</code>, {erf.grid[0]}×{erf.grid[1]} grid<br>")
    areas = " · ".join(f"{int(round(100 * t))}%: {100 * a:.1f}%" for t, a in erf.areas.items())
    parts.append(f"area holding {areas} of the image<br>")
    parts.append(f"cross share {100 * erf.cross_share:.1f}%")
    return "".join(parts)


def static_explorer(
    panels: Mapping[str, Mapping[str, Sequence[Panel]]],
    *,
    title: str = "ERF explorer",
    depth_label: str = "block",
    size: int = 140,
    cmap: str = "pink",
) -> ipywidgets.VBox:
    """A kernel-free explorer over precomputed panels ``{model: {weights: [panel per depth]}}``.

    Controls: a Dropdown (model), ToggleButtons (weights) and a SelectionSlider (depth, ``1 … max depth``).
    Pictures, each an ``HBox`` of the image and its caption, sit in ``Stack(models) → Stack(weights) →
    Stack(depths)``; each control's ``index`` is ``jslink``-ed to the ``selected_index`` of every Stack on its
    level, so the browser alone does the switching. A model with fewer blocks than the deepest one repeats its
    last block (its caption says so).

    Under the pictures, a :func:`colour_bar` for ``cmap`` (the colour map the panels were drawn with).
    The returned VBox has the CSS class ``erf-explorer``; the controls ``erf-model``, ``erf-weights`` and
    ``erf-depth`` (used by the browser test).
    """
    # optional dependency: only the book's interactive cells need ipywidgets
    import ipywidgets as widgets

    model_names = list(panels)
    if not model_names:
        raise ValueError("no panels given")
    weight_names = list(next(iter(panels.values())))
    for name, variants in panels.items():
        if list(variants) != weight_names:
            raise ValueError(f"every model needs the same weights {weight_names}, {name!r} has {list(variants)}")
    depth = max(len(pages) for variants in panels.values() for pages in variants.values())

    model_control = widgets.Dropdown(options=model_names, index=0, description="model")
    weights_control = widgets.ToggleButtons(options=weight_names, index=0, description="weights")
    depth_control = widgets.SelectionSlider(
        options=[str(k + 1) for k in range(depth)], index=0, description=depth_label, continuous_update=True
    )
    for control, css in ((model_control, "erf-model"), (weights_control, "erf-weights"), (depth_control, "erf-depth")):
        control.add_class(css)

    def page(panel: Panel, note: str = "") -> widgets.HBox:
        image = widgets.Image(value=panel.png, format="png", width=size, height=size)
        image.add_class("data-map")  # a colour-mapped data image: the book's dark theme shows it as it is
        image.add_class("erf-map")
        text = widgets.HTML(panel.caption + note, layout=widgets.Layout(margin="0 0 0 12px"))
        return widgets.HBox([image, text])

    depth_stacks: list[widgets.Stack] = []
    weight_stacks: list[widgets.Stack] = []
    for name in model_names:
        inner = []
        for weights in weight_names:
            pages = list(panels[name][weights])
            if not pages:
                raise ValueError(f"no panels for {name!r}, {weights!r}")
            children = [page(p) for p in pages]
            last_note = f"<br><i>({name} has {len(pages)} blocks: showing the last one)</i>"
            children += [page(pages[-1], last_note) for _ in range(depth - len(pages))]
            stack = widgets.Stack(children, selected_index=0)
            depth_stacks.append(stack)
            inner.append(stack)
        weight_stacks.append(widgets.Stack(inner, selected_index=0))
    outer = widgets.Stack(weight_stacks, selected_index=0)

    links = [widgets.jslink((model_control, "index"), (outer, "selected_index"))]
    links += [widgets.jslink((weights_control, "index"), (s, "selected_index")) for s in weight_stacks]
    links += [widgets.jslink((depth_control, "index"), (s, "selected_index")) for s in depth_stacks]

    header = widgets.HTML(
        f"<b>{html.escape(title)}</b> "
        "<small>(precomputed maps: the controls work in the page, without a kernel)</small>"
    )
    box = widgets.VBox([header, model_control, weights_control, depth_control, outer, colour_bar(size, cmap)])
    box.add_class("erf-explorer")
    box._erf_links = links  # keep the Link widgets alive as long as the explorer
    return box


class LiveExplorer:
    """The explorer with a kernel: every change of a control recomputes the ERF.

    Args:
        models: ``{model name: {weights name: module}}``.
        layers: ``{model name: [layer names in depth order]}``.
        image_sets: ``{name: images (N, C, H, W)}``, the inputs to choose from.
        n_images: how many images of the chosen set to use (fewer = faster).
        erf_kwargs: passed to :func:`~sequencer_mini.analysis.erf.effective_receptive_field`.

    Display it as the last expression of a cell (or ``display(explorer.widget)``); :meth:`update` recomputes
    by hand, ``explorer.last`` is the most recent :class:`~sequencer_mini.analysis.erf.ERF` and ``explorer.seconds``
    the seconds it took.
    """

    def __init__(
        self,
        models: Mapping[str, Mapping[str, nn.Module]],
        layers: Mapping[str, Sequence[str]],
        image_sets: Mapping[str, Tensor],
        *,
        n_images: int = 16,
        size: int = 168,
        cmap: str = "pink",
        **erf_kwargs: Any,
    ) -> None:
        # optional dependency: only the book's interactive cells need ipywidgets
        import ipywidgets as widgets

        self.models, self.layers, self.image_sets = models, layers, image_sets
        self.n_images, self.size, self.cmap, self.erf_kwargs = n_images, size, cmap, erf_kwargs
        first = next(iter(models))
        self.model = widgets.Dropdown(options=list(models), description="model")
        self.weights = widgets.ToggleButtons(options=list(models[first]), description="weights")
        self.depth = widgets.IntSlider(value=1, min=1, max=len(layers[first]), description="block")
        self.images = widgets.Dropdown(options=list(image_sets), description="images")
        self.image = widgets.Image(format="png", width=size, height=size)
        self.image.add_class("data-map")
        self.text = widgets.HTML()
        self.last: ERF | None = None
        self.seconds = 0.0
        for control in (self.model, self.weights, self.depth, self.images):
            control.observe(self._changed, names="value")
        self.text.layout.margin = "0 0 0 12px"
        self.widget = widgets.VBox(
            [self.model, self.weights, self.depth, self.images, widgets.HBox([self.image, self.text]),
             colour_bar(size, cmap)]
        )
        self.update()

    def _changed(self, change: dict[str, Any]) -> None:
        if change["owner"] is self.model:
            self.depth.max = len(self.layers[self.model.value])  # clamps the value if the new model is shallower
        self.update()

    def update(self) -> ERF:
        """Recompute the ERF for the current controls and show it."""
        name = self.model.value
        module = self.models[name][self.weights.value]
        layer = self.layers[name][self.depth.value - 1]
        images = self.image_sets[self.images.value][: self.n_images]
        start = time.perf_counter()
        erf = effective_receptive_field(module, images, layer, **self.erf_kwargs)
        self.seconds = time.perf_counter() - start
        self.image.value = erf_png(erf.map, self.size, self.cmap)
        self.text.value = caption(erf, f"{name}, {self.weights.value}, block {self.depth.value}") + (
            f"<br><small>{erf.n_images} images, computed in {self.seconds:.2f} s</small>"
        )
        self.last = erf
        return erf

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

