#!/usr/bin/env python
"""Write book/data/gpu_cost.json: each chapter's expected wall time and peak GPU memory at the gpu budget
on a Colab T4 and on an A100, from measured throughput, measured MACs and the GPUs' spec sheets.

Nothing here was measured on a T4 or an A100: the only GPU measurements are the H200 runs under
``bench/results/`` and ``book/results/fmnist-gpu-*``. The estimate carries them over with a three-term model
of one training (or evaluation) step, stated in the file's ``assumptions``:

* **math**: 6 x MACs per training image (2 forward, 4 backward; 2 x MACs for evaluation), at
  ``MATH_EFFICIENCY`` of the GPU's tensor peak in the precision used;
* **memory traffic**: ``TRAFFIC_PER_SAVED_BYTE`` x the bytes of the activations that autograd saves for the
  backward pass (measured on the CPU with ``torch.autograd.graph.saved_tensors_hooks``, 2 bytes per element
  under autocast), over the spec bandwidth;
* **latency**: what the H200 measurement leaves after its own math and traffic terms (kernel launches, the
  LSTMs' sequential steps), taken as equal on every GPU (it is bound by launches and the host, not by the
  chip's throughput); for a Sequencer that was not measured, scaled by its sequential LSTM steps.

Peak memory: 16 bytes per parameter (fp32 weights, gradients, AdamW's two moments) + the batch x the saved
activations per image x a factor calibrated on the H200's measured peak (``torch.cuda.max_memory_allocated``)
+ ``CUDA_CONTEXT_MIB`` for the CUDA context, which ``max_memory_allocated`` does not count.

Chapters whose gpu-budget work runs on the CPU (their models live on the CPU, or they read recorded runs)
take their recorded ``cpu_time_s`` (an idle 2-core CPU, like Colab's 2 vCPUs) times the ratio of the work
at the gpu budget to the work at the cpu budget.

Usage::

    python tools/gpu_cost.py            # write book/data/gpu_cost.json
    python tools/gpu_cost.py --check    # exit 1 if the file differs from what would be written

tests/test_gpu_cost.py fails when the file is not current.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import nbformat  # noqa: E402
import torch  # noqa: E402

from sequencer_mini import Sequencer2D, count_macs  # noqa: E402
from sequencer_mini.train.recipes import build_model, recipe_defaults  # noqa: E402

OUT = ROOT / "book" / "data" / "gpu_cost.json"
FORMAT = "sequencer_mini/gpu_cost/v1"

#: Public spec sheets; dense (no sparsity) tensor peaks.
GPUS: dict[str, dict[str, Any]] = {
    "T4": {
        "name": "NVIDIA T4 16 GB (Colab's free GPU)",
        "tensor_tflops": 65.0, "tensor_precision": "fp16 (Turing has no bf16 tensor cores)",
        "fp32_tflops": 8.1, "bandwidth_gbs": 320.0, "memory_gib": 16.0,
        "source": "https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/tesla-t4/"
                  "t4-tensor-core-datasheet-951643.pdf (FP32 8.1 TFLOPS, mixed FP16/FP32 65 TFLOPS, 320+ GB/s, "
                  "16 GB GDDR6)",
    },
    "A100": {
        "name": "NVIDIA A100-SXM4-40GB (Colab's A100)",
        "tensor_tflops": 312.0, "tensor_precision": "bf16",
        "fp32_tflops": 19.5, "bandwidth_gbs": 1555.0, "memory_gib": 40.0,
        "source": "https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/a100/pdf/"
                  "nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf (BF16 312 TFLOPS dense, FP32 19.5 TFLOPS, "
                  "40 GB HBM2 1,555 GB/s)",
    },
}
REFERENCE_GPU = {
    "name": "NVIDIA H200 (where bench/results/*-cuda.json and book/results/fmnist-gpu-* were measured)",
    "tensor_tflops": 989.0, "tensor_precision": "bf16", "fp32_tflops": 67.0, "bandwidth_gbs": 4800.0,
    "memory_gib": 141.0,
    "source": "https://www.nvidia.com/en-us/data-center/h200/ (BF16 1,979 TFLOPS with sparsity = 989 dense, "
              "FP32 67 TFLOPS, 4.8 TB/s, 141 GB)",
}

MATH_EFFICIENCY = 0.5          # share of the tensor peak that large matmuls reach
TRAFFIC_PER_SAVED_BYTE = 4.0   # saved activations: written, read in backward, their gradients written and read
CUDA_CONTEXT_MIB = 500.0       # CUDA context and allocator slack, not in max_memory_allocated

MEASURED = {
    "throughput": ROOT / "bench" / "results" / "throughput-cuda.json",
    "speed": ROOT / "bench" / "results" / "speed-cuda.json",
    "fmnist_gpu": ROOT / "book" / "results" / "fmnist-gpu-sequencer2d_mini28" / "results.json",
}


def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def saved_bytes_per_image(model: torch.nn.Module, shape: tuple[int, int, int], batch: int = 2) -> float:
    """Bytes of the tensors autograd saves for backward, per image, at float32 (measured on the CPU)."""
    seen: dict[tuple[int, int], int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if isinstance(t, torch.Tensor) and not isinstance(t, torch.nn.Parameter) and t.requires_grad is not None:
            storage = t.untyped_storage()
            seen[(storage.data_ptr(), storage.nbytes())] = storage.nbytes()
        return t

    model.train()
    x = torch.zeros(batch, *shape)
    params = {p.data_ptr() for p in model.parameters()}
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x).sum()
    total = sum(n for (ptr, _), n in seen.items() if ptr not in params)
    return total / batch


def model_stats(name: str, in_chans: int, num_classes: int, side: int, **kwargs) -> dict[str, float]:
    """Parameters, MACs per image and saved activation bytes per image (float32) of a model."""
    torch.manual_seed(0)
    if name == "wide":
        model = Sequencer2D(layers=(4, 8), patch_sizes=(2, 2), embed_dims=(96, 192), hidden_sizes=(24, 48),
                            mlp_ratios=(3.0, 3.0), in_chans=in_chans, num_classes=num_classes)
    else:
        model, _ = build_model(name, in_chans, num_classes, side)
    steps = None
    if hasattr(model, "config"):  # a Sequencer: blocks x tokens per row, summed over the stages
        steps, grid = 0, side
        for blocks, patch in zip(model.config.layers, model.config.patch_sizes, strict=True):
            grid //= patch
            steps += blocks * grid
    return {"params": sum(p.numel() for p in model.parameters()), "lstm_steps": steps,
            "macs": count_macs(model, (in_chans, side, side)),
            "saved_bytes": saved_bytes_per_image(model, (in_chans, side, side), **kwargs)}


def step_terms(stats: dict, batch: int, gpu: dict, train: bool, tensor: bool) -> tuple[float, float]:
    """(math seconds, traffic seconds) of one step of ``batch`` images on ``gpu``."""
    flops = (6 if train else 2) * stats["macs"] * batch
    peak = (gpu["tensor_tflops"] if tensor else gpu["fp32_tflops"]) * 1e12 * MATH_EFFICIENCY
    element = 0.5 if tensor else 1.0  # autocast halves the float32 bytes
    traffic = (TRAFFIC_PER_SAVED_BYTE if train else 2.0) * stats["saved_bytes"] * element * batch
    return flops / peak, traffic / (gpu["bandwidth_gbs"] * 1e9)


def carry_over(ref_ips: float, ref_batch: int, ref_stats: dict, ref_tensor: bool, stats: dict, batch: int,
               gpu: dict, train: bool) -> float:
    """Images/s of ``stats`` at ``batch`` on ``gpu`` (autocast), from a measurement on the reference GPU."""
    step = ref_batch / ref_ips
    math_r, traffic_r = step_terms(ref_stats, ref_batch, REFERENCE_GPU, train, ref_tensor)
    latency = max(0.0, step - math_r - traffic_r)  # launch- and host-bound: taken as equal on every GPU
    # a model that was not measured: its latency scales with its sequential work, the LSTM steps per forward
    if stats is not ref_stats and stats.get("lstm_steps") and ref_stats.get("lstm_steps"):
        latency *= stats["lstm_steps"] / ref_stats["lstm_steps"]
    math_x, traffic_x = step_terms(stats, batch, gpu, train, True)
    return batch / (latency + math_x + traffic_x)


def peak_mib(stats: dict, batch: int, calib: float) -> float:
    return (16 * stats["params"] + calib * stats["saved_bytes"] * batch) / 2**20 + CUDA_CONTEXT_MIB


def model_table() -> dict[str, dict[str, float]]:
    """:func:`model_stats` of every model and input side that a chapter trains at the gpu budget."""
    return {
        "sequencer2d_mini32@32": model_stats("sequencer2d_mini32", 3, 10, 32),
        "wide@32": model_stats("wide", 3, 10, 32),
        "sequencer2d_mini28@28": model_stats("sequencer2d_mini28", 1, 10, 28),
        "small_cnn@28": model_stats("small_cnn", 1, 10, 28),
        "small_vit@28": model_stats("small_vit", 1, 10, 28),
        "small_cnn@32": model_stats("small_cnn", 3, 10, 32),
        "small_vit@32": model_stats("small_vit", 3, 10, 32),
        "sequencer2d_mini32@64": model_stats("sequencer2d_mini32", 3, 10, 64),
        "sequencer2d_s@224": model_stats("sequencer2d_s", 3, 10, 224, batch=1),
    }


#: Models that were not measured on the H200, and the measured model each one is carried over from.
DERIVED_FROM = {"wide@32": "sequencer2d_mini32@32", "sequencer2d_mini32@64": "sequencer2d_mini32@32",
                "small_cnn@28": "small_cnn@32", "small_vit@28": "small_vit@32"}


class Estimator:
    """Runs carried over from the H200 measurements to a target GPU (:func:`carry_over`, :func:`peak_mib`)."""

    def __init__(self, measured: dict[str, dict], stats: dict[str, dict]) -> None:
        tp, speed, fm = measured["throughput"], measured["speed"], measured["fmnist_gpu"]
        rows = {r["model"]: r for r in tp["rows"]}
        mini32, mrow = stats["sequencer2d_mini32@32"], rows["sequencer2d_mini32"]
        self.stats, self.batch = stats, tp["batch"]
        # calibration of the activation memory on the measured H200 peak (mini32, batch tp["batch"])
        self.calib = (mrow["train_peak_mib"] * 2**20 - 16 * mini32["params"]) / (tp["batch"] * mini32["saved_bytes"])
        self.infer_ratio = mrow["infer_img_s"] / mrow["train_img_s"]
        s_row = next(r for r in speed["rows"] if r["case"].startswith("sequencer2d_s, 224"))
        # measured references: stats key -> (images/s training, images/s evaluation, batch, tensor precision?)
        self.refs = {
            "sequencer2d_mini32@32": (mrow["train_img_s"], mrow["infer_img_s"], tp["batch"], True),
            "small_cnn@32": (rows["small_cnn"]["train_img_s"], rows["small_cnn"]["infer_img_s"], tp["batch"], True),
            "small_vit@32": (rows["small_vit"]["train_img_s"], rows["small_vit"]["infer_img_s"], tp["batch"], True),
            "sequencer2d_mini28@28": (fm["images_per_s"], fm["images_per_s"] * self.infer_ratio, fm["batch_size"],
                                      True),
            "sequencer2d_s@224": (s_row["ours_img_s"], s_row["ours_img_s"] * self.infer_ratio, 8, False),
        }

    def run(self, key: str, epochs: int, n_train: int, n_eval: int, batch: int, gpu: dict) -> dict:
        """Wall time, training images/s and peak memory of ``epochs`` of a run of model ``key`` on ``gpu``."""
        ref_key = key if key in self.refs else DERIVED_FROM[key]
        tr_ips, ev_ips, ref_batch, tensor = self.refs[ref_key]
        ref, stats = self.stats[ref_key], self.stats[key]
        ips = carry_over(tr_ips, ref_batch, ref, tensor, stats, batch, gpu, True)
        eps = carry_over(ev_ips, ref_batch, ref, tensor, stats, 2 * batch, gpu, False)
        return {"wall_s": epochs * (n_train / ips + n_eval / eps), "train_img_s": ips,
                "peak_mib": peak_mib(stats, batch, self.calib)}


Workloads = dict[str, list[tuple[str, tuple]]]


def workloads() -> tuple[Workloads, Workloads]:
    """Each chapter's GPU runs, ``(label, (model key, epochs, training images, evaluation images, batch))``:
    those it always does, and those it does only when its recorded runs are missing."""
    cifar, fm_gpu = recipe_defaults("cifar10", "gpu"), recipe_defaults("fashion_mnist", "gpu")
    imagenette_train, imagenette_val = 9469, 3925
    always: Workloads = {
        "07_cifar_gpu": [
            ("sequencer2d_mini32, CIFAR-10, the gpu recipe", ("sequencer2d_mini32@32", cifar["epochs"], 50_000, 10_000,
                                                              cifar["batch_size"])),
            ("the wide configuration, the same recipe", ("wide@32", cifar["epochs"], 50_000, 10_000,
                                                         cifar["batch_size"])),
            ("the demonstration (5 epochs, 10,000 images)", ("sequencer2d_mini32@32", 5, 10_000, 10_000, 64)),
        ],
        "08_imagenet_subset": [
            ("fine-tune Sequencer2D-S at 224 px, 30 epochs", ("sequencer2d_s@224", 30, imagenette_train,
                                                              imagenette_val, 64)),
            ("Sequencer2D-S from scratch at 224 px, 30 epochs", ("sequencer2d_s@224", 30, imagenette_train,
                                                                 imagenette_val, 64)),
            ("sequencer2d_mini32 from scratch at 64 px, 30 epochs", ("sequencer2d_mini32@64", 30, imagenette_train,
                                                                     imagenette_val, 64)),
            ("zero-shot evaluation of Sequencer2D-S", ("sequencer2d_s@224", 1, 0, imagenette_val, 64)),
        ],
    }
    optional: Workloads = {  # what a chapter trains only when its recorded runs are missing
        "06_training_fmnist": [
            (f"{m} on Fashion-MNIST, the gpu recipe ({fm_gpu['epochs']} epochs)",
             (f"{m}@28", fm_gpu["epochs"], 60_000, 10_000, fm_gpu["batch_size"]))
            for m in ("sequencer2d_mini28", "small_cnn", "small_vit")],
    }
    return always, optional


#: CPU-side chapters: recorded cpu-budget time x (work at gpu / work at cpu), constants from the notebooks.
CPU_SIDE: dict[str, tuple[float, str]] = {
    "00_intro": (1.0, "reads data/paper.json"),
    "01_lstm": (10 / 3, "its LSTMs run on the CPU: 10 epochs at the gpu budget vs 3 at the cpu budget"),
    "02_bilstm": (1000 / 600, "its LSTMs run on the CPU: 1000 steps at the gpu budget vs 600"),
    "03_images_as_sequences": (1.0, "a short timing sweep on the GPU (not measured there; taken as the cpu time)"),
    "04_bilstm2d": (1.0, "a short timing sweep on the GPU (not measured there; taken as the cpu time)"),
    "05_sequencer2d": (1.0, "the same sizes as the cpu budget, on the CPU"),
    "06_training_fmnist": (1.0, "reads the recorded runs; a 2,048-image demonstration"),
    "07_cifar_gpu": (1.0, "the rest of the chapter as at the cpu budget"),
    "08_imagenet_subset": (1.0, "the rest of the chapter as at the cpu budget"),
    "09_receptive_fields": (1.0, "ERFs of the recorded checkpoints"),
    "10_findings": (1.0, "reads the recorded findings"),
}


def chapter_entry(stem: str, cpu_time_s: float, est: Estimator, always: Workloads, optional: Workloads) -> dict:
    """One chapter: what it does, its CPU part, its wall time and peak memory per GPU, and each of its runs."""
    factor, what = CPU_SIDE.get(stem, (1.0, "not estimated"))
    cpu_s = cpu_time_s * factor
    if stem in always:
        what = "; ".join(label for label, _ in always[stem]) + "; and " + what
    entry: dict[str, Any] = {"what": what, "cpu_part_s": round(cpu_s), "gpus": {}, "runs": []}
    for gname, gpu in GPUS.items():
        wall, peak = cpu_s, None
        for _label, args in always.get(stem, []):
            r = est.run(*args, gpu=gpu)
            wall += r["wall_s"]
            peak = max(peak or 0.0, r["peak_mib"])
        entry["gpus"][gname] = {"wall_s": round(wall), "peak_mib": None if peak is None else round(peak)}
    for label, args in always.get(stem, []) + optional.get(stem, []):
        key, epochs, n_train, n_eval, batch = args
        entry["runs"].append({
            "run": label, "model": key, "epochs": epochs, "batch": batch,
            "optional": (label, args) in optional.get(stem, []),
            **{g: {k: round(v, 1 if k == "train_img_s" else 0) for k, v in est.run(*args, gpu=gpu).items()}
               for g, gpu in GPUS.items()}})
    return entry


def assumptions(est: Estimator) -> dict[str, Any]:
    """The estimate's model, stated in the file, with the calibrated constants."""
    return {
        "model": "one step = latency + math + memory traffic; latency = the H200 step time minus its own math "
                 "and traffic terms, taken as equal on every GPU (launch- and host-bound; for a Sequencer that "
                 "was not measured, times the ratio of sequential LSTM steps per forward, blocks x tokens per "
                 "row summed over stages); math = 6 x MACs per training image (2 x for evaluation) at "
                 f"{MATH_EFFICIENCY:.0%} of the tensor peak; traffic = {TRAFFIC_PER_SAVED_BYTE:g} x the "
                 "autograd-saved activation bytes (2 per element under autocast) per training image (2 x for "
                 "evaluation) over the spec bandwidth",
        "precision": "autocast on both: fp16 on the T4, bf16 on the A100 (train.amp_dtype('auto'))",
        "memory": f"16 bytes per parameter + batch x saved activation bytes x {est.calib:.2f} (calibrated on the "
                  f"H200 peak of sequencer2d_mini32, batch {est.batch}) + {CUDA_CONTEXT_MIB:g} MiB CUDA context",
        "evaluation": f"evaluation img/s = training img/s x {est.infer_ratio:.2f} (measured for sequencer2d_mini32) "
                      "where not measured",
        "cpu_side": "chapter work on the CPU = its recorded cpu-budget time (an idle 2-core CPU, like Colab's 2 "
                    "vCPUs) x the ratio of its work at the gpu budget",
        "not_modelled": "data loading (Imagenette JPEG decoding on Colab's 2 vCPUs may dominate the 64 px run), "
                        "the host CPU's kernel-launch speed (Colab's is slower than the H200 machine's), "
                        "downloads of data and weights, and the first-call cuDNN autotuning",
        "uncertainty": "no GPU was available to check this model: read the times as +-2x",
        "measured_on_gpu": "none on a T4 or an A100; the inputs are H200 measurements",
        "reference_gpu": REFERENCE_GPU,
        "target_gpus": GPUS,
    }


def inputs(measured: dict[str, dict], stats: dict[str, dict], cpu_times: dict[str, float]) -> dict[str, Any]:
    """Where the numbers came from: the measured files, the models' counts, the notebooks' CPU times."""
    return {
        "measured": {k: {"path": MEASURED[k].relative_to(ROOT).as_posix(), "date": data["provenance"]["date"],
                         "device": data["provenance"]["device"]} for k, data in measured.items()},
        "models": {k: {"params": v["params"], "macs": v["macs"], "lstm_steps": v["lstm_steps"],
                       "saved_mib_per_image": round(v["saved_bytes"] / 2**20, 3)}
                   for k, v in stats.items()},
        "notebooks_cpu_time_s": cpu_times,
    }


def build() -> dict:
    measured = {k: _load(path) for k, path in MEASURED.items()}
    stats = model_table()
    est = Estimator(measured, stats)
    nbs = {p.stem: nbformat.read(p, as_version=4) for p in sorted((ROOT / "book").glob("[0-9][0-9]_*.ipynb"))}
    cpu_times = {stem: nb.metadata["sequencer"]["cpu_time_s"] for stem, nb in nbs.items()}
    always, optional = workloads()
    chapters = {stem: chapter_entry(stem, float(t), est, always, optional) for stem, t in cpu_times.items()}
    return {
        "format": FORMAT,
        "about": "Expected wall time and peak GPU memory of each chapter at the gpu budget (estimates: no T4 or "
                 "A100 measurement exists; see assumptions). Written by python tools/gpu_cost.py.",
        "gpus": {k: v["name"] for k, v in GPUS.items()},
        "chapters": chapters,
        "assumptions": assumptions(est),
        "inputs": inputs(measured, stats, cpu_times),
        "provenance": {"command": "python tools/gpu_cost.py", "inputs": "see inputs.measured (no date here: "
                       "the file must be reproducible; tests/test_gpu_cost.py checks it is current)"},
    }


def render(data: dict) -> str:
    return json.dumps(data, indent=1, sort_keys=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if book/data/gpu_cost.json is not current")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    text = render(build())
    if args.check:
        current = OUT.read_text(encoding="utf-8") if OUT.is_file() else ""
        if current != text:
            print(f"{OUT.relative_to(ROOT)} is not current; run: python tools/gpu_cost.py")
            return 1
        return 0
    OUT.write_text(text, encoding="utf-8")
    for stem, entry in json.loads(text)["chapters"].items():
        print(f"{stem:24s}" + "  ".join(f"{g} {v['wall_s'] / 60:7.1f} min {v['peak_mib'] or 0:7.0f} MiB"
                                        for g, v in entry["gpus"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
