"""sequencer_mini.models.baselines: sizes comparable to the mini Sequencer, shapes, ViT at other resolutions."""
from __future__ import annotations

import pytest
import torch
from fixtures import single_thread  # noqa: F401 (fixture)

from sequencer_mini.models.baselines import (
    BASELINES,
    SmallViT,
    resample_pos_embed,
    small_cnn,
    small_vit,
)
from sequencer_mini.models.sequencer2d import create_model
from sequencer_mini.train.recipes import build_model

pytestmark = pytest.mark.usefixtures("single_thread")


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", sorted(BASELINES))
@pytest.mark.parametrize("in_chans,img_size,preset", [(1, 28, "sequencer2d_mini28"), (3, 32, "sequencer2d_mini32")])
def test_similar_parameter_count_and_shapes(name, in_chans, img_size, preset):
    model = BASELINES[name](in_chans=in_chans, num_classes=10, img_size=img_size)
    reference = n_params(create_model(preset))
    assert 0.7 * reference <= n_params(model) <= 1.3 * reference, (n_params(model), reference)
    assert model(torch.randn(2, in_chans, img_size, img_size)).shape == (2, 10)


def test_vit_other_resolution_uses_timm_resampling():
    timm_layers = pytest.importorskip("timm.layers")
    torch.manual_seed(0)
    vit = small_vit(in_chans=1, num_classes=10, img_size=28).eval()
    grid = (14, 10)  # 56x40 input
    ours = vit.pos_embed_for(grid)
    theirs = timm_layers.resample_abs_pos_embed(vit.pos_embed, list(grid), list(vit.grid), num_prefix_tokens=1)
    assert ours.shape == (1, 1 + 14 * 10, 128) and torch.allclose(ours, theirs, atol=1e-6)
    assert vit(torch.randn(2, 1, 56, 40)).shape == (2, 10)


def test_vit_training_resolution_is_untouched():
    vit = small_vit()
    assert vit.pos_embed_for(vit.grid) is vit.pos_embed
    pe = torch.randn(1, 50, 8)
    assert torch.equal(resample_pos_embed(pe, (7, 7), (7, 7)), pe)


def test_vit_resampling_keeps_class_token_and_constant_fields():
    pe = torch.cat([torch.full((1, 1, 4), 5.0), torch.ones(1, 49, 4)], dim=1)
    out = resample_pos_embed(pe, (14, 14), (7, 7))
    assert torch.equal(out[:, :1], pe[:, :1]) and torch.allclose(out[:, 1:], torch.ones(1, 196, 4), atol=1e-5)


def test_vit_rejects_bad_sizes():
    with pytest.raises(ValueError, match="divisible by the patch size 4, got 30x28"):
        small_vit()(torch.randn(1, 1, 30, 28))
    with pytest.raises(ValueError, match="img_size must be divisible by patch_size, got 30 and 4"):
        SmallViT(img_size=30)
    with pytest.raises(ValueError, match="divisible by num_heads"):
        SmallViT(embed_dim=30, num_heads=4)


def test_cnn_any_size_and_backward():
    cnn = small_cnn(in_chans=3, num_classes=5, img_size=32)
    out = cnn(torch.randn(2, 3, 48, 40))
    out.sum().backward()
    assert out.shape == (2, 5) and cnn.head.weight.grad is not None


def test_unknown_model_names_the_baselines():
    with pytest.raises(ValueError, match=r"unknown model 'resnet'; expected one of \[.*'small_cnn', 'small_vit'\]"):
        build_model("resnet", in_chans=1, num_classes=10, img_size=28)
