"""Chapter 9: the ERF explorer (sequencer_mini.analysis.widgets), live and static.

The static explorer's behaviour in a browser (each control changes the picture, no console error, no request
leaving the page) is checked on the built book by the headless-Chromium test; here: its structure and state.
"""

from __future__ import annotations

import pytest
import torch
from fixtures import single_thread  # noqa: F401 (fixture)
from torch import nn

from sequencer_mini import Sequencer2D
from sequencer_mini.analysis.erf import effective_receptive_fields
from sequencer_mini.analysis.widgets import LiveExplorer, Panel, caption, erf_png, static_explorer

widgets = pytest.importorskip("ipywidgets")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


pytestmark = pytest.mark.usefixtures("single_thread")  # tiny tensors: threads only add overhead


def tiny_models() -> tuple[dict[str, dict[str, nn.Module]], dict[str, list[str]]]:
    torch.manual_seed(0)
    seq = Sequencer2D(layers=(2,), patch_sizes=(1,), embed_dims=(8,), hidden_sizes=(2,), mlp_ratios=(1.0,),
                      in_chans=1, num_classes=3)
    seq_random = Sequencer2D(layers=(2,), patch_sizes=(1,), embed_dims=(8,), hidden_sizes=(2,), mlp_ratios=(1.0,),
                             in_chans=1, num_classes=3)
    cnn = nn.Sequential(*[nn.Sequential(nn.Conv2d(1 if i == 0 else 4, 4, 3, padding=1), nn.ReLU()) for i in range(3)])
    cnn_random = nn.Sequential(*[nn.Sequential(nn.Conv2d(1 if i == 0 else 4, 4, 3, padding=1), nn.ReLU())
                                 for i in range(3)])
    models = {"Sequencer2D": {"trained": seq, "random init": seq_random},
              "CNN": {"trained": cnn, "random init": cnn_random}}
    layers = {"Sequencer2D": ["stages.0.blocks.0", "stages.0.blocks.1"], "CNN": ["0", "1", "2"]}
    return models, layers


def test_erf_png_is_a_small_upscaled_png() -> None:
    import io

    from PIL import Image

    data = erf_png(torch.rand(28, 28), size=140)
    assert data.startswith(PNG_MAGIC) and len(data) < 20_000
    assert Image.open(io.BytesIO(data)).size == (140, 140)
    with pytest.raises(ValueError):
        erf_png(torch.rand(2, 28, 28))


def test_static_explorer_structure() -> None:
    models, layers = tiny_models()
    images = torch.randn(2, 1, 8, 8)
    erfs = {name: {weights: effective_receptive_fields(model, images, layers[name], centre="exact")
                   for weights, model in variants.items()} for name, variants in models.items()}
    # the panels as chapter 9 makes them: one picture and caption per block
    panels = {name: {weights: [Panel(erf_png(erf.map), caption(erf, f"{name}, {weights}, block {k + 1}"))
                               for k, erf in enumerate(results)] for weights, results in variants.items()}
              for name, variants in erfs.items()}
    assert [len(erfs["CNN"][w]) for w in ("trained", "random init")] == [3, 3]
    box = static_explorer(panels, title="test")
    assert "erf-explorer" in box._dom_classes
    header, model, weights, depth, outer, bar = box.children
    assert "data-map" in bar.children[0]._dom_classes and "no gradient" in bar.children[1].value  # colour bar
    assert list(model.options) == ["Sequencer2D", "CNN"] and list(weights.options) == ["trained", "random init"]
    assert list(depth.options) == ["1", "2", "3"]  # the deepest model sets the range
    assert isinstance(outer, widgets.Stack) and len(outer.children) == 2
    depth_stacks = [stack for weight_stack in outer.children for stack in weight_stack.children]
    assert all(len(s.children) == 3 for s in depth_stacks)  # the 2-block model repeats its last block
    assert "has 2 blocks" in depth_stacks[0].children[2].children[1].value
    pngs = [bytes(page.children[0].value) for s in depth_stacks for page in s.children[:2]]
    assert all(p.startswith(PNG_MAGIC) for p in pngs) and len(set(pngs)) == len(pngs)
    links = box._erf_links
    assert len(links) == 1 + 2 + 4  # model → outer; weights → each model's stack; depth → each depth stack
    assert all(isinstance(link, widgets.widget_link.Link) for link in links)
    assert {(link.source[1], link.target[1]) for link in links} == {("index", "selected_index")}
    # the state that the page embeds holds every model the links need
    from ipywidgets.embed import dependency_state

    state = dependency_state([box] + links, drop_defaults=True)
    assert all(link.model_id in state for link in links) and outer.model_id in state


def test_static_explorer_rejects_inconsistent_panels() -> None:
    panel = Panel(png=erf_png(torch.rand(4, 4)), caption="x")
    with pytest.raises(ValueError, match="same weights"):
        static_explorer({"a": {"trained": [panel]}, "b": {"random": [panel]}})
    with pytest.raises(ValueError, match="no panels"):
        static_explorer({})


def test_live_explorer_recomputes_on_every_control() -> None:
    models, layers = tiny_models()
    image_sets = {"noise": torch.randn(3, 1, 8, 8), "ones": torch.ones(3, 1, 8, 8)}
    live = LiveExplorer(models, layers, image_sets, n_images=2, centre="exact")
    assert live.last is not None and live.last.layer == "stages.0.blocks.0" and live.last.n_images == 2
    seen = [bytes(live.image.value)]
    live.depth.value = 2
    assert live.last.layer == "stages.0.blocks.1"
    seen.append(bytes(live.image.value))
    live.weights.value = "random init"
    seen.append(bytes(live.image.value))
    live.model.value = "CNN"
    assert live.depth.max == 3 and live.last.layer == str(live.depth.value - 1)
    seen.append(bytes(live.image.value))
    live.images.value = "ones"
    seen.append(bytes(live.image.value))
    assert live.last.cross_share < 1.0
    assert len(set(seen)) == len(seen)  # every change showed a new picture
