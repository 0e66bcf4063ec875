"""Chapter 4: BiLSTM2D (scratch backend) == BiLSTM2D (torch backend) == timm's LSTM2d, every union mode."""

from __future__ import annotations

import pytest
import torch
from fixtures import single_thread  # noqa: F401 (fixture)
from timm.models.sequencer import LSTM2d

from sequencer_mini import BiLSTM2D, FlatBiLSTM, VanillaSequencerBlock

pytestmark = pytest.mark.usefixtures("single_thread")  # tiny tensors: threads only add overhead

CASES = [
    ("cat", True, 16, 4),
    ("add", True, 16, 4),
    ("vertical", True, 16, 4),
    ("horizontal", True, 16, 4),
    ("cat", False, 16, 4),  # without FC: 4h must equal C
    ("add", False, 16, 8),  # without FC: 2h must equal C
    ("vertical", False, 16, 8),
    ("horizontal", False, 16, 8),
]


@pytest.mark.parametrize("union,with_fc,channels,hidden", CASES)
def test_scratch_equals_torch_equals_timm(union: str, with_fc: bool, channels: int, hidden: int) -> None:
    torch.manual_seed(0)
    ref = LSTM2d(channels, hidden, union=union, with_fc=with_fc).double()
    for p in ref.parameters():  # random weights everywhere, biases included
        torch.nn.init.normal_(p, std=0.3)
    torch_backend = BiLSTM2D(channels, hidden, union=union, with_fc=with_fc, backend="torch").double()
    scratch = BiLSTM2D(channels, hidden, union=union, with_fc=with_fc, backend="scratch").double()
    torch_backend.load_state_dict(ref.state_dict(), strict=True)
    scratch.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 5, 3, channels, dtype=torch.float64)  # non-square H≠W catches transposed axes
    want = ref(x)
    torch.testing.assert_close(torch_backend(x), want, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(scratch(x), want, rtol=1e-10, atol=1e-10)
    assert want.shape == (2, 5, 3, channels)


def test_unidirectional_matches_timm() -> None:
    torch.manual_seed(0)
    ref = LSTM2d(8, 4, bidirectional=False).double()
    ours = BiLSTM2D(8, 4, bidirectional=False, backend="scratch").double()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(1, 4, 6, 8, dtype=torch.float64)
    torch.testing.assert_close(ours(x), ref(x))


def test_concatenation_order_is_v_then_h() -> None:
    """With fc removed, channels are [v_fwd | v_bwd | h_fwd | h_bwd]; zeroing rnn_h must zero the last half."""
    layer = BiLSTM2D(8, 2, union="cat", with_fc=False)
    with torch.no_grad():
        for p in layer.rnn_h.parameters():
            p.zero_()  # all gates 0.5, candidate 0 → h stays exactly 0
    out = layer(torch.randn(1, 3, 3, 8))
    assert torch.all(out[..., 4:] == 0) and torch.any(out[..., :4] != 0)


def test_receptive_field_of_one_layer_is_a_cross() -> None:
    torch.manual_seed(0)
    layer = BiLSTM2D(4, 2).double()
    x = torch.randn(1, 7, 7, 4, dtype=torch.float64, requires_grad=True)
    layer(x)[0, 3, 3].sum().backward()
    grad = x.grad.abs().sum(-1)[0]
    cross = torch.zeros(7, 7, dtype=torch.bool)
    cross[3, :] = True
    cross[:, 3] = True
    assert torch.all(grad[~cross] == 0)
    assert torch.all(grad[cross] > 0)


def test_vanilla_block_is_flat_bilstm() -> None:
    torch.manual_seed(0)
    flat = FlatBiLSTM(6, 3)
    x = torch.randn(2, 4, 5, 6)
    seq = x.reshape(2, 20, 6)
    torch.testing.assert_close(flat(x), flat.rnn(seq)[0].reshape(2, 4, 5, 6))
    block = VanillaSequencerBlock(6, 3)
    assert block(x).shape == x.shape
    with pytest.raises(ValueError, match="output width to equal dim"):
        VanillaSequencerBlock(6, 4)


def test_bad_arguments_and_inputs() -> None:
    with pytest.raises(ValueError, match="union must be one of"):
        BiLSTM2D(8, 2, union="mul")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="with_fc=False needs the mixed width to equal input_size"):
        BiLSTM2D(8, 4, with_fc=False)
    with pytest.raises(ValueError, match="backend must be one of"):
        BiLSTM2D(8, 2, backend="cudnn")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="implements only rnn='lstm'"):
        BiLSTM2D(8, 2, backend="scratch", rnn="gru")
    layer = BiLSTM2D(8, 2)
    with pytest.raises(ValueError, match=r"channels-last input \(B, H, W, 8\), got \(1, 8, 4, 4\)"):
        layer(torch.randn(1, 8, 4, 4))
