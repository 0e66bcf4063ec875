"""Chapter 9: the effective receptive field (sequencer_mini.analysis.erf)."""

from __future__ import annotations

import math

import pytest
import torch
from einops import rearrange
from fixtures import single_thread  # noqa: F401 (fixture)
from torch import nn

from sequencer_mini import Sequencer2D
from sequencer_mini.analysis.erf import (
    ERF,
    area_ratios,
    block_layers,
    centre_index,
    cross_share,
    detect_layout,
    effective_receptive_field,
    effective_receptive_fields,
    joint_minmax,
)

pytestmark = pytest.mark.usefixtures("single_thread")  # tiny tensors: threads only add overhead


def one_block_sequencer(**kwargs) -> Sequencer2D:
    """A Sequencer2D with one block and a 1-pixel stem: one token per pixel."""
    torch.manual_seed(0)
    config = dict(layers=(1,), patch_sizes=(1,), embed_dims=(8,), hidden_sizes=(2,), mlp_ratios=(2.0,),
                  in_chans=1, num_classes=3)
    return Sequencer2D(**{**config, **kwargs})


# ----------------------------------------------------------------------------------------------- the shapes


@pytest.mark.parametrize("centre", ["official", "exact"])
def test_one_bilstm2d_layer_is_a_cross(centre: str) -> None:
    model = one_block_sequencer()
    images = torch.randn(16, 1, 9, 9, generator=torch.Generator().manual_seed(1))
    erf = effective_receptive_field(model, images, "stages.0.blocks.0", centre=centre, return_raw=True)
    i = centre_index(9, centre)
    assert erf.layout == "bhwc" and erf.grid == (9, 9) and erf.centre == (i, i) and erf.centre_pixel == (i, i)
    on_cross = torch.zeros(9, 9, dtype=torch.bool)
    on_cross[i, :] = on_cross[:, i] = True
    assert torch.all(erf.raw[~on_cross] == 0), "gradient leaked off the centre row and column"
    assert (erf.raw[on_cross] > 0).float().mean() > 0.8  # ReLU may zero a few, 16 images make most positive
    assert erf.cross_share == 1.0
    assert torch.equal(erf.map, erf.raw)  # return_raw: the map is the un-normalised sum


def test_two_blocks_fill_the_image() -> None:
    """Two BiLSTM2D layers reach every token (row of column of row): no exact zeros left."""
    model = one_block_sequencer(layers=(2,))
    images = torch.randn(8, 1, 7, 7, generator=torch.Generator().manual_seed(1))
    one, two = effective_receptive_fields(model, images, ["stages.0.blocks.0", "stages.0.blocks.1"], centre="exact")
    assert one.cross_share == 1.0 and two.cross_share < 1.0
    assert (two.raw > 0).float().mean() > 0.9


@pytest.mark.parametrize("k", [3, 5])
def test_one_convolution_is_its_window(k: int) -> None:
    conv = nn.Conv2d(2, 4, k, padding=k // 2)
    with torch.no_grad():
        conv.weight.uniform_(0.1, 1.0)  # all positive: the whole window survives the ReLU
    model = nn.Sequential(conv)
    images = torch.randn(3, 2, 12, 12)
    erf = effective_receptive_field(model, images, "0", centre="exact", return_raw=True)
    assert erf.layout == "bchw" and erf.centre == (6, 6)
    window = torch.zeros(12, 12, dtype=torch.bool)
    window[6 - k // 2 : 6 + k // 2 + 1, 6 - k // 2 : 6 + k // 2 + 1] = True
    assert torch.all(erf.raw[~window] == 0) and torch.all(erf.raw[window] > 0)
    # the gradient of a cross-correlation is its kernel, unflipped: summed over 3 images, 2 in and 4 out channels
    expected = 3 * conv.weight.sum(dim=(0, 1))
    torch.testing.assert_close(erf.raw[window].view(k, k), expected.detach(), rtol=1e-5, atol=1e-5)
    assert erf.areas[0.99] == pytest.approx(k * k / 144)


def test_tokens_with_class_token() -> None:
    """A per-patch linear map with a prepended class token: the ERF is the centre patch's 4×4 footprint."""

    class Tokens(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Conv2d(1, 6, 4, stride=4)
            self.cls = nn.Parameter(torch.zeros(1, 1, 6))
            self.out = nn.Identity()

        def forward(self, x):
            tokens = rearrange(self.proj(x), "b c h w -> b (h w) c")
            return self.out(torch.cat([self.cls.expand(len(x), -1, -1), tokens], dim=1))

    model = Tokens()
    with torch.no_grad():
        model.proj.weight.uniform_(0.1, 1.0)
    erf = effective_receptive_field(model, torch.randn(2, 1, 20, 20), model.out, centre="exact", return_raw=True)
    assert erf.layout == "tokens" and erf.grid == (5, 5) and erf.centre == (2, 2) and erf.layer == "out"
    assert erf.rows == (8, 12) and erf.cols == (8, 12)
    nonzero = (erf.raw > 0).nonzero()
    assert nonzero.min().item() == 8 and nonzero.max().item() == 11 and len(nonzero) == 16


def test_official_centre_is_off_centre_on_odd_grids() -> None:
    assert [centre_index(n, "official") for n in (7, 8, 14)] == [2, 3, 6]
    assert [centre_index(n, "exact") for n in (7, 8, 14)] == [3, 4, 7]
    with pytest.raises(ValueError, match="centre"):
        centre_index(7, "middle")


# ----------------------------------------------------------------------------------------------- modes, batching


def test_modes_restored_and_rnns_in_train_mode_during_the_call() -> None:
    model = one_block_sequencer(layers=(2,))
    model.train()
    model.stages[0].blocks[1].eval()  # a mixed state must come back exactly
    rnns = [m for m in model.modules() if isinstance(m, nn.LSTM)]
    rnns[0].eval()
    before = {name: m.training for name, m in model.named_modules()}
    seen = {}

    def record(module, _inputs, _output):
        seen["model"] = model.training
        seen["rnns"] = [r.training for r in rnns]
        seen["mlp"] = model.stages[0].blocks[0].mlp_channels.training

    handle = model.stages[0].blocks[0].register_forward_hook(record)
    effective_receptive_field(model, torch.randn(2, 1, 6, 6), "stages.0.blocks.0", rnn_train=True)
    handle.remove()
    assert seen == {"model": False, "rnns": [True] * len(rnns), "mlp": False}  # eval, but the LSTMs in train
    assert {name: m.training for name, m in model.named_modules()} == before
    effective_receptive_field(model, torch.randn(2, 1, 6, 6), "stages.0.blocks.0")  # CPU default: no switch
    assert {name: m.training for name, m in model.named_modules()} == before


def test_modes_restored_after_an_error() -> None:
    model = one_block_sequencer().train()
    with pytest.raises(ValueError):
        effective_receptive_field(model, torch.randn(2, 1, 6, 6), "stages.0.blocks.0", centre=(9, 9))
    assert all(m.training for m in model.modules())


def test_batched_equals_one_image_at_a_time() -> None:
    """Summing the centre outputs over a batch gives each image's own gradient (eval mode: BatchNorm frozen)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1))
    model.train()
    model(torch.randn(8, 1, 10, 10))  # move the running statistics away from (0, 1)
    images = torch.randn(6, 1, 10, 10)
    batched = effective_receptive_field(model, images, "3", return_raw=True).raw
    single = sum(effective_receptive_field(model, images[i : i + 1], "3", return_raw=True).raw for i in range(6))
    torch.testing.assert_close(batched, single)
    chunks = effective_receptive_field(model, images, "3", return_raw=True, batch_size=4).raw
    torch.testing.assert_close(batched, chunks)
    assert model.training


def test_parameters_get_no_gradient_and_no_grad_context_is_fine() -> None:
    model = one_block_sequencer()
    with torch.no_grad():
        erf = effective_receptive_field(model, torch.randn(2, 1, 5, 5), "stages.0.blocks.0")
    assert all(p.grad is None for p in model.parameters())
    assert erf.map.shape == (5, 5) and float(erf.map.max()) == 1.0 and float(erf.map.min()) == 0.0


# ----------------------------------------------------------------------------------------------- layouts, names


def test_detect_layout() -> None:
    assert detect_layout((2, 14, 14, 64), (28, 28)) == "bhwc"
    assert detect_layout((2, 64, 14, 14), (28, 28)) == "bchw"
    assert detect_layout((2, 50, 128), (28, 28)) == "tokens"
    assert detect_layout((2, 7, 14, 32), (14, 28)) == "bhwc"  # a 2:1 image keeps its aspect ratio
    with pytest.raises(ValueError, match="layout="):
        detect_layout((2, 16, 16, 16), (32, 32))
    # a tie is broken by the last layer with weights
    assert detect_layout((2, 16, 16, 16), (32, 32), nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU())) == "bchw"
    assert detect_layout((2, 16, 16, 16), (32, 32), one_block_sequencer().stages[0].blocks[0]) == "bhwc"


def test_layer_names_and_errors() -> None:
    model = one_block_sequencer(layers=(2,))
    assert block_layers(model) == ["stages.0.blocks.0", "stages.0.blocks.1"]
    by_module = effective_receptive_field(model, torch.randn(2, 1, 6, 6), model.stages[0].blocks[1])
    assert by_module.layer == "stages.0.blocks.1" and isinstance(by_module, ERF)
    with pytest.raises(ValueError, match="no module"):
        effective_receptive_field(model, torch.randn(2, 1, 6, 6), "stages.0.blocks.7")
    with pytest.raises(ValueError, match="not part of the model"):
        effective_receptive_field(model, torch.randn(2, 1, 6, 6), nn.Linear(2, 2))


def test_baselines_and_timm_models() -> None:
    timm = pytest.importorskip("timm")
    from timm.models.sequencer import Sequencer2d
    from timm.models.vision_transformer import VisionTransformer

    from sequencer_mini.models.baselines import small_cnn

    torch.manual_seed(0)
    cnn = small_cnn(widths=(4, 8, 8))
    assert block_layers(cnn) == ["stages.0.0", "stages.0.1", "stages.1.1", "stages.1.2", "stages.2.1", "stages.2.2"]
    first = effective_receptive_field(cnn, torch.randn(2, 1, 28, 28), "stages.0.0", centre="exact")
    assert first.layout == "bchw" and first.areas[0.99] == pytest.approx(9 / 784)  # one 3×3 conv

    seq = Sequencer2d(layers=(1, 1), patch_sizes=(2, 1), embed_dims=(8, 8), hidden_sizes=(2, 2),
                      mlp_ratios=(1.0, 1.0), in_chans=1, num_classes=3)
    assert block_layers(seq) == ["stages.0.blocks.0", "stages.1.blocks.0"]
    erf = effective_receptive_field(seq, torch.randn(2, 1, 12, 12), "stages.0.blocks.0", return_raw=True)
    assert erf.layout == "bhwc" and erf.grid == (6, 6) and erf.cross_share == 1.0

    vit = VisionTransformer(img_size=16, patch_size=4, in_chans=1, embed_dim=8, depth=2, num_heads=2, num_classes=3)
    assert block_layers(vit) == ["blocks.0", "blocks.1"]
    erf = effective_receptive_field(vit, torch.randn(2, 1, 16, 16), "blocks.0", centre="exact", return_raw=True)
    assert erf.layout == "tokens" and erf.grid == (4, 4)
    assert (erf.raw > 0).float().mean() > 0.5  # attention: every patch reaches the centre after one block
    assert timm.__version__


# ----------------------------------------------------------------------------------------------- measures


def test_area_ratios_and_cross_share() -> None:
    delta = torch.zeros(11, 11)
    delta[5, 5] = 1.0
    assert area_ratios(delta, (5, 5)) == {0.2: 1 / 121, 0.5: 1 / 121, 0.99: 1 / 121}
    uniform = torch.ones(11, 11)
    areas = area_ratios(uniform, (5, 5))
    assert areas[0.2] == 25 / 121 and areas[0.5] == 81 / 121 and areas[0.99] == 1.0
    assert area_ratios(uniform, (0, 0), (1.0,)) == {1.0: 1.0}  # a corner centre: the square is clipped
    assert cross_share(uniform, (5, 6), (5, 6)) == pytest.approx(21 / 121)
    assert math.isnan(cross_share(torch.zeros(3, 3), (1, 2), (1, 2)))
    a, b = joint_minmax([torch.tensor([0.0, 1.0]), torch.tensor([2.0, 4.0])])
    assert a.tolist() == [0.0, 0.25] and b.tolist() == [0.5, 1.0]
