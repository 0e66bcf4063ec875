"""Chapter 10: what a model costs: parameters, images per second and peak memory.

:func:`param_count`; :func:`images_per_second`; :func:`peak_memory` of one forward or forward+backward pass.
Multiply-accumulates are counted by the one counter, :func:`~sequencer_mini.measure.macs.count_macs` (LSTM
gate matmuls through hooks, attention through PyTorch's *math* backend), which also gives, with
``fused_rnns=False``, what :class:`~torch.utils.flop_counter.FlopCounterMode` alone sees (the count behind
timm's table). :func:`profile_sweep` measures all of them per model and input side, :func:`imagenet_macs`
counts the ImageNet presets (both for ``bench/scaling.py`` and the findings chapter).

Peak memory is measured in two ways:

* **CUDA**: ``torch.cuda.reset_peak_memory_stats()``, run, ``torch.cuda.max_memory_allocated()`` minus the
  memory allocated before the run (model, input): the high-water mark of the caching allocator, the number
  the official ``benchmark.py`` records.
* **CPU**: PyTorch keeps no statistics for CPU tensors, and ``tracemalloc`` only sees Python's own
  allocator, not tensor storage. So the pass runs in a **fresh Python subprocess**: build the model and the
  input, read the resident set size (``VmRSS``), reset the kernel's high-water mark (write ``5`` to
  ``/proc/self/clear_refs``), run, and read the new high-water mark (``VmHWM``). The peak *increase* is
  ``VmHWM - VmRSS``. A fresh process matters because glibc keeps freed memory mapped for reuse: in a process
  that already ran a larger pass, a new pass would reuse that memory without raising the RSS. Where
  ``clear_refs`` is not writable, ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` is used instead (the
  process's lifetime peak; the method is recorded). Before measuring, the child runs each pass once on an
  8 × 8 input, so that loading and initialising the math libraries (oneDNN, thread pools), a cost paid once
  per process whatever the input, is not counted; each mode is then measured from the RSS just before it.

The ``attention`` of a :class:`ModelSpec` (``"math"``: the attention matrix is materialised) applies to the
timings and the memory; the MAC count is the same for both backends.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from sequencer_mini.core.paths import REPO_ROOT
from sequencer_mini.measure.macs import count_macs
from sequencer_mini.models.sequencer2d import MODELS

__all__ = [
    "ModelSpec",
    "param_count",
    "attention_backend",
    "images_per_second",
    "peak_memory",
    "MemoryResult",
    "profile_sweep",
    "imagenet_macs",
    "SCALING_SPECS",
]



@dataclass(frozen=True)
class ModelSpec:
    """A model that can be rebuilt anywhere, in particular in a fresh subprocess.

    Args:
        label: name shown in tables and figures.
        factory: ``"module:function"``, e.g. ``"sequencer_mini.models.baselines:small_vit"``.
        kwargs: keyword arguments of the factory (JSON-serialisable).
        sized: pass ``img_size=<side>`` to the factory when building for an input side (the ViT's position
            embeddings are then built for that grid).
        attention: ``"default"`` (PyTorch picks a fused kernel) or ``"math"`` (the attention matrix is
            materialised, as in ViT implementations that compute ``softmax(QKᵀ/√d)`` explicitly).
    """

    label: str
    factory: str
    kwargs: dict = field(default_factory=dict)
    sized: bool = False
    attention: str = "default"

    def build(self, side: int | None = None) -> nn.Module:
        module_name, _, attr = self.factory.partition(":")
        fn = getattr(importlib.import_module(module_name), attr)
        kwargs = dict(self.kwargs)
        if self.sized and side is not None:
            kwargs["img_size"] = side
        return fn(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def param_count(model: nn.Module) -> int:
    """Number of parameters (each tensor counted once)."""
    return sum(p.numel() for p in model.parameters())


@contextlib.contextmanager
def attention_backend(name: str = "default") -> Iterator[None]:
    """``"math"``: force ``F.scaled_dot_product_attention`` to materialise the attention matrix; else no-op."""
    if name == "default":
        yield
        return
    if name != "math":
        raise ValueError(f"attention must be 'default' or 'math', got {name!r}")

    with sdpa_kernel(SDPBackend.MATH):
        yield


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _step_fn(model: nn.Module, x: Tensor, train: bool) -> Callable[[], None]:
    """One forward (no grad, eval mode) or one forward+backward (train mode) on ``x``."""
    if train:
        model.train()
        target = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)

        def step() -> None:
            model.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), target).backward()

    else:
        model.eval()

        def step() -> None:
            with torch.no_grad():
                model(x)

    return step


def images_per_second(
    model: nn.Module,
    input_shape: tuple[int, int, int],
    batch_size: int,
    *,
    train: bool = False,
    attention: str = "default",
    warmup: int = 1,
    repeats: int = 3,
) -> float:
    """Images per second of a forward pass (``train=False``) or a forward+backward pass, median of ``repeats``.

    Runs on the model's device with random inputs ``(batch_size, *input_shape)``; on CUDA every timing is
    bracketed by ``torch.cuda.synchronize``.
    """
    param = next(model.parameters())
    device = param.device
    x = torch.randn(batch_size, *input_shape, device=device)
    step = _step_fn(model, x, train)
    times = []
    with attention_backend(attention):
        for i in range(warmup + repeats):
            _sync(device)
            t0 = time.perf_counter()
            step()
            _sync(device)
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    model.zero_grad(set_to_none=True)
    return batch_size / statistics.median(times)


@dataclass
class MemoryResult:
    """Peak memory increase of one pass, in MiB, and how it was measured."""

    mib: float | None
    method: str
    oom: bool = False
    baseline_mib: float | None = None


def _proc_status_kib(key: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_hwm() -> bool:
    """Reset the kernel's peak-RSS counter of this process (Linux >= 4.0); True if it worked."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _maxrss_kib() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak  # bytes on macOS, KiB on Linux


def _cpu_peak_in_this_process(spec: ModelSpec, side: int, in_chans: int, batch_size: int, modes: Sequence[str],
                              warmup_side: int = 8) -> dict:
    """Child side of :func:`peak_memory` on the CPU: build, warm up, then measure each mode (see module doc)."""
    torch.manual_seed(0)
    model = spec.build(side)
    x = torch.randn(batch_size, in_chans, side, side)
    tiny = torch.randn(1, in_chans, warmup_side, warmup_side)
    with attention_backend(spec.attention):  # load and initialise the math libraries on a negligible input
        for mode in modes:
            _step_fn(model, tiny, mode == "train")()
    model.zero_grad(set_to_none=True)
    out: dict[str, Any] = {}
    for mode in modes:
        gc.collect()
        baseline = _proc_status_kib("VmRSS")
        can_reset = baseline is not None and _reset_hwm()
        before = _maxrss_kib()
        with attention_backend(spec.attention):
            _step_fn(model, x, mode == "train")()
        hwm = _proc_status_kib("VmHWM") if can_reset else None
        if baseline is not None and hwm is not None:
            out[mode] = {"mib": (hwm - baseline) / 1024, "baseline_mib": baseline / 1024,
                         "method": "cpu: fresh subprocess, warm-up on an 8x8 input, then VmHWM - VmRSS (clear_refs)"}
        else:  # lifetime peak: valid when the pass sets a new record, i.e. for the larger inputs
            peak = _maxrss_kib()
            out[mode] = {"mib": max(peak - before, 0) / 1024, "baseline_mib": before / 1024,
                         "method": "cpu: fresh subprocess, warm-up on an 8x8 input, then ru_maxrss delta"}
        model.zero_grad(set_to_none=True)
    return out


def _cuda_peak(model: nn.Module, x: Tensor, train: bool, attention: str) -> MemoryResult:
    device = x.device
    step = _step_fn(model, x, train)
    model.zero_grad(set_to_none=True)
    gc.collect()
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    try:
        with attention_backend(attention):
            step()
        torch.cuda.synchronize(device)
    except torch.OutOfMemoryError:
        model.zero_grad(set_to_none=True)
        gc.collect()
        torch.cuda.empty_cache()
        return MemoryResult(None, "cuda: max_memory_allocated - memory_allocated", oom=True, baseline_mib=base / 2**20)
    peak = torch.cuda.max_memory_allocated(device)
    model.zero_grad(set_to_none=True)
    return MemoryResult((peak - base) / 2**20, "cuda: max_memory_allocated - memory_allocated",
                        baseline_mib=base / 2**20)


def peak_memory(
    spec: ModelSpec,
    side: int,
    batch_size: int,
    *,
    in_chans: int = 1,
    modes: Sequence[str] = ("infer", "train"),
    device: str | torch.device = "cpu",
    model: nn.Module | None = None,
    timeout: float = 600.0,
) -> dict[str, MemoryResult]:
    """Peak memory increase (MiB) of one forward (``"infer"``) and/or forward+backward (``"train"``) pass.

    On CUDA the pass runs in this process on ``model`` (built from ``spec`` if not given). On the CPU it runs
    in a fresh subprocess that rebuilds the model from ``spec`` (see the module docstring for the method).
    Returns ``{mode: MemoryResult}``; an out-of-memory pass has ``mib=None, oom=True``.
    """
    device = torch.device(device)
    bad = set(modes) - {"infer", "train"}
    if bad:
        raise ValueError(f"modes must be 'infer' and/or 'train', got {sorted(bad)}")
    if not modes:
        return {}
    if device.type == "cuda":
        model = model if model is not None else spec.build(side).to(device)
        x = torch.randn(batch_size, in_chans, side, side, device=device)
        return {m: _cuda_peak(model, x, m == "train", spec.attention) for m in modes}
    if device.type != "cpu":
        raise ValueError(f"peak_memory supports 'cpu' and 'cuda' devices, got {device}")
    args = json.dumps({"spec": spec.to_dict(), "side": side, "in_chans": in_chans, "batch_size": batch_size,
                       "modes": list(modes), "threads": torch.get_num_threads()})
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env["CUDA_VISIBLE_DEVICES"] = ""  # the child must not touch a GPU
    code = "import sys; from sequencer_mini.measure.cost import _child_main; _child_main(sys.argv[1])"
    proc = subprocess.run([sys.executable, "-c", code, args], capture_output=True, text=True, env=env, timeout=timeout)
    if proc.returncode != 0:
        if proc.returncode in (-9, 137):  # killed by the kernel's OOM killer
            return {m: MemoryResult(None, "cpu: fresh subprocess", oom=True) for m in modes}
        raise RuntimeError(f"peak-memory subprocess failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return {m: MemoryResult(**result[m]) for m in modes}


def _child_main(arg: str) -> None:
    """Entry point of the measuring subprocess: prints one JSON line."""
    a = json.loads(arg)
    torch.set_num_threads(a.get("threads") or torch.get_num_threads())
    spec = ModelSpec(**a["spec"])
    print(json.dumps(_cpu_peak_in_this_process(spec, a["side"], a["in_chans"], a["batch_size"], a["modes"])))


def profile_sweep(
    specs: Sequence[ModelSpec],
    sides: Sequence[int],
    *,
    batch_size: int,
    device: str | torch.device = "cpu",
    in_chans: int = 1,
    repeats: int = 3,
    warmup: int = 1,
    memory_modes: Sequence[str] = ("infer", "train"),
    throughput_modes: Sequence[str] = ("infer",),
    log: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Params, MACs, images/s and peak memory of every model at every input side; one dict per (model, side).

    A measurement that runs out of memory is recorded as ``None`` with ``"oom": True`` and the sweep goes on.
    """
    device = torch.device(device)
    rows = []
    for spec in specs:
        for side in sides:
            torch.manual_seed(0)
            model = spec.build(side).to(device)
            row: dict[str, Any] = {"model": spec.label, "side": side, "batch_size": batch_size,
                                   "params": param_count(model), "attention": spec.attention}
            row["macs"] = count_macs(model, (in_chans, side, side))
            row["flop_counter_macs"] = count_macs(model, (in_chans, side, side), fused_rnns=False)
            for mode in throughput_modes:
                key = f"images_per_s_{mode}"
                try:
                    row[key] = images_per_second(model, (in_chans, side, side), batch_size, train=mode == "train",
                                                 attention=spec.attention, warmup=warmup, repeats=repeats)
                except torch.OutOfMemoryError:
                    row[key], row[f"oom_{mode}"] = None, True
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
            memory = peak_memory(spec, side, batch_size, in_chans=in_chans, modes=memory_modes, device=device,
                                 model=model if device.type == "cuda" else None)
            for mode, res in memory.items():
                row[f"peak_mib_{mode}"] = res.mib
                row["memory_method"] = res.method
                if res.oom:
                    row[f"oom_{mode}"] = True
            rows.append(row)
            if log is not None:
                ips = row.get("images_per_s_infer")
                log(f"{spec.label:<34} {side:>4}px  MACs {row['macs'] / 1e6:>10.1f}M  "
                    f"{'' if ips is None else f'{ips:8.1f} img/s'}  "
                    + "  ".join(f"{m} {row.get(f'peak_mib_{m}') or float('nan'):8.1f} MiB" for m in memory_modes))
            del model
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return rows



def imagenet_macs(names: Sequence[str] = ("sequencer2d_s", "sequencer2d_m", "sequencer2d_l"), side: int = 224,
                  device: str | torch.device = "cpu", log: Callable[[str], None] | None = None) -> list[dict]:
    """Params, MACs with the LSTMs (:func:`~sequencer_mini.measure.macs.count_macs`) and what FlopCounterMode
    alone sees (``fused_rnns=False``), for the ImageNet presets."""
    rows = []
    for name in names:
        model = MODELS[name]().to(device).eval()
        row: dict[str, Any] = {"model": name, "side": side, "params": param_count(model),
                               "macs": count_macs(model, (3, side, side)),
                               "flop_counter_macs": count_macs(model, (3, side, side), fused_rnns=False)}
        rows.append(row)
        if log:
            log(f"{name}: {row['params']:,} params, {row['macs'] / 1e9:.2f} GMACs with LSTMs, "
                f"{row['flop_counter_macs'] / 1e9:.2f} G seen by FlopCounterMode alone")
        del model
    return rows


#: The models of the cost sweep: Fashion-MNIST-sized Sequencer, CNN and ViT (the ViT twice: with the attention
#: matrix materialised, as in 2022 ViT code, and with PyTorch's fused attention).
SCALING_SPECS: tuple[ModelSpec, ...] = (
    ModelSpec("Sequencer2D (mini28)", "sequencer_mini.models.sequencer2d:sequencer2d_mini28"),
    ModelSpec("CNN (small_cnn)", "sequencer_mini.models.baselines:small_cnn"),
    ModelSpec("ViT (small_vit), explicit attention", "sequencer_mini.models.baselines:small_vit", sized=True,
              attention="math"),
    ModelSpec("ViT (small_vit), fused attention", "sequencer_mini.models.baselines:small_vit", sized=True),
)
