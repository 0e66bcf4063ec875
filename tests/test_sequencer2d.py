"""Chapter 5: Sequencer2D-S/M/L match the paper's parameter counts and timm's weights and logits.

Every union mode and both ``with_fc`` settings are compared with timm on a small S-shaped model (all four stages)
at 56 px; each full-size preset is built once for the module and compared at 224 px and at 230 px (not a multiple
of 14: built with ``strict_img_size=False``, ours floors the sides as timm and the official code do). Logits are
compared bit for bit: the same weights and the same operators give the same floats (one thread, so one reduction order).
"""

from __future__ import annotations

import re

import pytest
import timm
import torch
from fixtures import single_thread  # noqa: F401 (fixture)
from timm.models.sequencer import Sequencer2d, Sequencer2dBlock

import sequencer_mini as sm
from sequencer_mini.models.sequencer2d import Sequencer2DConfig, drop_path_rates

pytestmark = pytest.mark.usefixtures("single_thread")

PARAMS = {"sequencer2d_s": 27_651_688, "sequencer2d_m": 38_307_688, "sequencer2d_l": 54_298_216}


def _randomize(model: torch.nn.Module, seed: int = 0) -> None:
    """Replace every weight: timm's head starts at zero, which would make a logit comparison empty."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05)


def _images(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- every union, small S-shaped model

# Sequencer2D-S's shape (four stages, patch sizes 7, 2, 1, 1, MLP ratio 3) at a width and depth that run in
# milliseconds. Without the FC the LSTMs' mixed output must be the block width: 4h for 'cat', 2h otherwise.
SMALL_S = dict(layers=(2, 1, 2, 1), patch_sizes=(7, 2, 1, 1), embed_dims=(16, 32, 32, 32), mlp_ratios=(3.0,) * 4,
               num_classes=10)
UNIONS = ["cat", "add", "vertical", "horizontal"]


@pytest.mark.parametrize("with_fc", [True, False], ids=["fc", "no_fc"])
@pytest.mark.parametrize("union", UNIONS)
def test_small_s_shape_logits_equal_timm_bitwise(union: str, with_fc: bool) -> None:
    width = 4 if with_fc or union == "cat" else 2
    kwargs = dict(SMALL_S, hidden_sizes=tuple(c // width for c in SMALL_S["embed_dims"]), union=union,
                  with_fc=with_fc)
    torch.manual_seed(0)
    ref = Sequencer2d(**kwargs).eval()
    _randomize(ref)
    ours = sm.Sequencer2D(**kwargs).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    assert list(ours.state_dict()) == list(ref.state_dict())
    assert len(ours.stages) == 4
    # a batch of squares, and a non-square image (catches transposed axes) at 1.5× the width
    for x in (_images(2, 3, 56, 56), _images(1, 3, 56, 84, seed=2)):
        with torch.no_grad():
            want, got = ref(x), ours(x)
        assert want.abs().max() > 1e-2  # the comparison is not empty
        where = f"{union}, with_fc={with_fc}, {tuple(x.shape)}"
        assert torch.equal(got, want), f"{where}: max |Δ| {(got - want).abs().max()}"


# ----------------------------------------------------------------------------- full size: S, M and L, once each


@pytest.fixture(scope="module", params=list(PARAMS))
def full_size(request):
    """One preset at full size, built once for the module (and released before the next): ours and timm's from
    the same seed, the seeded initial weights compared, then timm's randomised and loaded into ours strictly."""
    name = request.param
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        ours = sm.create_model(name, strict_img_size=False).eval()  # floors 230 px, as timm does
        torch.manual_seed(0)
        ref = timm.create_model(name).eval()
        sd_ours, sd_ref = ours.state_dict(), ref.state_dict()
        seeded = {"same_keys": list(sd_ours) == list(sd_ref),
                  "differ": [k for k in sd_ref if not torch.equal(sd_ours[k], sd_ref[k])],
                  "head_zero": bool(torch.all(sd_ours["head.fc.weight"] == 0))}
        _randomize(ref)
        ours.load_state_dict(ref.state_dict(), strict=True)
    finally:
        torch.set_num_threads(threads)
    yield name, ours, ref, seeded


def test_parameter_count_and_strict_timm_load(full_size) -> None:
    name, ours, ref, _ = full_size
    assert sum(p.numel() for p in ours.parameters()) == PARAMS[name]
    assert sum(p.numel() for p in ref.parameters()) == PARAMS[name]
    ours.load_state_dict(ref.state_dict(), strict=True)
    assert list(ours.state_dict()) == list(ref.state_dict())


def test_seeded_init_equals_timm_bitwise(full_size) -> None:
    """Same seed → same initial weights as timm: xavier linears, LeCun convs, zero head, U(±1/√h) LSTMs."""
    name, _, _, seeded = full_size
    assert seeded["same_keys"], name
    assert not seeded["differ"], f"{name}: initial weights differ from timm's in {seeded['differ'][:5]}"
    assert seeded["head_zero"]


@pytest.mark.parametrize("side", [224, 230])
def test_logits_equal_timm_bitwise(full_size, side: int) -> None:
    name, ours, ref, _ = full_size
    x = _images(1, 3, side, side)
    with torch.no_grad():
        want, got = ref(x), ours(x)
    assert want.shape == (1, 1000)
    assert want.abs().max() > 1e-2  # the comparison is not empty
    assert torch.equal(got, want), f"{name} at {side} px: max |Δ| {(got - want).abs().max()}"


def test_input_size_modes() -> None:
    """Strict (the library's default, the book's): sides off the patch grid are refused. Not strict (timm's
    entries): floored by the strided convolutions, so 230 px gives the logits of its first 224 rows and columns; the
    same weights either way. Under one token at the last stage: refused."""
    torch.manual_seed(0)
    strict = sm.Sequencer2D(**SMALL_S).eval()
    _randomize(strict)
    loose = sm.Sequencer2D(**SMALL_S, strict_img_size=False).eval()
    loose.load_state_dict(strict.state_dict(), strict=True)
    assert strict.strict_img_size and not loose.strict_img_size
    x = _images(1, 3, 62, 59)
    with torch.no_grad():
        assert torch.equal(loose(x), strict(x[..., :56, :56]))
        assert loose.forward_features(x).shape == (1, 4, 4, 32)
    with pytest.raises(ValueError, match=re.escape("multiples of 14, got 62×59; nothing is cropped silently")):
        strict(x)
    with pytest.raises(ValueError, match=re.escape("at least 14 (one token at the last stage), got 13×59")):
        loose(x[:, :, :13])
    with pytest.raises(ValueError, match="PatchEmbed: height and width must be at least 7"):
        sm.PatchEmbed(7, 3, 8, strict_img_size=False)(torch.randn(1, 3, 6, 21))
    assert sm.PatchEmbed(7, 3, 8, strict_img_size=False)(torch.randn(1, 3, 20, 21)).shape == (1, 2, 3, 8)


# ----------------------------------------------------------------------------- parts and other presets


def test_scratch_backend_logits_equal_torch_backend() -> None:
    torch.manual_seed(0)
    a = sm.sequencer2d_mini32().eval()
    _randomize(a)
    b = sm.sequencer2d_mini32(backend="scratch").eval()
    b.load_state_dict(a.state_dict(), strict=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(b(x), a(x), rtol=1e-4, atol=1e-5)


def test_block_equals_timm_block() -> None:
    torch.manual_seed(0)
    ref = Sequencer2dBlock(32, 8).eval()
    _randomize(ref)
    ours = sm.Sequencer2DBlock(32, 8).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 5, 6, 32)
    torch.testing.assert_close(ours(x), ref(x))


def test_official_linear_drop_path_schedule() -> None:
    rates = drop_path_rates((4, 3, 8, 3), 0.1)
    flat = [r for stage in rates for r in stage]
    assert [len(s) for s in rates] == [4, 3, 8, 3]
    assert flat[0] == 0.0 and flat[-1] == pytest.approx(0.1)
    assert flat[5] == pytest.approx(0.1 * 5 / 17)
    assert drop_path_rates((2, 2), 0.2, "uniform") == [[0.2, 0.2], [0.2, 0.2]]
    model = sm.sequencer2d_s(drop_path_rate=0.1)
    last = model.stages[3].blocks[2].drop_path
    assert isinstance(model.stages[0].blocks[0].drop_path, torch.nn.Identity)
    assert last.drop_prob == pytest.approx(0.1)


def test_drop_path_is_identity_in_eval_and_unbiased_in_train() -> None:
    dp = sm.DropPath(0.5)
    x = torch.ones(4000, 3)
    assert torch.equal(dp.eval()(x), x)
    torch.manual_seed(0)
    y = dp.train()(x)
    assert set(y.unique().tolist()) <= {0.0, 2.0}
    assert abs(y.mean().item() - 1.0) < 0.1


def test_mini_presets_any_resolution_on_the_grid() -> None:
    model = sm.sequencer2d_mini28().eval()
    assert sum(p.numel() for p in model.parameters()) < 1_000_000
    with torch.no_grad():
        assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
        assert model(torch.randn(1, 1, 56, 56)).shape == (1, 10)  # 2× resolution, unchanged model
        assert model(torch.randn(1, 1, 28, 44)).shape == (1, 10)
        assert model.forward_features(torch.randn(1, 1, 28, 28)).shape == (1, 7, 7, 128)
    assert sm.sequencer2d_mini32()(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_fast28_preset() -> None:
    """One stage of 4 blocks on a 7×7 grid; its count, by hand: stem 16·128+128, per block two LayerNorms
    (4·128), four LSTMs of h=32 (4·[4·32·(128+32) + 2·4·32]), the FC 128·128+128, the MLP 128·384+384+384·128+128;
    final norm 2·128 and head 128·10+10."""
    model = sm.sequencer2d_fast28().eval()
    block = 4 * 128 + 4 * (4 * 32 * (128 + 32) + 2 * 4 * 32) + 128 * 128 + 128 + 128 * 384 + 384 + 384 * 128 + 128
    assert sum(p.numel() for p in model.parameters()) == 16 * 128 + 128 + 4 * block + 2 * 128 + 128 * 10 + 10 == 798_858
    assert sm.count_macs(model, (1, 28, 28)) == 38_636_800
    with torch.no_grad():
        assert model.forward_features(torch.randn(2, 1, 28, 28)).shape == (2, 7, 7, 128)
        assert model(torch.randn(1, 1, 56, 56)).shape == (1, 10)


def test_vanilla_and_gru_variants_run() -> None:
    vanilla = sm.Sequencer2D(layers=(1,), patch_sizes=(4,), embed_dims=(16,), hidden_sizes=(8,), mlp_ratios=(2.0,),
                             block="vanilla", num_classes=3, in_chans=1)
    assert vanilla(torch.randn(2, 1, 16, 16)).shape == (2, 3)
    gru = sm.sequencer2d_mini28(rnn="gru")
    assert gru(torch.randn(1, 1, 28, 28)).shape == (1, 10)


def test_bad_inputs_raise_value_errors_naming_expectations() -> None:
    model = sm.sequencer2d_s()
    with pytest.raises(ValueError, match="expected 3 input channels, got 1"):
        model(torch.randn(1, 1, 224, 224))
    with pytest.raises(ValueError, match=r"got a 3-D tensor of shape \(3, 224, 224\)"):
        model(torch.randn(3, 224, 224))
    with pytest.raises(ValueError, match=re.escape("multiples of 14, got 225×224")):
        model(torch.randn(1, 3, 225, 224))
    with pytest.raises(ValueError, match="one entry per stage"):
        Sequencer2DConfig(layers=(1, 2), patch_sizes=(2,))
    with pytest.raises(ValueError, match="unknown model 'sequencer2d_xl'"):
        sm.create_model("sequencer2d_xl")
    with pytest.raises(ValueError, match="PatchEmbed: height and width must be multiples of the patch size 7"):
        sm.PatchEmbed(7, 3, 8)(torch.randn(1, 3, 20, 21))
