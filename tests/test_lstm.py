"""Chapter 1-2: the from-scratch LSTM, BiLSTM and fused path equal torch.nn.LSTM exactly (float64)."""

from __future__ import annotations

import pytest
import torch
from fixtures import single_thread  # noqa: F401 (fixture)
from torch import nn

from sequencer_mini import LSTM, LSTMCell

pytestmark = pytest.mark.usefixtures("single_thread")  # tiny tensors: threads only add overhead


@pytest.fixture(autouse=True)
def float64():
    """float64 makes "equal" mean equal to round-off; restored after each test."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def _pair(in_size: int, hidden: int, bidirectional: bool, fused: bool, batch_first: bool = True, bias: bool = True):
    torch.manual_seed(0)
    ref = nn.LSTM(in_size, hidden, batch_first=batch_first, bidirectional=bidirectional, bias=bias).double()
    ours = LSTM(in_size, hidden, bidirectional=bidirectional, batch_first=batch_first, bias=bias, fused=fused).double()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("batch,steps", [(1, 1), (3, 7), (8, 16)])
def test_lstm_equals_nn_lstm_outputs_states_and_grads(bidirectional: bool, fused: bool, batch: int, steps: int) -> None:
    ref, ours = _pair(5, 6, bidirectional, fused)
    x = torch.randn(batch, steps, 5, dtype=torch.float64)
    x_ref, x_ours = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_r, (h_r, c_r) = ref(x_ref)
    out_o, (h_o, c_o) = ours(x_ours)
    torch.testing.assert_close(out_o, out_r, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(h_o, h_r, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(c_o, c_r, rtol=1e-12, atol=1e-12)
    weights = torch.randn_like(out_r)
    # A loss that touches every output and both final states, so every gradient path is checked.
    ((out_r * weights).sum() + h_r.sum() + c_r.pow(2).sum()).backward()
    ((out_o * weights).sum() + h_o.sum() + c_o.pow(2).sum()).backward()
    torch.testing.assert_close(x_ours.grad, x_ref.grad, rtol=1e-10, atol=1e-12)
    ref_grads = dict(ref.named_parameters())
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, ref_grads[name].grad, rtol=1e-10, atol=1e-12, msg=name)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_initial_state_and_time_major(bidirectional: bool) -> None:
    ref, ours = _pair(4, 3, bidirectional, fused=True, batch_first=False)
    d = 2 if bidirectional else 1
    x = torch.randn(6, 2, 4)
    h0, c0 = torch.randn(d, 2, 3), torch.randn(d, 2, 3)
    out_r, (h_r, c_r) = ref(x, (h0, c0))
    out_o, (h_o, c_o) = ours(x, (h0, c0))
    torch.testing.assert_close(out_o, out_r)
    torch.testing.assert_close(h_o, h_r)
    torch.testing.assert_close(c_o, c_r)


def test_no_bias() -> None:
    ref, ours = _pair(4, 3, True, fused=False, bias=False)
    x = torch.randn(2, 5, 4)
    torch.testing.assert_close(ours(x)[0], ref(x)[0])


def test_fused_equals_didactic_in_float32() -> None:
    torch.manual_seed(1)
    a = LSTM(16, 8, bidirectional=True, fused=False).float()
    b = LSTM(16, 8, bidirectional=True, fused=True).float()
    b.load_state_dict(a.state_dict())
    x = torch.randn(4, 12, 16, dtype=torch.float32)
    torch.testing.assert_close(a(x)[0], b(x)[0], rtol=1e-5, atol=1e-6)


def test_cell_equals_nn_lstmcell() -> None:
    torch.manual_seed(0)
    ref = nn.LSTMCell(5, 4).double()
    ours = LSTMCell(5, 4).double()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(3, 5)
    state = (torch.randn(3, 4), torch.randn(3, 4))
    for got, want in zip(ours(x, state), ref(x, state), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    for got, want in zip(ours(x), ref(x), strict=True):  # zero initial state
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("fused", [False, True])
def test_gradcheck(fused: bool) -> None:
    torch.manual_seed(0)
    lstm = LSTM(3, 2, bidirectional=True, fused=fused).double()
    x = torch.randn(2, 4, 3, requires_grad=True)
    assert torch.autograd.gradcheck(lambda inp: lstm(inp)[0], (x,))
    cell = LSTMCell(3, 2).double()
    assert torch.autograd.gradcheck(lambda inp: cell(inp)[0], (x[:, 0].detach().requires_grad_(),))


def test_state_dict_names_match_nn_lstm() -> None:
    ours = LSTM(4, 3, bidirectional=True)
    ref = nn.LSTM(4, 3, bidirectional=True, batch_first=True)
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == {
        k: tuple(v.shape) for k, v in ref.state_dict().items()
    }


def test_bad_inputs_name_what_was_expected() -> None:
    lstm = LSTM(4, 3)
    with pytest.raises(ValueError, match=r"3-D input \(B, T, C\).*\(2, 4\)"):
        lstm(torch.randn(2, 4))
    with pytest.raises(ValueError, match="expected 4 input features.*got 5"):
        lstm(torch.randn(2, 3, 5))
    with pytest.raises(ValueError, match=r"\(h_0, c_0\) of shape \(1, 2, 3\)"):
        lstm(torch.randn(2, 3, 4), (torch.zeros(2, 2, 3), torch.zeros(2, 2, 3)))
    with pytest.raises(ValueError, match=r"LSTMCell expected input of shape \(B, 4\)"):
        LSTMCell(4, 3)(torch.randn(2, 3))
    with pytest.raises(ValueError, match="positive sizes"):
        LSTM(0, 3)
