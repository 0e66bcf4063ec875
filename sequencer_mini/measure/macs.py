"""Chapter 5: counting multiply-accumulates (MACs) with the LSTMs included, and a per-stage summary.

Common counters miss the LSTMs. fvcore warns "Unsupported operator aten::lstm" and counts zero, and
:class:`torch.utils.flop_counter.FlopCounterMode` has no formula for ``aten::lstm`` either, so timm's table
lists 4.96 GMACs for Sequencer2D-S where the paper says 8.4 G. Here every matmul that
:class:`~torch.utils.flop_counter.FlopCounterMode` sees is counted (convolutions, linears, attention, our
from-scratch LSTM's gate matmuls), and a forward hook adds the gate matmuls of PyTorch's fused RNN
modules, which it cannot see:

    MACs per token and direction = G · h · (C_in + h),   G = 4 (LSTM), 3 (GRU), 1 (tanh RNN)

Attention is counted through PyTorch's math backend: on the CPU, ``F.scaled_dot_product_attention`` dispatches
to ``aten::_scaled_dot_product_flash_attention_for_cpu``, which has no FLOP formula, so a ViT's attention products
(``QKᵀ`` and ``AV``, ``2·N²·D`` MACs per layer) would count as zero; under ``sdpa_kernel(SDPBackend.MATH)``
attention is two batched matmuls, which are counted. Bias additions, softmax and element-wise gate arithmetic are
not counted, as in the paper's table.

``count_macs(..., fused_rnns=False)`` leaves the hooks out: what ``FlopCounterMode`` alone reports, the blind
spot behind timm's table, which chapters 5 and 10 set beside the full count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["count_macs", "rnn_macs", "summary", "Summary", "StageRow"]

_GATES = {nn.LSTM: 4, nn.GRU: 3, nn.RNN: 1}


def rnn_macs(module: nn.Module, x: Tensor) -> int:
    """MACs of one call of a built-in ``nn.LSTM``/``nn.GRU``/``nn.RNN`` (one layer) on ``x``."""
    gates = next(g for cls, g in _GATES.items() if isinstance(module, cls))
    rnn = cast(nn.RNNBase, module)  # every class in _GATES is one
    hidden = rnn.hidden_size
    directions = 2 if rnn.bidirectional else 1
    tokens = x.shape[0] * x.shape[1] if x.dim() == 3 else x.shape[0]  # (N, T, C): N·T steps per direction
    return int(tokens * directions * gates * hidden * (x.shape[-1] + hidden))


def _as_batch(input_shape: tuple[int, ...]) -> tuple[int, ...]:
    if len(input_shape) == 3:
        return (1, *input_shape)
    if len(input_shape) == 4:
        return tuple(input_shape)
    raise ValueError(f"input_shape must be (C, H, W) or (B, C, H, W), got {input_shape}")


@torch.no_grad()
def count_macs(model: nn.Module, input_shape: tuple[int, ...], *, fused_rnns: bool = True) -> int:
    """Multiply-accumulates of one forward pass on zeros of ``input_shape``, LSTM gate matmuls included.

    ``input_shape`` is ``(C, H, W)`` (batch 1) or ``(B, C, H, W)``; the count is for the whole batch.
    ``fused_rnns=False`` leaves out the gate matmuls of PyTorch's fused ``nn.LSTM``/``nn.GRU``/``nn.RNN``, which
    :class:`~torch.utils.flop_counter.FlopCounterMode` cannot see: the count it reports on its own (the same
    blind spot as fvcore, the counter behind the GMACs in timm's model table).
    """
    shape = _as_batch(tuple(input_shape))
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    if device.type == "meta":  # the fused LSTM decomposes on meta, and its matmuls would be counted twice
        raise ValueError("count_macs needs a model on a real device (cpu or cuda), got one on 'meta': count on the "
                         "model before .to('meta'), or build it on the CPU")
    was_training = model.training
    model.eval()
    try:
        return _module_macs(model, torch.zeros(shape, device=device), fused_rnns=fused_rnns)
    finally:
        model.train(was_training)


@dataclass
class StageRow:
    """One line of :func:`summary`: a top-level part of the model and what it produces."""

    name: str
    params: int
    macs: int
    output_shape: tuple[int, ...]


@dataclass
class Summary:
    """Parameters, MACs and output shape per stage; ``str()`` prints a table."""

    rows: list[StageRow]
    input_shape: tuple[int, ...]

    @property
    def params(self) -> int:
        return sum(r.params for r in self.rows)

    @property
    def macs(self) -> int:
        return sum(r.macs for r in self.rows)

    def __str__(self) -> str:
        lines = [f"{'part':<12}{'output shape':<22}{'params':>12}{'MACs':>16}"]
        for r in self.rows:
            lines.append(f"{r.name:<12}{str(r.output_shape):<22}{r.params:>12,}{r.macs:>16,}")
        lines.append(f"{'total':<12}{'input ' + str(self.input_shape):<22}{self.params:>12,}{self.macs:>16,}")
        return "\n".join(lines)

    __repr__ = __str__


def _parts(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Top-level parts in forward order; a Sequencer's stages are listed one by one."""
    parts: list[tuple[str, nn.Module]] = []
    for name, child in model.named_children():
        if isinstance(child, nn.Sequential) and name == "stages":
            parts += [(f"stages.{i}", stage) for i, stage in enumerate(child)]
        else:
            parts.append((name, child))
    return parts


@torch.no_grad()
def summary(model: nn.Module, input_shape: tuple[int, ...]) -> Summary:
    """Per-part parameters, MACs and output shapes for one forward pass on ``input_shape``.

    The MACs of a part are measured on the input that part really receives, so the rows add up to
    :func:`count_macs` of the whole model.
    """
    shape = _as_batch(tuple(input_shape))
    records: dict[str, tuple[Tensor, Tensor]] = {}
    parts = _parts(model)

    def make_hook(name: str):
        def hook(_m: nn.Module, inputs: tuple[Tensor, ...], out: Tensor) -> None:
            records[name] = (inputs[0], out)

        return hook

    handles = [m.register_forward_hook(make_hook(n)) for n, m in parts]
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters())
        model(torch.zeros(shape, device=param.device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    rows = []
    for name, module in parts:
        if name not in records:
            continue
        inp, out = records[name]
        macs = _module_macs(module, inp)
        params = sum(p.numel() for p in module.parameters())
        rows.append(StageRow(name, params, macs, tuple(out.shape)))
    return Summary(rows, shape)


def _module_macs(module: nn.Module, inp: Tensor, fused_rnns: bool = True) -> int:
    """MACs of ``module(inp)``: what FlopCounterMode sees, plus (``fused_rnns``) hooks for the built-in RNNs it
    cannot see."""
    hidden_rnn = 0

    def hook(m: nn.Module, inputs: tuple[Tensor, ...], _out: object) -> None:
        nonlocal hidden_rnn
        hidden_rnn += rnn_macs(m, inputs[0])

    rnns = [m for m in module.modules() if isinstance(m, tuple(_GATES))] if fused_rnns else []
    handles = [m.register_forward_hook(hook) for m in rnns]
    try:
        # The math attention backend runs scaled_dot_product_attention as visible matmuls; the fused CPU
        # kernels (e.g. flash attention for CPU) have no FLOP formula and would count as zero.
        with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            module(inp)
    finally:
        for h in handles:
            h.remove()
    return counter.get_total_flops() // 2 + hidden_rnn  # FlopCounterMode counts a MAC as 2 FLOPs
