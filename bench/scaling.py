"""Cost against input resolution: Sequencer2D vs a CNN and a ViT of the same size, on the CPU or a GPU.

For each model and each input side it records parameters, MACs (LSTMs and attention counted; also what
``FlopCounterMode`` alone reports), images/s of a forward pass (and, on CUDA, of a forward+backward pass) and
the peak memory increase of a forward and of a forward+backward pass (``sequencer_mini.measure.cost`` explains
both measurement methods: ``torch.cuda.max_memory_allocated`` on a GPU, the peak RSS of a fresh subprocess
on the CPU). The ViT is measured twice: with the attention matrix materialised (PyTorch's math backend, as
ViT code of 2022 computed it) and with PyTorch's fused attention. It also records the MACs of
Sequencer2D-S/M/L at 224×224, with and without the LSTMs, for the table next to the paper's.

Usage::

    python bench/scaling.py                    # CPU sweep -> book/results/scaling-cpu.json
    python bench/scaling.py --device cuda      # GPU sweep -> book/results/scaling-cuda.json (~1 min on an H200)
    python bench/scaling.py --quick            # a few seconds; -> _build/scaling-<device>-quick.json

Timings are medians of repeated runs with ``torch.cuda.synchronize`` around each on a GPU; they are for the
figures, not tests. Float32 throughout.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: Sweep sizes per (device type, quick).
DEFAULTS = {
    ("cpu", False): dict(sides=[32, 64, 96, 128, 160, 192], batch_size=2, warmup=1, repeats=3,
                         throughput_modes=["infer"], imagenet_side=224),
    ("cpu", True): dict(sides=[32, 64], batch_size=2, warmup=0, repeats=1, throughput_modes=["infer"],
                        imagenet_side=28),
    ("cuda", False): dict(sides=[32, 64, 96, 128, 192, 256, 384], batch_size=16, warmup=2, repeats=5,
                          throughput_modes=["infer", "train"], imagenet_side=224),
    ("cuda", True): dict(sides=[32, 64, 128], batch_size=8, warmup=1, repeats=2, throughput_modes=["infer", "train"],
                         imagenet_side=56),
}


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(prog="python bench/scaling.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto (default: cpu)")
    p.add_argument("--quick", action="store_true", help="two or three small sides, one repeat (seconds)")
    p.add_argument("--sides", nargs="+", type=int, help="input sides in pixels (multiples of 4)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--repeats", type=int)
    p.add_argument("--threads", type=int, help="torch threads (CPU)")
    p.add_argument("--no-imagenet", action="store_true", help="skip the Sequencer2D-S/M/L MAC table")
    p.add_argument("--out", help="results file (default: book/results/scaling-<device>.json; quick: _build/...)")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)

    import torch

    from sequencer_mini.core.provenance import write_results
    from sequencer_mini.measure import cost

    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda but torch.cuda.is_available() is False")
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = dict(DEFAULTS[(device.type, args.quick)])
    for key in ("sides", "batch_size", "repeats"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    bad = [s for s in cfg["sides"] if s % 4]
    if bad:
        p.error(f"sides must be multiples of 4 (Sequencer2D mini28 and the ViT's 4-pixel patches), got {bad}")
    tag = "cuda" if device.type == "cuda" else "cpu"
    out = Path(args.out) if args.out else (ROOT / "_build" / f"scaling-{tag}-quick.json" if args.quick
                                           else ROOT / "book" / "results" / f"scaling-{tag}.json")
    log = (lambda msg: None) if args.quiet else (lambda msg: print(f"[scaling] {msg}", file=sys.stderr, flush=True))
    log(f"device {device}, threads {torch.get_num_threads()}, {cfg}")

    t0 = time.perf_counter()
    rows = cost.profile_sweep(cost.SCALING_SPECS, cfg["sides"], batch_size=cfg["batch_size"], device=device,
                              repeats=cfg["repeats"], warmup=cfg["warmup"], throughput_modes=cfg["throughput_modes"],
                              log=log)
    imagenet = [] if args.no_imagenet else cost.imagenet_macs(side=cfg["imagenet_side"], device=device, log=log)
    payload = {
        "benchmark": "scaling",
        "device_type": tag,
        "device_detail": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch_threads": torch.get_num_threads(),
        "dtype": "float32",
        "quick": args.quick,
        "config": cfg,
        "models": [s.to_dict() for s in cost.SCALING_SPECS],
        "rows": rows,
        "imagenet_macs": imagenet,
        "memory_method": rows[0]["memory_method"] if rows else None,
        "wall_s": time.perf_counter() - t0,
    }
    if device.type == "cuda":
        payload["cuda"] = {"capability": list(torch.cuda.get_device_capability(device)),
                           "total_memory_gib": torch.cuda.get_device_properties(device).total_memory / 2**30,
                           "cudnn": torch.backends.cudnn.version(),
                           "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
                           "tf32_cudnn": torch.backends.cudnn.allow_tf32}
    path = write_results(out, payload)
    log(f"wrote {path} in {payload['wall_s']:.0f}s")
    return path


if __name__ == "__main__":
    main()
