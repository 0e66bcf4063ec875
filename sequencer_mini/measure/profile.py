"""Chapter 5: where a training step's time goes, by torch.profiler: the LSTM kernels' share.

A Sequencer2D and a model of equal MACs need not train equally fast: an LSTM's steps run one after another (the
chain is as long as a row or a column), while a matrix product of the same MACs runs in one call. The profiler
answers the question directly: over one training step (forward, backward), how much of the operators' own
("self") time is spent in the recurrent kernels? Those are the operators whose names contain ``lstm`` or ``rnn``
(on a CPU ``aten::mkldnn_rnn_layer`` and its backward, with ``backend="torch"``; ``LSTMScan`` with the scratch
backend), forward and backward; the rearranges around them and the MLPs are counted as the rest.
"""
from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

__all__ = ["StepProfile", "profile_training_step", "RNN_KEYS"]

#: Substrings (lower case) that mark an operator as part of the recurrent kernels.
RNN_KEYS: tuple[str, ...] = ("lstm", "rnn")


@dataclass(frozen=True)
class StepProfile:
    """Self time of one training step's operators, split into the recurrent kernels and the rest."""

    rnn_ms: float
    total_ms: float
    top: list[tuple[str, float]]  # (operator, self ms): the largest ones
    batch: int
    img_size: int
    threads: int

    @property
    def rnn_share(self) -> float:
        return self.rnn_ms / self.total_ms if self.total_ms > 0 else float("nan")

    def to_dict(self) -> dict:
        return {**asdict(self), "rnn_share": self.rnn_share}


@contextlib.contextmanager
def _native_stderr_to_devnull() -> Iterator[None]:
    """Silence what the profiler's C++ side (kineto) writes straight to file descriptor 2 (``profiler_start``,
    ``profiler_stop``, and on a machine without a GPU an ``ERROR ... gpuGetDeviceCount`` line that is no error):
    log lines, not results. Python's own ``sys.stderr`` is untouched."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def profile_training_step(model: nn.Module, input_shape: Sequence[int], *, warmup: int = 1, top: int = 8,
                          seed: int = 0) -> StepProfile:
    """Profile one forward + backward of ``model`` on random input of ``input_shape = (B, C, H, W)`` on the CPU,
    after ``warmup`` unprofiled steps; the model's training mode and gradients are restored afterwards."""
    if len(input_shape) != 4 or any(int(s) < 1 for s in input_shape):
        raise ValueError(f"input_shape must be (B, C, H, W) with positive sizes, got {tuple(input_shape)}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    x = torch.randn(*input_shape, generator=torch.Generator().manual_seed(seed))
    was_training = model.training
    model.train()
    try:
        for _ in range(warmup):
            model(x).float().sum().backward()
        with _native_stderr_to_devnull(), profile(activities=[ProfilerActivity.CPU]) as prof:
            model(x).float().sum().backward()
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    events = [(e.key, e.self_cpu_time_total / 1e3) for e in prof.key_averages()]
    rnn = sum(ms for key, ms in events if any(k in key.lower() for k in RNN_KEYS))
    total = sum(ms for _, ms in events)
    largest = sorted(events, key=lambda kv: -kv[1])[:top]
    return StepProfile(rnn, total, largest, int(input_shape[0]), int(input_shape[-1]), torch.get_num_threads())
