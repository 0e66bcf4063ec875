"""Chapter 10: what a model costs, how robust it is, and which design choices matter.

Four groups of tools, used by ``bench/scaling.py``, ``bench/findings.py`` and the findings chapter.

**Cost.** :func:`param_count`; :func:`macs` (every multiply-accumulate: LSTM gate matmuls through
:func:`~sequencer_mini.macs.count_macs`, attention through PyTorch's *math* backend, see below) next to
:func:`flop_counter_macs` (what :class:`~torch.utils.flop_counter.FlopCounterMode` alone sees, the count
behind timm's table); :func:`images_per_second`; :func:`peak_memory` of one forward or forward+backward pass.

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

**Robustness.** :func:`resize_images` (bilinear) for evaluating at other resolutions; :func:`corrupt` applies
one of :data:`CORRUPTIONS` at severity 1-5 with torchvision transforms, seeded, in the spirit of
ImageNet-C (Hendrycks & Dietterich, ICLR 2019); :func:`corruption_error` normalises errors by a reference model
as mCE normalises by AlexNet's.

**Ablations.** :data:`ABLATIONS` maps each variant of the paper's ablation study to the keyword
arguments of :func:`~sequencer_mini.sequencer2d.sequencer2d_mini28`, following the official ablation
configurations.

**Experiments.** :func:`load_trio`, :func:`run_resolution`, :func:`run_corruption`, :func:`run_ablation` and
:func:`summarize_ablation` (``bench/findings.py``), :func:`profile_sweep` and :func:`imagenet_macs`
(``bench/scaling.py``): the scripts add the command line, the sizes per budget and the results files; the
chapter calls the same functions for its tiny ``ci`` runs.

Why the math backend for MACs: on the CPU, ``F.scaled_dot_product_attention`` dispatches to
``aten::_scaled_dot_product_flash_attention_for_cpu``, for which ``FlopCounterMode`` has no formula, so a
ViT's attention products (``QKᵀ`` and ``AV``, ``2·N²·D`` MACs per layer) would count as zero. Under
``sdpa_kernel(SDPBackend.MATH)`` attention is computed with two batched matmuls, which are counted.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = [
    "ModelSpec",
    "param_count",
    "macs",
    "flop_counter_macs",
    "attention_backend",
    "images_per_second",
    "peak_memory",
    "MemoryResult",
    "profile_sweep",
    "resize_images",
    "nearest_valid_size",
    "CORRUPTIONS",
    "SEVERITIES",
    "corrupt",
    "distortion",
    "corruption_error",
    "accuracy",
    "ABLATIONS",
    "ablation_model",
    "TRIO",
    "TrainedModel",
    "load_trio",
    "fashion_mnist_test",
    "run_resolution",
    "run_corruption",
    "run_ablation",
    "summarize_ablation",
    "imagenet_macs",
    "SCALING_SPECS",
]

_REPO_ROOT = Path(__file__).resolve().parent.parent


# ============================================================================ cost


@dataclass(frozen=True)
class ModelSpec:
    """A model that can be rebuilt anywhere, in particular in a fresh subprocess.

    Args:
        label: name shown in tables and figures.
        factory: ``"module:function"``, e.g. ``"sequencer_mini.baselines:small_vit"``.
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
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.MATH):
        yield


def macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """All multiply-accumulates of one forward pass on ``input_shape`` (``(C, H, W)`` or ``(B, C, H, W)``).

    The same as :func:`~sequencer_mini.macs.count_macs`, which counts the LSTM gate matmuls (by hooks) and the
    attention products (through the math attention backend); kept here so the findings code reads in one place.
    """
    from .macs import count_macs

    return count_macs(model, input_shape)


@torch.no_grad()
def flop_counter_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """MACs that :class:`~torch.utils.flop_counter.FlopCounterMode` alone reports (FLOPs / 2).

    It has no formula for ``aten::lstm`` (the fused LSTM kernel), so the LSTMs count zero: the same blind
    spot as fvcore, the counter behind the GMACs in timm's model table.
    """
    shape = tuple(input_shape) if len(input_shape) == 4 else (1, *input_shape)
    param = next(model.parameters())
    was_training = model.training
    model.eval()
    try:
        with attention_backend("math"), FlopCounterMode(display=False) as counter:
            model(torch.zeros(shape, device=param.device))
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2


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
        if can_reset:
            peak = _proc_status_kib("VmHWM")
            out[mode] = {"mib": (peak - baseline) / 1024, "baseline_mib": baseline / 1024,
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
    return MemoryResult((peak - base) / 2**20, "cuda: max_memory_allocated - memory_allocated", baseline_mib=base / 2**20)


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
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env["CUDA_VISIBLE_DEVICES"] = ""  # the child must not touch a GPU
    code = "import sys; from sequencer_mini.profile import _child_main; _child_main(sys.argv[1])"
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
            row["macs"] = macs(model, (in_chans, side, side))
            row["flop_counter_macs"] = flop_counter_macs(model, (in_chans, side, side))
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


# ============================================================================ robustness


def nearest_valid_size(side: float, multiple: int) -> int:
    """The multiple of ``multiple`` nearest to ``side`` (ties go up), at least ``multiple``."""
    return max(multiple, int(math.floor(side / multiple + 0.5)) * multiple)


def resize_images(images: Tensor, side: int) -> Tensor:
    """Bilinear resize of ``(N, C, H, W)`` float images to ``side × side`` (antialiased when shrinking).

    The whole image is resampled: nothing is cropped or padded.
    """
    if images.shape[-1] == side and images.shape[-2] == side:
        return images
    return F.interpolate(images, size=(side, side), mode="bilinear", align_corners=False, antialias=True)


#: The corruptions of :func:`corrupt`, in the order of the chapter's tables.
CORRUPTIONS: tuple[str, ...] = ("gaussian_noise", "gaussian_blur", "contrast", "jpeg", "elastic", "shift")
SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)

#: Parameter per severity 1-5. Noise, contrast and JPEG use ImageNet-C's values (Hendrycks & Dietterich 2019,
#: ``imagenet_c`` ``corruptions.py``); blur, elastic and shift are set in pixels for 28 × 28 images.
SEVERITY_PARAMS: dict[str, tuple[float, ...]] = {
    "gaussian_noise": (0.08, 0.12, 0.18, 0.26, 0.38),  # std of additive noise, images in [0, 1]
    "gaussian_blur": (0.5, 0.7, 0.9, 1.1, 1.3),  # std of the Gaussian kernel, pixels
    "contrast": (0.4, 0.3, 0.2, 0.1, 0.05),  # factor: x -> mean + c (x - mean)
    "jpeg": (25, 18, 15, 10, 7),  # JPEG quality
    "elastic": (0.5, 0.75, 1.0, 1.5, 2.0),  # RMS length of a smooth random displacement field, pixels
    "shift": (1, 2, 3, 4, 5),  # translation length in pixels, random direction per image
}
ELASTIC_SIGMA = 2.0


def _seed_for(name: str, seed: int) -> int:
    return (seed * 1_000_003 + (CORRUPTIONS.index(name) + 1) * 1009) % (2**62)


def corrupt(images: Tensor, name: str, severity: int, seed: int = 0) -> Tensor:
    """Apply corruption ``name`` at ``severity`` (1-5) to float images ``(N, C, H, W)`` in ``[0, 1]``.

    Deterministic for a given ``seed``: every random draw comes from a generator (or a forked global RNG)
    seeded with ``(seed, name)``. The severities share that draw and scale it (the same noise pattern, the
    same displacement field, the same shift direction per image, only larger), so the distortion of every
    image grows with the severity. Returns float images in ``[0, 1]`` of the same shape.
    """
    from torchvision.transforms.v2 import functional as TF

    if name not in SEVERITY_PARAMS:
        raise ValueError(f"unknown corruption {name!r}; expected one of {CORRUPTIONS}")
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {SEVERITIES}, got {severity}")
    if images.dim() != 4 or not images.is_floating_point():
        raise ValueError(f"corrupt expects float images (N, C, H, W) in [0, 1], got {images.dtype} {tuple(images.shape)}")
    p = SEVERITY_PARAMS[name][severity - 1]
    s = _seed_for(name, seed)
    g = torch.Generator().manual_seed(s)
    x = images.detach().cpu().clamp(0, 1)
    n, _, height, width = x.shape
    if name == "gaussian_noise":
        with torch.random.fork_rng(devices=[]):  # torchvision draws from the global RNG
            torch.manual_seed(s)
            out = TF.gaussian_noise(x, mean=0.0, sigma=float(p), clip=True)
    elif name == "gaussian_blur":
        k = 2 * math.ceil(3 * p) + 1
        out = TF.gaussian_blur(x, kernel_size=[k, k], sigma=[float(p), float(p)])
    elif name == "contrast":
        out = TF.adjust_contrast(x, float(p))
    elif name == "jpeg":
        with warnings.catch_warnings():  # torchvision >= 0.29 points to TorchCodec for image codecs
            warnings.simplefilter("ignore", DeprecationWarning)
            out = TF.jpeg((x * 255).round().to(torch.uint8), quality=int(p)).float() / 255
    elif name == "elastic":
        # A smooth random displacement field per image, as torchvision's ElasticTransform draws it (uniform
        # noise blurred with a Gaussian of std ELASTIC_SIGMA), rescaled to an RMS length of p pixels.
        k = int(8 * ELASTIC_SIGMA + 1) | 1
        noise = torch.rand(n, 2, height, width, generator=g) * 2 - 1
        field = TF.gaussian_blur(noise, kernel_size=[k, k], sigma=[ELASTIC_SIGMA, ELASTIC_SIGMA])
        rms = field.pow(2).sum(1, keepdim=True).mean(dim=(2, 3), keepdim=True).sqrt()
        field = field / rms * float(p)  # pixels
        # F.elastic adds the field to a grid in [-1, 1] units: one pixel is 2/W horizontally and 2/H vertically.
        field = field * torch.tensor([2 / width, 2 / height]).view(1, 2, 1, 1)
        out = torch.stack([TF.elastic(x[i], rearrange(field[i], "xy h w -> 1 h w xy")) for i in range(n)])
    else:  # shift: an integer translation of length p in a random direction, zero fill (the background)
        angle = torch.rand(n, generator=g) * 2 * math.pi
        dx = torch.round(p * torch.cos(angle)).long().tolist()
        dy = torch.round(p * torch.sin(angle)).long().tolist()
        out = torch.empty_like(x)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, offset in enumerate(zip(dx, dy)):
            groups.setdefault(offset, []).append(i)
        for (ox, oy), idx in groups.items():  # one call per distinct offset
            out[idx] = TF.affine(x[idx], angle=0.0, translate=[ox, oy], scale=1.0, shear=[0.0, 0.0], fill=0.0)
    return out.clamp(0, 1).to(images.dtype)


def distortion(clean: Tensor, corrupted: Tensor) -> float:
    """Root-mean-square pixel difference between two image batches in ``[0, 1]``."""
    return float(torch.sqrt(((clean - corrupted) ** 2).mean()))


def corruption_error(errors: dict[str, dict[int, float]], reference: dict[str, dict[int, float]],
                     clean: float | None = None, reference_clean: float | None = None) -> dict[str, Any]:
    """Corruption errors normalised by a reference model, as ImageNet-C's mCE is by AlexNet's.

    ``errors[c][s]`` is the top-1 error (0-1) under corruption ``c`` at severity ``s``. Returns
    ``{"ce": {c: Σ_s E_cs / Σ_s E_cs^ref}, "mce": mean over c}`` (×100 for percent), and when the clean
    errors are given also the *relative* versions, which subtract each model's clean error first.
    """
    out: dict[str, Any] = {"ce": {}, "relative_ce": {}}
    for c, by_sev in errors.items():
        sevs = sorted(by_sev)
        ref = sum(reference[c][s] for s in sevs)
        out["ce"][c] = sum(by_sev[s] for s in sevs) / ref if ref > 0 else float("nan")
        if clean is not None and reference_clean is not None:
            ref_rel = sum(reference[c][s] - reference_clean for s in sevs)
            own_rel = sum(by_sev[s] - clean for s in sevs)
            out["relative_ce"][c] = own_rel / ref_rel if ref_rel > 0 else float("nan")
    out["mce"] = statistics.fmean(out["ce"].values())
    out["relative_mce"] = statistics.fmean(out["relative_ce"].values()) if out["relative_ce"] else None
    return out


@torch.no_grad()
def accuracy(model: nn.Module, images: Tensor, labels: Tensor, *, mean: Sequence[float], std: Sequence[float],
             side: int | None = None, batch_size: int = 256) -> float:
    """Top-1 accuracy on float images ``(N, C, H, W)`` in ``[0, 1]``, resized to ``side`` and normalised."""
    param = next(model.parameters())
    device = param.device
    m = torch.tensor(mean, device=device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=device).view(1, -1, 1, 1)
    was_training = model.training
    model.eval()
    correct = 0
    for start in range(0, len(images), batch_size):
        x = images[start:start + batch_size].to(device)
        if side is not None:
            x = resize_images(x, side)
        pred = model((x - m) / s).argmax(-1).cpu()
        correct += int((pred == labels[start:start + batch_size]).sum())
    model.train(was_training)
    return correct / max(1, len(images))


# ============================================================================ ablations

#: The ablation variants, as keyword arguments of :func:`~sequencer_mini.sequencer2d.sequencer2d_mini28`
#: (``C`` = 64, 128; ``h`` = 16, 32), with the official configuration each one mirrors (``okojoalg/sequencer``,
#: ``models/two_dim_sequencer.py`` and ``vanilla_sequencer.py``). ``with_fc=False`` needs the mixed width to
#: equal ``C``: ``cat`` gives ``4h = C`` as it is; a single axis gives ``2h``, so, as the official
#: ``sequencer2d_vertical``, those variants double ``h``; the vanilla block uses ``h = C/2``.
ABLATIONS: dict[str, dict[str, Any]] = {
    "baseline": {"kwargs": {}, "official": "sequencer2d_s",
                 "what": "BiLSTM2D: bidirectional, vertical + horizontal, cat, FC, LSTM (the paper's design)"},
    "unidirectional": {"kwargs": {"bidirectional": False}, "official": "sequencer2d_s_unidirectional",
                       "what": "each axis read in one direction only"},
    "add": {"kwargs": {"union": "add"}, "official": "sequencer2d_s_add",
            "what": "vertical and horizontal outputs added instead of concatenated"},
    "without_fc": {"kwargs": {"with_fc": False}, "official": "sequencer2d_s_without_fc",
                   "what": "no FC after the concatenation (4h = C already)"},
    "vertical_only": {"kwargs": {"union": "vertical", "with_fc": False, "hidden_sizes": (32, 64)},
                      "official": "sequencer2d_vertical", "what": "columns only, h doubled, no FC"},
    "horizontal_only": {"kwargs": {"union": "horizontal", "with_fc": False, "hidden_sizes": (32, 64)},
                        "official": "sequencer2d_s_horizontal", "what": "rows only, h doubled, no FC"},
    "vanilla": {"kwargs": {"block": "vanilla", "hidden_sizes": (32, 64)}, "official": "v_sequencer_s",
                "what": "one BiLSTM over all H·W tokens (vanilla Sequencer), h = C/2, no FC"},
    "gru": {"kwargs": {"rnn": "gru"}, "official": "gru_sequencer2d_s",
            "what": "GRU instead of LSTM in the same 2-D layout"},
}


def ablation_model(name: str, **kwargs: Any) -> nn.Module:
    """``sequencer2d_mini28`` with the knobs of ablation ``name`` (extra ``kwargs`` override)."""
    from .sequencer2d import sequencer2d_mini28

    if name not in ABLATIONS:
        raise ValueError(f"unknown ablation {name!r}; expected one of {list(ABLATIONS)}")
    return sequencer2d_mini28(**{**ABLATIONS[name]["kwargs"], **kwargs})


# ============================================================================ experiments (bench/findings.py)

#: The training chapter's trio: Sequencer, CNN and ViT of about 0.9 M parameters each, trained on Fashion-MNIST.
TRIO: dict[str, str] = {"sequencer2d_mini28": "Sequencer2D", "small_cnn": "CNN", "small_vit": "ViT"}


@dataclass
class TrainedModel:
    """A Fashion-MNIST model and where its weights came from (``source``: ``checkpoint`` or ``fallback``)."""

    name: str
    label: str
    model: nn.Module
    source: str
    note: str
    weights: str | None = None
    train_results: dict = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        keep = ("best_test_acc", "final_test_acc", "epochs_completed", "complete", "n_train", "n_test", "budget",
                "batch_size")
        info = {k: self.train_results.get(k) for k in keep if k in self.train_results}
        recipe = self.train_results.get("recipe") or {}
        info.update({k: recipe.get(k) for k in ("epochs", "lr", "limit_train", "aug_preset", "warmup_epochs") if k in recipe})
        prov = self.train_results.get("provenance") or {}
        info.update({f"provenance_{k}": prov.get(k) for k in ("date", "device", "git_commit", "command") if k in prov})
        return {"name": self.name, "label": self.label, "source": self.source, "note": self.note,
                "weights": self.weights, "train": info}


def _relative(path: Path) -> str:
    try:
        return path.resolve().relative_to(_REPO_ROOT).as_posix()
    except ValueError:
        return str(path)


def load_trio(
    *,
    fallback_dir: str | Path,
    results_dir: str | Path | None = None,
    epochs: int | None = None,
    limit_train: int | None = None,
    device: str | torch.device = "cpu",
    names: Sequence[str] = tuple(TRIO),
    log: Callable[[str], None] | None = None,
) -> dict[str, TrainedModel]:
    """The training chapter's Fashion-MNIST trio, or, for each model whose checkpoint is missing, a fallback.

    Checkpoints are looked up with :func:`sequencer_mini.erf.find_trained` (a ``results.json`` naming the model
    and Fashion-MNIST next to a weights file under ``book/results/``; ``last.pt`` is preferred to ``best.pt``,
    which was selected on the test set). A missing model is trained with the training chapter's recipe at the
    current budget (``python -m sequencer_mini.train``), into ``fallback_dir/<name>`` (resumable), optionally
    shortened with ``epochs`` / ``limit_train``; ``source='fallback'`` and the note say so.
    """
    from . import train as train_mod
    from .erf import _load_state, find_trained

    out: dict[str, TrainedModel] = {}
    for name in names:
        model, _ = train_mod.build_model(name, 1, 10, 28)
        found = find_trained(name, results_dir)
        if found is not None:
            path, results = found
            model.load_state_dict(_load_state(path))
            note = f"trained weights {_relative(path)} (the training chapter's run)"
            out[name] = TrainedModel(name, TRIO.get(name, name), model.to(device).eval(), "checkpoint", note,
                                     _relative(path), results)
            if log:
                log(f"{name}: {note}")
            continue
        run_dir = Path(fallback_dir) / name
        results_file = run_dir / "results.json"
        results = json.loads(results_file.read_text()) if results_file.is_file() else {}
        wanted = {"epochs": epochs, "limit_train": limit_train}
        recipe = results.get("recipe") or {}
        from .budget import budget as current_budget

        reusable = (results.get("complete") and results.get("budget") == current_budget() and all(v is None or recipe.get(k) == v for k, v in wanted.items())
                    and (run_dir / "last.pt").is_file())
        if not reusable:
            argv = ["--dataset", "fashion_mnist", "--model", name, "--out", str(run_dir), "--resume",
                    "--device", str(device)]
            if epochs is not None:
                argv += ["--epochs", str(epochs)]
            if limit_train is not None:
                argv += ["--limit-train", str(limit_train)]
            if log:
                log(f"{name}: no checkpoint under book/results; training a fallback: python -m sequencer_mini.train "
                    + " ".join(argv))
            results = train_mod.main(argv)
        model.load_state_dict(_load_state(run_dir / "last.pt"))
        acc = results.get("final_test_acc")
        note = (f"FALLBACK: no checkpoint of the training chapter was found, so this model was trained by the "
                f"findings script with the training recipe at budget {results.get('budget')!r} "
                f"({results.get('epochs_completed')} epochs on {results.get('n_train')} images"
                + (f", final test accuracy {100 * acc:.2f}%" if isinstance(acc, float) else "") + ")")
        out[name] = TrainedModel(name, TRIO.get(name, name), model.to(device).eval(), "fallback", note,
                                 _relative(run_dir / "last.pt"), results)
        if log:
            log(f"{name}: {note}")
    return out


def fashion_mnist_test(n: int | None = None, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Fashion-MNIST test images as floats ``(N, 1, 28, 28)`` in ``[0, 1]`` (not normalised) and labels ``(N,)``.

    ``n``: a fixed random subset (the same for every caller with the same ``seed``); ``None``: all 10,000.
    """
    from .data import load_fashion_mnist

    images, labels = load_fashion_mnist("test")
    if n is not None and n < len(images):
        idx = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:n]
        images, labels = images[idx], labels[idx]
    return images.float() / 255, labels


def _mean_std() -> tuple[tuple[float, ...], tuple[float, ...]]:
    from .data import MEAN_STD

    return MEAN_STD["fashion_mnist"]


def run_resolution(trio: dict[str, TrainedModel], images: Tensor, labels: Tensor, sides: Sequence[int], *,
                   train_side: int = 28, batch_size: int = 256, log: Callable[[str], None] | None = None) -> dict:
    """Accuracy of each model on the test images resized (bilinear, whole image) to each side."""
    mean, std = _mean_std()
    models: dict[str, Any] = {}
    for name, tm in trio.items():
        accs = {}
        for side in sides:
            t0 = time.perf_counter()
            accs[str(side)] = accuracy(tm.model, images, labels, mean=mean, std=std, side=side, batch_size=batch_size)
            if log:
                log(f"resolution {tm.label:<12} {side:>3}px ({side / train_side:.2f}x): "
                    f"{100 * accs[str(side)]:.2f}%  [{time.perf_counter() - t0:.1f}s]")
        models[name] = {**tm.describe(), "accuracy": accs}
    return {"experiment": "resolution", "train_side": train_side, "sides": list(sides),
            "scales": [side / train_side for side in sides], "n_test": len(images),
            "resize": "bilinear, align_corners=False, antialias=True; the whole image is resampled (no crop, no pad)",
            "vit_position_embeddings": "resampled bicubic+antialias to the new grid (timm resample_abs_pos_embed)",
            "models": models}


def run_corruption(trio: dict[str, TrainedModel], images: Tensor, labels: Tensor, *,
                   corruptions: Sequence[str] = CORRUPTIONS, severities: Sequence[int] = SEVERITIES,
                   reference: str = "small_cnn", seed: int = 0, batch_size: int = 256,
                   log: Callable[[str], None] | None = None) -> dict:
    """Top-1 error of each model under each corruption and severity, and CE / mCE normalised by ``reference``."""
    mean, std = _mean_std()
    clean = {name: 1 - accuracy(tm.model, images, labels, mean=mean, std=std, batch_size=batch_size)
             for name, tm in trio.items()}
    errors: dict[str, dict[str, dict[str, float]]] = {name: {} for name in trio}
    rms: dict[str, dict[str, float]] = {}
    for c in corruptions:
        rms[c] = {}
        for sev in severities:
            t0 = time.perf_counter()
            bad = corrupt(images, c, sev, seed=seed)
            rms[c][str(sev)] = distortion(images, bad)
            for name, tm in trio.items():
                errors[name].setdefault(c, {})[str(sev)] = 1 - accuracy(tm.model, bad, labels, mean=mean, std=std,
                                                                        batch_size=batch_size)
            if log:
                log(f"corruption {c:<15} severity {sev}: " + "  ".join(
                    f"{trio[n].label} err {100 * errors[n][c][str(sev)]:.1f}%" for n in trio)
                    + f"  [{time.perf_counter() - t0:.1f}s]")
    models: dict[str, Any] = {}
    for name, tm in trio.items():
        entry = {**tm.describe(), "clean_error": clean[name], "errors": errors[name]}
        if reference in trio:
            ce = corruption_error({c: {int(s): e for s, e in v.items()} for c, v in errors[name].items()},
                                  {c: {int(s): e for s, e in v.items()} for c, v in errors[reference].items()},
                                  clean[name], clean[reference])
            entry.update({"ce": ce["ce"], "mce": ce["mce"], "relative_ce": ce["relative_ce"],
                          "relative_mce": ce["relative_mce"]})
        entry["mean_corrupted_error"] = statistics.fmean(e for v in errors[name].values() for e in v.values())
        models[name] = entry
    return {"experiment": "corruption", "n_test": len(images), "seed": seed, "reference": reference,
            "corruptions": list(corruptions), "severities": list(severities),
            "severity_params": {c: list(SEVERITY_PARAMS[c]) for c in corruptions},
            "distortion_rms": rms, "models": models}


def run_ablation(
    variants: Sequence[str],
    seeds: Sequence[int],
    *,
    epochs: int,
    limit_train: int | None,
    limit_test: int | None,
    batch_size: int,
    lr: float = 2e-3,
    warmup_epochs: float = 0.1,
    amp: str = "off",
    device: str | torch.device = "cpu",
    done: Sequence[dict] = (),
    on_run: Callable[[dict], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> list[dict]:
    """Train every ablation variant once per seed with one short fixed recipe; one dict per run.

    Recipe: AdamW (lr ``lr``, weight decay 0.05), linear warmup then cosine, no augmentation, no label smoothing,
    ``epochs`` epochs on a fixed random subset of ``limit_train`` training images (the same subset for every
    seed and variant; the seed sets the initial weights and the batch order). The score is the test accuracy
    after the last epoch on a fixed subset of ``limit_test`` test images (no selection on the test set).
    ``amp`` is the trainer's mixed precision (``'bf16'`` trains about 1.4× faster on CPUs with native bfloat16,
    e.g. AVX512-BF16). Runs listed in ``done`` (same variant, seed and recipe) are kept instead of retrained.
    """
    from .data import AugmentConfig, make_loaders
    from .macs import count_macs
    from .train import TrainConfig, fit

    recipe = {"epochs": epochs, "limit_train": limit_train, "limit_test": limit_test, "batch_size": batch_size,
              "lr": lr, "weight_decay": 0.05, "warmup_epochs": warmup_epochs, "aug": "none", "label_smoothing": 0.0, "amp": amp}
    finished = {(r["variant"], r["seed"]): r for r in done if r.get("recipe") == recipe}
    runs = []
    for seed in seeds:  # seed-major: an interrupted run still has every variant for the first seeds
        for variant in variants:
            if (variant, seed) in finished:
                runs.append(finished[(variant, seed)])
                continue
            torch.manual_seed(seed)
            model = ablation_model(variant)
            n_params, n_macs = param_count(model), count_macs(model, (1, 28, 28))
            train_loader, test_loader, _ = make_loaders(
                "fashion_mnist", batch_size, AugmentConfig.preset("none"), limit_train=limit_train,
                limit_test=limit_test, seed=seed, device=device)
            cfg = TrainConfig(epochs=epochs, lr=lr, weight_decay=0.05, warmup_epochs=warmup_epochs,
                              aug=AugmentConfig.preset("none"), amp=amp, device=str(device), seed=seed)
            t0 = time.perf_counter()
            history = fit(model, train_loader, test_loader, cfg)
            run = {"variant": variant, "seed": seed, "params": n_params, "macs": n_macs,
                   "test_acc": history["test_acc"][-1], "train_acc": history["train_acc"][-1],
                   "train_loss": history["train_loss"][-1], "wall_s": time.perf_counter() - t0,
                   "images_per_s": statistics.fmean(history["images_per_s"]), "recipe": recipe}
            runs.append(run)
            if log:
                log(f"ablation {variant:<16} seed {seed}: test acc {100 * run['test_acc']:.2f}%  "
                    f"({n_params:,} params, {run['wall_s']:.0f}s)")
            if on_run is not None:
                on_run(run)
    return runs


def summarize_ablation(runs: Sequence[dict], baseline: str = "baseline") -> dict[str, dict[str, Any]]:
    """Per variant: mean ± std (n-1) of the test accuracy over seeds, and the paired difference to ``baseline``.

    The difference is taken seed by seed (same data order, same subset), its mean ± std and standard error;
    ``within_noise`` is True when ``|mean difference| < 2 · standard error`` (or fewer than two seeds).
    """
    by_variant: dict[str, dict[int, dict]] = {}
    for r in runs:
        by_variant.setdefault(r["variant"], {})[r["seed"]] = r
    base = by_variant.get(baseline, {})
    out: dict[str, dict[str, Any]] = {}
    for variant, seeds in by_variant.items():
        accs = [seeds[s]["test_acc"] for s in sorted(seeds)]
        any_run = next(iter(seeds.values()))
        row: dict[str, Any] = {"n": len(accs), "mean": statistics.fmean(accs),
                               "std": statistics.stdev(accs) if len(accs) > 1 else None,
                               "params": any_run["params"], "macs": any_run["macs"],
                               "official": ABLATIONS.get(variant, {}).get("official"),
                               "what": ABLATIONS.get(variant, {}).get("what"),
                               "mean_wall_s": statistics.fmean(seeds[s]["wall_s"] for s in seeds)}
        paired = [seeds[s]["test_acc"] - base[s]["test_acc"] for s in sorted(seeds) if s in base]
        if variant != baseline and paired:
            sd = statistics.stdev(paired) if len(paired) > 1 else None
            se = sd / math.sqrt(len(paired)) if sd is not None else None
            row.update({"delta_mean": statistics.fmean(paired), "delta_std": sd, "delta_se": se,
                        "within_noise": se is None or abs(statistics.fmean(paired)) < 2 * se})
        out[variant] = row
    return out


def imagenet_macs(names: Sequence[str] = ("sequencer2d_s", "sequencer2d_m", "sequencer2d_l"), side: int = 224,
                  device: str | torch.device = "cpu", log: Callable[[str], None] | None = None) -> list[dict]:
    """Params, MACs with the LSTMs (:func:`macs`) and what FlopCounterMode alone sees, for the ImageNet presets."""
    from .sequencer2d import MODELS

    rows = []
    for name in names:
        model = MODELS[name]().to(device).eval()
        row = {"model": name, "side": side, "params": param_count(model), "macs": macs(model, (3, side, side)),
               "flop_counter_macs": flop_counter_macs(model, (3, side, side))}
        rows.append(row)
        if log:
            log(f"{name}: {row['params']:,} params, {row['macs'] / 1e9:.2f} GMACs with LSTMs, "
                f"{row['flop_counter_macs'] / 1e9:.2f} G seen by FlopCounterMode alone")
        del model
    return rows


#: The models of the cost sweep: Fashion-MNIST-sized Sequencer, CNN and ViT (the ViT twice: with the attention
#: matrix materialised, as in 2022 ViT code, and with PyTorch's fused attention).
SCALING_SPECS: tuple[ModelSpec, ...] = (
    ModelSpec("Sequencer2D (mini28)", "sequencer_mini.sequencer2d:sequencer2d_mini28"),
    ModelSpec("CNN (small_cnn)", "sequencer_mini.baselines:small_cnn"),
    ModelSpec("ViT (small_vit), explicit attention", "sequencer_mini.baselines:small_vit", sized=True, attention="math"),
    ModelSpec("ViT (small_vit), fused attention", "sequencer_mini.baselines:small_vit", sized=True),
)
