"""Chapter 6: inside a trained Sequencer, how long its LSTMs remember: forget-gate statistics per layer,
axis and direction.

Chapter 1 measured, at initialisation, that an LSTM's gradient along the cell shrinks by about the forget gate
per step, and that PyTorch's default initialisation starts the forget gates near sigma(0) = 0.5. Whether training
keeps them there is a measurement, not an assumption. For every LSTM of a Sequencer2D (``rnn_v`` reads columns,
``rnn_h`` rows; each has a forward and a backward direction) we recompute the forget gate

    f_t = sigmoid(W_if x_t + b_if + W_hf h_{t-1} + b_hf)          (PyTorch's gate order i, f, g, o)

from the layer's own input and output on real images, at every position, and summarise it by its mean and by
the memory it implies: a cell that keeps a fraction f per step halves its content in ``ln 0.5 / ln f`` steps
(the *half-life*; 1 step at f = 0.5). The sequences are as long as the token grid's side (7 tokens for
``sequencer2d_fast28``), so a half-life of several steps means a token's memory spans the whole row or column.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

__all__ = ["GateStats", "forget_gates", "half_life", "summarise"]


@dataclass(frozen=True)
class GateStats:
    """The forget gate of one direction of one LSTM, over every image, position and unit."""

    layer: str        # the module's name, e.g. "stages.0.blocks.2.token_mixer.rnn_v"
    axis: str         # "vertical" (rnn_v: along columns) or "horizontal" (rnn_h: along rows)
    direction: str    # "forward" (top-down / left-right) or "backward"
    steps: int        # sequence length: the token grid's height (vertical) or width (horizontal)
    mean: float       # mean of f_t
    unit_means: tuple[float, ...]  # mean of f_t per hidden unit

    @property
    def half_life(self) -> float:
        """Steps for the cell to halve its content at the mean forget gate."""
        return half_life(self.mean)

    @property
    def share_long(self) -> float:
        """Fraction of units whose half-life (at their own mean gate) is at least the sequence length."""
        return sum(half_life(m) >= self.steps for m in self.unit_means) / len(self.unit_means)

    def to_dict(self) -> dict:
        return {**asdict(self), "half_life": self.half_life, "share_long": self.share_long}


def half_life(f: float) -> float:
    """``ln 0.5 / ln f``: steps until a cell that keeps ``f`` of its content per step holds half of it."""
    if not 0.0 <= f <= 1.0:
        raise ValueError(f"a forget gate lies in [0, 1], got {f}")
    if f == 0.0:
        return 0.0
    return math.inf if f == 1.0 else math.log(0.5) / math.log(f)


def _lstms(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The LSTMs of a Sequencer2D's token mixers (``rnn_v`` / ``rnn_h``), torch's or ours."""
    found = [(name, m) for name, m in model.named_modules()
             if name.rsplit(".", 1)[-1] in ("rnn_v", "rnn_h") and hasattr(m, "weight_ih_l0")]
    if not found:
        raise ValueError(f"{type(model).__name__} has no rnn_v / rnn_h LSTMs: forget gates need a Sequencer2D "
                         f"(BiLSTM2D mixers)")
    return found


def _gate(x: Tensor, out: Tensor, lstm: nn.Module, suffix: str, reverse: bool) -> Tensor:
    """``f_t`` of one direction, ``(N, T, h)``, from the layer's input ``x (N, T, C)`` and its output for that
    direction ``out (N, T, h)`` (in the input's time order; the backward direction's previous step is t + 1)."""
    h = int(lstm.hidden_size)  # type: ignore[arg-type]  # an nn.LSTM's (or ours) int attribute
    w_ih, w_hh = getattr(lstm, f"weight_ih_l0{suffix}"), getattr(lstm, f"weight_hh_l0{suffix}")
    b_ih, b_hh = getattr(lstm, f"bias_ih_l0{suffix}", None), getattr(lstm, f"bias_hh_l0{suffix}", None)
    bias = sum(b[h:2 * h] for b in (b_ih, b_hh) if b is not None)
    zero = torch.zeros_like(out[:, :1])
    prev = torch.cat([out[:, 1:], zero], 1) if reverse else torch.cat([zero, out[:, :-1]], 1)
    pre = x @ w_ih[h:2 * h].float().T + prev @ w_hh[h:2 * h].float().T + bias
    return torch.sigmoid(pre)


@contextmanager
def _recording(model: nn.Module) -> Iterator[dict[str, list[Tensor]]]:
    """Forward hooks that keep each LSTM's input and output, by module name."""
    seen: dict[str, list[Tensor]] = {}
    handles = []
    for name, lstm in _lstms(model):
        def hook(module: nn.Module, args: tuple, output: tuple, name: str = name) -> None:
            seen.setdefault(name, []).extend([args[0].detach().float(), output[0].detach().float()])
        handles.append(lstm.register_forward_hook(hook))
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def forget_gates(model: nn.Module, images: Tensor, batch_size: int = 256) -> list[GateStats]:
    """Forget-gate statistics of every LSTM direction of ``model`` on ``images (N, C, H, W)`` (normalised as the
    model was trained). Runs in eval mode and leaves the model's mode as it was."""
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(f"images must be a non-empty batch (N, C, H, W), got shape {tuple(images.shape)}")
    if not torch.isfinite(images).all():
        raise ValueError("images contain NaN or infinite values; forget gates need finite inputs")
    lstms = dict(_lstms(model))
    sums: dict[tuple[str, str], Tensor] = {}
    counts: dict[tuple[str, str], int] = {}
    steps: dict[str, int] = {}
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(images), batch_size):
            with _recording(model) as seen:
                model(images[start:start + batch_size])
            for name, (x, out) in ((n, v[:2]) for n, v in seen.items()):
                lstm = lstms[name]
                h = int(lstm.hidden_size)  # type: ignore[arg-type]  # an nn.LSTM's (or ours) int attribute
                directions = [("forward", "", False)]
                if getattr(lstm, "bidirectional", False):
                    directions.append(("backward", "_reverse", True))
                for k, (direction, suffix, reverse) in enumerate(directions):
                    f = _gate(x, out[..., k * h:(k + 1) * h], lstm, suffix, reverse)
                    key = (name, direction)
                    sums[key] = sums.get(key, 0) + f.sum(dim=(0, 1))
                    counts[key] = counts.get(key, 0) + f.shape[0] * f.shape[1]
                steps[name] = x.shape[1]
    finally:
        model.train(was_training)
    stats = []
    for (name, direction), total in sums.items():
        unit = (total / counts[(name, direction)]).tolist()
        stats.append(GateStats(layer=name, axis="vertical" if name.endswith("rnn_v") else "horizontal",
                               direction=direction, steps=steps[name], mean=sum(unit) / len(unit),
                               unit_means=tuple(unit)))
    return stats


def summarise(stats: list[GateStats]) -> list[dict]:
    """One row per (layer, axis, direction): mean gate, half-life in steps, share of long-memory units."""
    return [{"layer": s.layer, "axis": s.axis, "direction": s.direction, "steps": s.steps,
             "mean_forget_gate": s.mean, "half_life_steps": s.half_life, "share_long_memory": s.share_long}
            for s in stats]
