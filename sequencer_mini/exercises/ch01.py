"""Chapter 1: an LSTM cell from its equations, as a module with ``nn.LSTMCell``'s parameters.

The learner writes ``MyLSTMCell(input_size, hidden_size)`` holding ``weight_ih (4h, in)``, ``weight_hh (4h, h)``,
``bias_ih`` and ``bias_hh (4h,)``, whose ``forward(x, (h, c))`` returns ``(h_t, c_t)``. The check builds it,
compares its parameter names and shapes with ``nn.LSTMCell``'s, loads the same weights into both, and compares
the outputs and the gradients with respect to the input and every parameter.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from sequencer_mini.exercises.checking import Case, Exercise, Mistake, refuse

__all__ = ["LSTMCellSolution", "lstm_cell"]


class LSTMCellSolution(nn.Module):
    """The reference: the four gates from one stacked product, in PyTorch's order i, f, g, o."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.weight_ih = nn.Parameter(torch.zeros(4 * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.zeros(4 * hidden_size, hidden_size))
        self.bias_ih = nn.Parameter(torch.zeros(4 * hidden_size))
        self.bias_hh = nn.Parameter(torch.zeros(4 * hidden_size))

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        h, c = state
        gates = x @ self.weight_ih.T + self.bias_ih + h @ self.weight_hh.T + self.bias_hh
        i, f, g, o = gates.chunk(4, dim=-1)
        i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
        c = f * c + i * g
        h = o * torch.tanh(c)
        return h, c


class _GatesIGFO(LSTMCellSolution):
    def forward(self, x: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        h, c = state
        gates = x @ self.weight_ih.T + self.bias_ih + h @ self.weight_hh.T + self.bias_hh
        i, g, f, o = gates.chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c


class _HiddenWithoutTanh(LSTMCellSolution):
    def forward(self, x: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        h, c = state
        gates = x @ self.weight_ih.T + self.bias_ih + h @ self.weight_hh.T + self.bias_hh
        i, f, g, o = gates.chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * c, c


class _SigmoidCandidate(LSTMCellSolution):
    def forward(self, x: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        h, c = state
        gates = x @ self.weight_ih.T + self.bias_ih + h @ self.weight_hh.T + self.bias_hh
        i, f, g, o = gates.sigmoid().chunk(4, dim=-1)
        c = f * c + i * g
        return o * torch.tanh(c), c


class _NoForgetGate(LSTMCellSolution):
    def forward(self, x: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        h, c = state
        gates = x @ self.weight_ih.T + self.bias_ih + h @ self.weight_hh.T + self.bias_hh
        i, f, g, o = gates.chunk(4, dim=-1)
        c = c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c


class _OneBias(LSTMCellSolution):
    def forward(self, x: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        h, c = state
        gates = x @ self.weight_ih.T + self.bias_ih + h @ self.weight_hh.T
        i, f, g, o = gates.chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c


class _TransposedWeights(LSTMCellSolution):
    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__(input_size, hidden_size)
        self.weight_ih = nn.Parameter(torch.zeros(input_size, 4 * hidden_size))
        self.weight_hh = nn.Parameter(torch.zeros(hidden_size, 4 * hidden_size))

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        h, c = state
        gates = x @ self.weight_ih + self.bias_ih + h @ self.weight_hh + self.bias_hh
        i, f, g, o = gates.chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c


def _run(answer: Any, inputs: dict[str, Any]) -> Any:
    """Build the learner's cell, check its parameters against ``nn.LSTMCell``'s, load the same weights, step."""
    d, hid = inputs["input_size"], inputs["hidden_size"]
    with torch.random.fork_rng():
        torch.manual_seed(inputs["seed"])
        ref = nn.LSTMCell(d, hid)
    try:
        cell = answer(d, hid)
    except NotImplementedError:
        raise
    except Exception as err:  # the learner's constructor: a sentence, never a traceback
        return refuse(f"building your cell with ({d}, {hid}) raised {type(err).__name__}: {err}")
    if not isinstance(cell, nn.Module):
        return refuse(f"your class should be an nn.Module; calling it gave {type(cell).__name__}")
    params = dict(cell.named_parameters())
    expected = dict(ref.named_parameters())
    for name, p in expected.items():
        if name not in params:
            return refuse(f"your cell has no parameter {name!r}; nn.LSTMCell's are weight_ih (4h, in), "
                          f"weight_hh (4h, h), bias_ih (4h,) and bias_hh (4h,)")
        if params[name].shape != p.shape:
            return refuse(f"parameter {name} has shape {tuple(params[name].shape)}, nn.LSTMCell's has "
                          f"{tuple(p.shape)} (in = {d}, h = {hid}): PyTorch stores a weight as (outputs, inputs), "
                          f"the four gates' rows stacked, and computes x @ W.T")
    extra = sorted(set(params) - set(expected))
    if extra:
        return refuse(f"your cell has parameters nn.LSTMCell does not: {', '.join(extra)}")
    cell.load_state_dict(ref.state_dict())
    inputs["cell"] = cell
    return cell(inputs["x"], (inputs["h"], inputs["c"]))


def _case(batch: int, d: int, hid: int, seed: int) -> Case:
    def make() -> dict[str, Any]:
        g = torch.Generator().manual_seed(seed)
        return {"x": torch.randn(batch, d, generator=g, requires_grad=True),
                "h": torch.randn(batch, hid, generator=g), "c": torch.randn(batch, hid, generator=g),
                "input_size": d, "hidden_size": hid, "seed": seed}
    return Case(f"x of shape ({batch}, {d}), h and c of shape ({batch}, {hid})", make)


lstm_cell = Exercise(
    name="lstm_cell",
    chapter=1,
    task="Write MyLSTMCell(input_size, hidden_size), an nn.Module with nn.LSTMCell's four parameters "
         "(weight_ih (4h, in), weight_hh (4h, h), bias_ih and bias_hh (4h,)), whose forward(x, (h, c)) returns "
         "(h_t, c_t) computed from the LSTM equations.",
    reference=LSTMCellSolution,
    mistakes={
        "gate order i, g, f, o": Mistake(
            _GatesIGFO, "This is what happens when the gates come out in the order i, g, f, o; PyTorch's order "
                        "is i, f, g, o (input, forget, candidate, output), so chunk(4) gives i, f, g, o."),
        "h without tanh": Mistake(
            _HiddenWithoutTanh, "Your hidden state looks like o ⊙ c: it is o ⊙ tanh(c), the cell state squashed "
                                "into (-1, 1) before the output gate shows it."),
        "sigmoid candidate": Mistake(
            _SigmoidCandidate, "Your candidate g goes through a sigmoid; it uses tanh, so that new content can "
                               "be negative as well as positive."),
        "no forget gate": Mistake(
            _NoForgetGate, "Your cell update ignores the forget gate: c_t = f ⊙ c_{t-1} + i ⊙ g, not "
                           "c_{t-1} + i ⊙ g."),
        "one bias": Mistake(
            _OneBias, "Only one of the two bias vectors is added: PyTorch's gates use bias_ih + bias_hh."),
        "transposed weights": Mistake(
            _TransposedWeights, "Your weights are stored transposed, (in, 4h): PyTorch keeps (4h, in) and "
                                "multiplies by W.T."),
    },
    hints=[
        "One matrix product gives all four gates: gates = x @ W_ih.T + b_ih + h @ W_hh.T + b_hh, "
        "of shape (B, 4h); gates.chunk(4, dim=-1) splits it.",
        "PyTorch stacks the gates in the order i, f, g, o. i, f and o go through a sigmoid, g through tanh.",
        "c_t = f ⊙ c_{t-1} + i ⊙ g, then h_t = o ⊙ tanh(c_t). Return (h_t, c_t).",
    ],
    cases=[_case(3, 5, 4, 0), _case(2, 3, 6, 1)],
    call=_run,
    grads=("x", "cell"),
)
