"""Chapters 1 and 2: the LSTM cell, the LSTM layer and the bidirectional LSTM, from scratch.

Everything here is written with plain tensor operations so that a reader can follow each gate, yet the
parameters have exactly the names and shapes of :class:`torch.nn.LSTM` (``weight_ih_l0`` of shape
``(4h, in)``, ``weight_hh_l0`` of shape ``(4h, h)``, ``bias_ih_l0``, ``bias_hh_l0`` and the ``_reverse``
twins), with the gates stacked in PyTorch's order **i, f, g, o**. So
``LSTM(...).load_state_dict(nn_lstm.state_dict(), strict=True)`` works and the two give the same numbers.

The cell equations (Hochreiter & Schmidhuber 1997, with the forget gate of Gers et al. 2000)::

    i_t = σ(W_ii x_t + b_ii + W_hi h_{t-1} + b_hi)      input gate
    f_t = σ(W_if x_t + b_if + W_hf h_{t-1} + b_hf)      forget gate
    g_t = tanh(W_ig x_t + b_ig + W_hg h_{t-1} + b_hg)   candidate cell
    o_t = σ(W_io x_t + b_io + W_ho h_{t-1} + b_ho)      output gate
    c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t
    h_t = o_t ⊙ tanh(c_t)

Two paths compute the same thing:

* the *didactic* path (``fused=False``) slices the four gate matrices apart and runs :class:`LSTMCell` one
  step at a time, exactly as the equations read;
* the *fused* path (``fused=True``) projects the inputs of **all** time steps with one matmul before the
  loop (the input projection does not depend on ``h``), runs both directions in one batched loop, computes
  all four gates with one ``(B, h) @ (h, 4h)`` matmul per step, and back-propagates through time with a
  hand-written backward (:class:`LSTMScan`) instead of recording every gate for autograd. It is the same
  arithmetic in a different order: equal to float64 round-off, within float32 tolerance.
"""

import math

import torch
from einops import rearrange
from torch import Tensor, nn

__all__ = ["LSTMCell", "LSTM", "LSTMScan", "lstm_cell", "lstm_cell_step"]

LSTMState = tuple[Tensor, Tensor]


def lstm_cell(
    x: Tensor,
    state: LSTMState,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor | None,
    bias_hh: Tensor | None,
) -> LSTMState:
    """One LSTM step written gate by gate, exactly as the equations read.

    Args:
        x: ``(B, in)``; state: ``(h, c)``, each ``(B, h)``.
        weight_ih: ``(4h, in)``, weight_hh: ``(4h, h)``, biases ``(4h,)`` or ``None``; gates stacked i, f, g, o.

    Returns:
        ``(h_t, c_t)``, each ``(B, h)``.
    """
    h, c = state
    h_size = weight_hh.shape[1]
    # Slice the stacked weights into the four gates so each line below is one equation.
    w_i, w_f, w_g, w_o = weight_ih.split(h_size)
    u_i, u_f, u_g, u_o = weight_hh.split(h_size)
    if bias_ih is not None and bias_hh is not None:
        b_i, b_f, b_g, b_o = (bias_ih + bias_hh).split(h_size)
    else:
        b_i = b_f = b_g = b_o = x.new_zeros(h_size)
    i = torch.sigmoid(x @ w_i.t() + h @ u_i.t() + b_i)  # how much new content to write
    f = torch.sigmoid(x @ w_f.t() + h @ u_f.t() + b_f)  # how much old memory to keep
    g = torch.tanh(x @ w_g.t() + h @ u_g.t() + b_g)  # the new content itself
    o = torch.sigmoid(x @ w_o.t() + h @ u_o.t() + b_o)  # how much memory to show
    c = f * c + i * g
    h = o * torch.tanh(c)
    return h, c


def lstm_cell_step(
    x_proj: Tensor, h: Tensor, c: Tensor, weight_hh: Tensor, bias_hh: Tensor | None
) -> LSTMState:
    """One fused LSTM step: all four gates from one matmul (the step chapter 1 shows; :class:`LSTMScan` runs
    the same arithmetic for every step and both directions, with a hand-written backward).

    Args:
        x_proj: ``(B, 4h)`` the input projection ``x_t W_ih^T + b_ih``, already computed.
        h, c: ``(B, h)`` the previous hidden and cell state.
        weight_hh: ``(4h, h)``; bias_hh: ``(4h,)`` or ``None``.

    Returns:
        ``(h_t, c_t)``, each ``(B, h)``.
    """
    gates = x_proj + h @ weight_hh.t()
    if bias_hh is not None:
        gates = gates + bias_hh
    i, f, g, o = gates.chunk(4, dim=-1)  # PyTorch's gate order: i, f, g, o
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(c)
    return h, c


class LSTMCell(nn.Module):
    """A single LSTM cell with explicit gates, parameter-compatible with :class:`torch.nn.LSTMCell`.

    Shapes: ``x`` is ``(B, input_size)``; ``h`` and ``c`` are ``(B, hidden_size)``.
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True) -> None:
        super().__init__()
        if input_size <= 0 or hidden_size <= 0:
            raise ValueError(
                f"LSTMCell needs positive sizes, got input_size={input_size}, hidden_size={hidden_size}"
            )
        self.input_size, self.hidden_size = input_size, hidden_size
        self.weight_ih = nn.Parameter(torch.empty(4 * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(4 * hidden_size, hidden_size))
        if bias:
            self.bias_ih = nn.Parameter(torch.empty(4 * hidden_size))
            self.bias_hh = nn.Parameter(torch.empty(4 * hidden_size))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """U(-1/√h, 1/√h) for every parameter: PyTorch's LSTM default, and the Sequencer init."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def forward(self, x: Tensor, state: LSTMState | None = None) -> LSTMState:
        """``x: (B, in)``, ``state: ((B, h), (B, h))`` or ``None`` (zeros) → ``(h_t, c_t)``."""
        if x.dim() != 2 or x.shape[-1] != self.input_size:
            raise ValueError(
                f"LSTMCell expected input of shape (B, {self.input_size}), got {tuple(x.shape)}"
            )
        if state is None:
            zeros = x.new_zeros(x.shape[0], self.hidden_size)
            state = (zeros, zeros)
        return lstm_cell(x, state, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)


class LSTM(nn.Module):
    """A one-layer (Bi)LSTM from scratch with the interface and state dict of :class:`torch.nn.LSTM`.

    Args:
        input_size: features per time step ``C``.
        hidden_size: ``h``; the output has ``h`` features, or ``2h`` when bidirectional.
        bidirectional: also run a second LSTM over the reversed sequence (chapter 2), whose outputs are
            concatenated after the forward ones, ``[forward | backward]``, as PyTorch does.
        batch_first: input ``(B, T, C)`` if True (the default here, as in Sequencer), else ``(T, B, C)``.
        bias: learn ``b_ih`` and ``b_hh``.
        fused: use the fused fast path (one input projection for all steps, one matmul for four gates)
            instead of the step-by-step :class:`LSTMCell` path. Both give the same result.

    Forward:
        ``x``: ``(B, T, C)``; optional ``(h_0, c_0)``, each ``(D, B, h)`` with ``D = 2 if bidirectional
        else 1``. Returns ``output (B, T, D·h)`` and ``(h_n, c_n)``, each ``(D, B, h)``.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bidirectional: bool = False,
        batch_first: bool = True,
        bias: bool = True,
        fused: bool = False,
    ) -> None:
        super().__init__()
        if input_size <= 0 or hidden_size <= 0:
            raise ValueError(
                f"LSTM needs positive sizes, got input_size={input_size}, hidden_size={hidden_size}"
            )
        self.input_size, self.hidden_size = input_size, hidden_size
        self.bidirectional, self.batch_first, self.bias, self.fused = (
            bidirectional,
            batch_first,
            bias,
            fused,
        )
        self.num_layers = 1
        suffixes = ["", "_reverse"] if bidirectional else [""]
        for sfx in suffixes:
            setattr(self, f"weight_ih_l0{sfx}", nn.Parameter(torch.empty(4 * hidden_size, input_size)))
            setattr(self, f"weight_hh_l0{sfx}", nn.Parameter(torch.empty(4 * hidden_size, hidden_size)))
            if bias:
                setattr(self, f"bias_ih_l0{sfx}", nn.Parameter(torch.empty(4 * hidden_size)))
                setattr(self, f"bias_hh_l0{sfx}", nn.Parameter(torch.empty(4 * hidden_size)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """U(-1/√h, 1/√h) for every parameter, as :class:`torch.nn.LSTM` and the Sequencer code."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def extra_repr(self) -> str:
        return (
            f"{self.input_size}, {self.hidden_size}, bidirectional={self.bidirectional}, "
            f"batch_first={self.batch_first}, fused={self.fused}"
        )

    def _weights(self, sfx: str) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        b_ih = getattr(self, f"bias_ih_l0{sfx}") if self.bias else None
        b_hh = getattr(self, f"bias_hh_l0{sfx}") if self.bias else None
        return getattr(self, f"weight_ih_l0{sfx}"), getattr(self, f"weight_hh_l0{sfx}"), b_ih, b_hh

    def _run_direction(self, x: Tensor, h: Tensor, c: Tensor, sfx: str) -> tuple[Tensor, Tensor, Tensor]:
        """Didactic path: one direction over ``x: (B, T, C)`` from ``(h, c): (B, h)``, one cell call per step.

        Returns the outputs ``(B, T, h)`` and the final ``h_T``, ``c_T``; autograd records every gate.
        """
        w_ih, w_hh, b_ih, b_hh = self._weights(sfx)
        outputs: list[Tensor] = []
        for t in range(x.shape[1]):
            h, c = lstm_cell(x[:, t], (h, c), w_ih, w_hh, b_ih, b_hh)
            outputs.append(h)
        return torch.stack(outputs, dim=1), h, c

    def _run_fused(self, x: Tensor, h0: Tensor, c0: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Fused path: both directions at once, ``x: (B, T, C)``, ``h0, c0: (D, B, h)`` → ``(B, T, D·h)``, h_n, c_n."""
        suffixes = ["", "_reverse"] if self.bidirectional else [""]
        weights = [self._weights(sfx) for sfx in suffixes]
        # The backward direction is the forward recurrence run on the time-reversed sequence, so stack the
        # two directions as a leading axis D and run one recurrence with batched (bmm) matmuls.
        xs = torch.stack([x, x.flip(1)][: len(suffixes)])  # (D, B, T, C)
        w_ih = torch.stack([w[0] for w in weights])  # (D, 4h, C)
        w_hh = torch.stack([w[1] for w in weights])  # (D, 4h, h)
        # The input projection does not depend on h: one matmul for every step and direction.
        x_proj = torch.einsum("dbtc,dgc->dbtg", xs, w_ih)
        if self.bias:
            # b_ih + b_hh per direction, (D, 4h); with self.bias neither is None (the test only tells mypy so)
            bias = torch.stack([b_ih + b_hh for _, _, b_ih, b_hh in weights if b_ih is not None and b_hh is not None])
            x_proj = x_proj + rearrange(bias, "d g -> d 1 1 g")
        hs, h_n, c_n = LSTMScan.apply(x_proj, w_hh, h0, c0)  # hs: (D, B, T, h)
        outs = [hs[0]] + ([hs[1].flip(1)] if self.bidirectional else [])  # undo the time reversal
        return torch.cat(outs, dim=-1), h_n, c_n

    def forward(self, x: Tensor, state: LSTMState | None = None) -> tuple[Tensor, LSTMState]:
        if x.dim() != 3:
            layout = "(B, T, C)" if self.batch_first else "(T, B, C)"
            raise ValueError(f"LSTM expected a 3-D input {layout}, got shape {tuple(x.shape)}")
        if x.shape[-1] != self.input_size:
            raise ValueError(
                f"LSTM expected {self.input_size} input features in the last dim, got {x.shape[-1]} "
                f"(input shape {tuple(x.shape)})"
            )
        if not self.batch_first:
            x = x.transpose(0, 1)
        batch = x.shape[0]
        directions = 2 if self.bidirectional else 1
        if state is None:
            zeros = x.new_zeros(directions, batch, self.hidden_size)
            h0, c0 = zeros, zeros
        else:
            h0, c0 = state
            expected = (directions, batch, self.hidden_size)
            if tuple(h0.shape) != expected or tuple(c0.shape) != expected:
                raise ValueError(
                    f"LSTM expected (h_0, c_0) of shape {expected}, got {tuple(h0.shape)} and {tuple(c0.shape)}"
                )
        if self.fused:
            output, h_n, c_n = self._run_fused(x, h0, c0)
            if not self.batch_first:
                output = output.transpose(0, 1)
            return output, (h_n, c_n)
        out_f, h_f, c_f = self._run_direction(x, h0[0], c0[0], "")
        outs, hs, cs = [out_f], [h_f], [c_f]
        if self.bidirectional:
            # The backward LSTM reads the sequence from the end; flip its outputs back so that
            # position t of the output holds both directions' view of token t.
            out_b, h_b, c_b = self._run_direction(x.flip(1), h0[1], c0[1], "_reverse")
            outs.append(out_b.flip(1))
            hs.append(h_b)
            cs.append(c_b)
        output = torch.cat(outs, dim=-1)
        if not self.batch_first:
            output = output.transpose(0, 1)
        return output, (torch.stack(hs), torch.stack(cs))


class LSTMScan(torch.autograd.Function):
    """The LSTM recurrence with back-propagation through time written by hand.

    Forward: ``x_proj (D, B, T, 4h)`` (input projections with both biases), ``w_hh (D, 4h, h)``,
    ``h0, c0 (D, B, h)`` → ``hs (D, B, T, h)``, ``h_n``, ``c_n``. ``D`` independent recurrences (the two
    directions) run together. The gate activations of every step are kept for the backward pass.

    Backward, step ``t`` from last to first, with ``δh`` and ``δc`` flowing back from step ``t+1``::

        δh += ∂L/∂h_t                      (the output at t)
        δo  = δh ⊙ tanh(c_t)               δc += δh ⊙ o ⊙ (1 - tanh²(c_t))
        δi  = δc ⊙ g    δg = δc ⊙ i    δf = δc ⊙ c_{t-1}    δc ← δc ⊙ f
        δz  = [δi·i(1-i), δf·f(1-f), δg·(1-g²), δo·o(1-o)]     (through σ and tanh)
        δh  ← δz W_hh                       (to step t-1)

    and the weight gradient ``∂L/∂W_hh = Σ_t δz_tᵀ h_{t-1}`` is one matmul over all steps at the end.
    """

    @staticmethod
    def forward(ctx, x_proj: Tensor, w_hh: Tensor, h0: Tensor, c0: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        d, b, steps, four_h = x_proj.shape
        h_size = four_h // 4
        w_hh_t = w_hh.transpose(1, 2)  # (D, h, 4h)
        acts = x_proj.new_empty(d, b, steps, four_h)  # σ(i), σ(f), tanh(g), σ(o) per step
        cs = x_proj.new_empty(d, b, steps + 1, h_size)  # c_{-1}=c0, c_0, ..., c_{T-1}
        hs = x_proj.new_empty(d, b, steps + 1, h_size)  # h_{-1}=h0, h_0, ..., h_{T-1}
        hs[:, :, 0], cs[:, :, 0] = h0, c0
        h, c = h0, c0
        for t in range(steps):
            gates = torch.baddbmm(x_proj[:, :, t], h, w_hh_t)  # (D, B, 4h): all four gates, one matmul
            a = acts[:, :, t]
            torch.sigmoid(gates, out=a)  # σ on all four (the g slot is overwritten next)
            torch.tanh(gates[..., 2 * h_size : 3 * h_size], out=a[..., 2 * h_size : 3 * h_size])
            i, f, g, o = a.chunk(4, dim=-1)
            c = torch.addcmul(f * c, i, g)  # c_t = f ⊙ c_{t-1} + i ⊙ g
            h = o * torch.tanh(c)
            cs[:, :, t + 1], hs[:, :, t + 1] = c, h
        ctx.save_for_backward(w_hh, acts, cs, hs)
        return hs[:, :, 1:].clone(), h, c

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_hs: Tensor, grad_hn: Tensor, grad_cn: Tensor):
        w_hh, acts, cs, hs = ctx.saved_tensors
        steps = acts.shape[2]
        h_size = w_hh.shape[-1]
        grad_z = torch.empty_like(acts)  # δ of the pre-activation gates, (D, B, T, 4h)
        dh = grad_hn if grad_hn is not None else torch.zeros_like(hs[:, :, 0])
        dc = grad_cn if grad_cn is not None else torch.zeros_like(cs[:, :, 0])
        for t in reversed(range(steps)):
            if grad_hs is not None:
                dh = dh + grad_hs[:, :, t]
            i, f, g, o = acts[:, :, t].chunk(4, dim=-1)
            tanh_c = torch.tanh(cs[:, :, t + 1])
            dc = dc + dh * o * (1 - tanh_c * tanh_c)
            dz = grad_z[:, :, t]
            dz[..., :h_size] = dc * g * i * (1 - i)
            dz[..., h_size : 2 * h_size] = dc * cs[:, :, t] * f * (1 - f)
            dz[..., 2 * h_size : 3 * h_size] = dc * i * (1 - g * g)
            dz[..., 3 * h_size :] = dh * tanh_c * o * (1 - o)
            dc = dc * f
            dh = torch.bmm(dz, w_hh)  # back through h_{t-1} W_hhᵀ
        # Weight gradient for all steps at once: Σ_t δz_tᵀ h_{t-1}.
        grad_w_hh = torch.einsum("dbtg,dbth->dgh", grad_z, hs[:, :, :-1])
        return grad_z, grad_w_hh, dh, dc
