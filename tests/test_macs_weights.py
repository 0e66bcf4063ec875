"""Chapter 5: MACs with the LSTMs counted, the per-stage summary, and loading timm/official weights."""

from __future__ import annotations

import pytest
import timm
import torch
from fixtures import single_thread  # noqa: F401 (fixture)
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import sequencer_mini as sm
from sequencer_mini.measure.macs import rnn_macs

pytestmark = pytest.mark.usefixtures("single_thread")

# The paper's 8.4 / 11.1 / 16.6 G at 224×224 (README "FLOPs"), and the exact counts behind them: count_macs on one
# 224×224 image, and what FlopCounterMode alone sees (the LSTMs missing; the count behind timm's table).
PAPER_MACS = {"sequencer2d_s": 8.33e9, "sequencer2d_m": 11.05e9, "sequencer2d_l": 16.49e9}
MACS = {"sequencer2d_s": 8_334_007_296, "sequencer2d_m": 11_051_916_288, "sequencer2d_l": 16_487_734_272}
FLOP_COUNTER_MACS = {"sequencer2d_s": 4_936_621_056}


@pytest.fixture(scope="module", params=list(PAPER_MACS))
def preset(request) -> tuple[str, nn.Module]:
    """One full-size preset, built once for the module (and released before the next)."""
    return request.param, sm.create_model(request.param).eval()


@pytest.fixture(scope="module")
def timm_s() -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model("sequencer2d_s")


def _lstm_macs(config, side: int) -> int:
    """The LSTMs' gate matmuls of a Sequencer2D by the formula of chapter 5: per token of a stage's grid,
    2 axes × 2 directions × 4 gates × h × (C + h)."""
    total = 0
    for depth, patch, c, h in zip(config.layers, config.patch_sizes, config.embed_dims, config.hidden_sizes,
                                  strict=True):
        side //= patch
        total += depth * side * side * 2 * 2 * 4 * h * (c + h)
    return total


def test_count_macs_matches_the_paper_within_one_percent(preset) -> None:
    name, model = preset
    macs = sm.count_macs(model, (3, 224, 224))
    assert macs == MACS[name]
    assert abs(macs / PAPER_MACS[name] - 1) < 0.01


@pytest.mark.parametrize("preset", ["sequencer2d_s"], indirect=True)
def test_flop_counter_alone_misses_the_lstms(preset) -> None:
    """The teaching point of chapter 5: FlopCounterMode sees 4.94 G of Sequencer2D-S's 8.33 G; what it misses is
    exactly the LSTMs' gate matmuls."""
    name, model = preset
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, 224, 224))
    seen = counter.get_total_flops() // 2
    assert seen == FLOP_COUNTER_MACS[name]
    assert abs(seen / 4.94e9 - 1) < 0.01
    assert MACS[name] - seen == _lstm_macs(model.config, 224)


def _hand_count_mini28() -> int:
    """MACs of sequencer2d_mini28 on one 28×28 image, by the formula of chapter 5."""
    def block(tokens: int, c: int, h: int, ratio: float = 3.0) -> int:
        lstm = 2 * 2 * 4 * h * (c + h)  # 2 axes × 2 directions × 4 gates × h × (C + h)
        fc = 4 * h * c
        mlp = 2 * c * int(ratio * c)
        return tokens * (lstm + fc + mlp)

    stem = 14 * 14 * 64 * (1 * 2 * 2)
    down = 7 * 7 * 128 * (64 * 2 * 2)
    head = 128 * 10
    return stem + 2 * block(14 * 14, 64, 16) + down + 4 * block(7 * 7, 128, 32) + head


def test_count_macs_equals_hand_count_and_backends_agree() -> None:
    want = _hand_count_mini28()
    assert sm.count_macs(sm.sequencer2d_mini28(), (1, 28, 28)) == want
    assert sm.count_macs(sm.sequencer2d_mini28(backend="scratch"), (1, 28, 28)) == want
    assert sm.count_macs(sm.sequencer2d_mini28(), (4, 1, 28, 28)) == 4 * want


def test_rnn_macs_formula() -> None:
    x = torch.zeros(3, 5, 8)
    assert rnn_macs(nn.LSTM(8, 4, batch_first=True, bidirectional=True), x) == 3 * 5 * 2 * 4 * 4 * (8 + 4)
    assert rnn_macs(nn.GRU(8, 4, batch_first=True), x) == 3 * 5 * 3 * 4 * (8 + 4)


def test_summary_rows_add_up() -> None:
    model = sm.sequencer2d_mini28()
    table = sm.summary(model, (1, 28, 28))
    names = [r.name for r in table.rows]
    assert names == ["stem", "stages.0", "stages.1", "norm", "head"]
    assert table.params == sum(p.numel() for p in model.parameters())
    assert table.macs == sm.count_macs(model, (1, 28, 28))
    assert table.rows[2].output_shape == (1, 7, 7, 128)
    assert "total" in str(table)
    with pytest.raises(ValueError, match=r"input_shape must be \(C, H, W\) or \(B, C, H, W\)"):
        sm.count_macs(model, (28, 28))


def _official_format(sd: dict[str, torch.Tensor], layers: tuple[int, ...]) -> dict[str, torch.Tensor]:
    """Write a timm state dict in the official release's key layout (inverse of the converter)."""
    out = {}
    for key, value in sd.items():
        parts = key.split(".")
        if key.startswith("stages.") and parts[2] == "downsample":
            stage = int(parts[1]) - 1
            out[f"blocks.{stage}.{layers[stage]}.down." + ".".join(parts[4:])] = value
        elif key.startswith("stages."):
            out[f"blocks.{parts[1]}.{parts[3]}." + ".".join(parts[4:])] = value
        elif key.startswith("head.fc."):
            out["head." + key[len("head.fc."):]] = value
        else:
            out[key] = value
    return out


def test_official_checkpoint_converts_and_loads_strictly(timm_s) -> None:
    ref = timm_s
    official = {"model": _official_format(ref.state_dict(), (4, 3, 8, 3))}
    assert "blocks.0.4.down.weight" in official["model"] and "head.weight" in official["model"]
    converted = sm.convert_official_state_dict(official)
    assert set(converted) == set(ref.state_dict())
    model = sm.load_weights(sm.sequencer2d_s(), official)
    torch.testing.assert_close(model.state_dict()["head.fc.bias"], ref.state_dict()["head.fc.bias"])


def test_bad_state_dicts_raise_runtime_errors_listing_keys() -> None:
    sd = sm.sequencer2d_mini28().state_dict()
    missing = {k: v for k, v in sd.items() if not k.startswith("norm.")}
    with pytest.raises(RuntimeError, match=r"2 missing key\(s\), e.g. \['norm.bias', 'norm.weight'\]"):
        sm.load_weights(sm.sequencer2d_mini28(), missing)
    extra = {**sd, "pos_embed": torch.zeros(1)}
    with pytest.raises(RuntimeError, match=r"1 unexpected key\(s\), e.g. \['pos_embed'\]"):
        sm.load_weights(sm.sequencer2d_mini28(), extra)
    with pytest.raises(RuntimeError, match=r"head.fc.weight: model \(100, 128\) vs checkpoint \(10, 128\)"):
        sm.load_weights(sm.sequencer2d_mini28(num_classes=100), sd)


def test_pretrained_offline_fails_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    import sequencer_mini.interop.weights as weights

    def offline(host: str, timeout: float = 3.0) -> None:
        raise ConnectionError(f"no network connection to {host} (test: offline)")

    monkeypatch.setattr(weights, "_check_reachable", offline)
    with pytest.raises(RuntimeError) as info:
        sm.pretrained("sequencer2d_s")
    msg = str(info.value)
    assert "needs internet" in msg
    assert "Hugging Face Hub 'timm/sequencer2d_s.in1k'" in msg
    assert "releases/download/weights/sequencer2d_s.pth" in msg
    with pytest.raises(ValueError, match="pretrained weights exist for"):
        sm.pretrained("sequencer2d_xs")
    with pytest.raises(RuntimeError, match="does not exist"):
        sm.pretrained("sequencer2d_s", checkpoint="/nonexistent/sequencer2d_s.pth")


def test_pretrained_from_a_local_official_file(tmp_path, timm_s) -> None:
    ref = timm_s
    path = tmp_path / "sequencer2d_s.pth"
    torch.save(_official_format(ref.state_dict(), (4, 3, 8, 3)), path)
    model = sm.pretrained("sequencer2d_s", checkpoint=path)
    torch.testing.assert_close(model.state_dict()["stem.proj.weight"], ref.state_dict()["stem.proj.weight"])


def test_count_macs_includes_attention() -> None:
    """Fused CPU attention kernels have no FLOP formula; count_macs must still count QKᵀ and AV exactly."""
    from sequencer_mini.models.baselines import small_vit

    model = small_vit().eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 1, 28, 28))
    seen = counter.get_total_flops() // 2
    tokens, dim, depth = 7 * 7 + 1, model.pos_embed.shape[-1], len(model.blocks)
    attention = depth * 2 * tokens * tokens * dim  # QKᵀ and AV, all heads together
    # Either the default kernel was visible to FlopCounterMode (difference 0) or it missed exactly the attention.
    assert sm.count_macs(model, (1, 28, 28)) - seen in (0, attention)


def test_count_macs_refuses_the_meta_device():
    """On 'meta' the fused LSTM decomposes and would be counted twice: a clear error, not a wrong number."""
    model = sm.sequencer2d_fast28().to("meta")
    with pytest.raises(ValueError, match="real device"):
        sm.count_macs(model, (1, 28, 28))
