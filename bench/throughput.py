"""Training and inference throughput on dataset-shaped random tensors (no data needed), for the GPU chapters.

For each model: images/s of a full training step (forward, backward, AdamW step) and of inference, with the
training chapter's CUDA settings (bf16 autocast, channels-last), and the peak GPU memory. From these the
chapters derive the expected time per epoch (e.g. 50,000 CIFAR images / train images/s). The reference in
the same run is the small CNN, so the ratios carry over to other GPUs better than the absolute numbers.

    python bench/throughput.py --device cuda                 # CIFAR-shaped (3×32×32), batch 256
    python bench/throughput.py --device cpu --quick          # a smoke run
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sequencer_mini.core.provenance import write_results  # noqa: E402
from sequencer_mini.train.recipes import build_model  # noqa: E402

MODELS = ["small_cnn", "small_vit", "sequencer2d_mini32"]


def measure(name: str, shape: tuple[int, int, int], batch: int, device: torch.device, steps: int) -> dict:
    in_chans, size, _ = shape
    torch.manual_seed(0)
    model, _cfg = build_model(name, in_chans, 10, size)
    cuda = device.type == "cuda"
    model = model.to(device, memory_format=torch.channels_last if cuda else torch.contiguous_format)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(batch, *shape, device=device)
    if cuda:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,), device=device)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else torch.autocast("cpu", enabled=False)

    def train_step() -> None:
        opt.zero_grad(set_to_none=True)
        with amp:
            loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()

    @torch.no_grad()
    def infer_step() -> None:
        with amp:
            model(x)

    def timed(fn, mode: bool) -> float:
        model.train(mode)
        for _ in range(3):
            fn()
        times = []
        for _ in range(steps):
            if cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        return batch / statistics.median(times)

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    train_ips = timed(train_step, True)
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else None
    infer_ips = timed(infer_step, False)
    return {
        "model": name,
        "params": sum(p.numel() for p in model.parameters()),
        "train_img_s": train_ips,
        "infer_img_s": infer_ips,
        "train_peak_mib": peak,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--shape", default="3,32,32", help="C,H,W of one image")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    shape = tuple(int(v) for v in args.shape.split(","))
    batch, steps = (16, 2) if args.quick else (args.batch, args.steps)
    rows = [measure(name, shape, batch, device, steps) for name in args.models.split(",")]
    ref = next((r for r in rows if r["model"] == "small_cnn"), rows[0])
    for r in rows:
        r["train_vs_cnn"] = r["train_img_s"] / ref["train_img_s"]
        r["epoch_s_50k"] = 50_000 / r["train_img_s"]
    print(f"{'model':<22}{'params':>10}{'train img/s':>13}{'infer img/s':>13}{'×CNN':>7}{'s/epoch(50k)':>14}")
    for r in rows:
        print(f"{r['model']:<22}{r['params']:>10,}{r['train_img_s']:>13.0f}{r['infer_img_s']:>13.0f}"
              f"{r['train_vs_cnn']:>7.2f}{r['epoch_s_50k']:>14.1f}")
    out = args.out or Path(__file__).parent / "results" / f"throughput-{device.type}.json"
    write_results(out, {"benchmark": "throughput", "shape": shape, "batch": batch, "device": str(device),
                        "amp": "bf16" if device.type == "cuda" else "off", "rows": rows})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
