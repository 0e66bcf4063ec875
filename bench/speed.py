"""Train-step throughput of sequencer_mini against its references, as ratios measured in the same run.

* Sequencer2D (ours) vs timm's ``Sequencer2d`` on identical configs and identical weights: a small preset at
  32×32 and Sequencer2D-S at 224×224, batch 8. Goal: ours ≥ 1.0× timm.
* The from-scratch LSTM (didactic and fused paths) vs ``nn.LSTM`` on the shape of one BiLSTM2D branch of
  Sequencer2D-S's first stage (batch 8: 256 sequences of 32 tokens, C=192, h=48). Goal: fused ≤ 3× slower.

Each pair is timed in alternation (A, B, A, B, ...) so that load changes on the machine hit both alike; the
ratio of medians is reported. Usage::

    python bench/speed.py                 # CPU, writes bench/results/speed-cpu.json
    python bench/speed.py --device cuda   # GPU
    python bench/speed.py --quick         # fewer repeats, small shapes only (seconds)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import timm
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import sequencer_mini as sm  # noqa: E402
from sequencer_mini.core.provenance import write_results  # noqa: E402
from sequencer_mini.train.loop import autocast  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_pair(a: Callable[[], None], b: Callable[[], None], device: torch.device, repeats: int, warmup: int = 2):
    """Median seconds per call of ``a`` and ``b``, timed alternately."""
    for _ in range(warmup):
        a(), b()
    times_a, times_b = [], []
    for _ in range(repeats):
        for fn, store in ((a, times_a), (b, times_b)):
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            store.append(time.perf_counter() - t0)
    return statistics.median(times_a), statistics.median(times_b)


def train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, opt: torch.optim.Optimizer,
               dtype: torch.dtype | None = None) -> Callable[[], None]:
    """One training step; ``dtype``: the forward under autocast to it (None: float32)."""
    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with autocast(x.device, dtype):
            logits = model(x)
        nn.functional.cross_entropy(logits.float(), y).backward()
        opt.step()

    return step


def model_pair(name: str, kwargs: dict, size: int, in_chans: int, batch: int, device: torch.device,
               repeats: int) -> dict:
    torch.manual_seed(0)
    ref = timm.create_model("sequencer2d_s", **kwargs, in_chans=in_chans).to(device).train()
    ours = sm.Sequencer2D(**kwargs, in_chans=in_chans).to(device).train()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(batch, in_chans, size, size, device=device)
    y = torch.randint(0, kwargs.get("num_classes", 1000), (batch,), device=device)
    step_ours = train_step(ours, x, y, torch.optim.SGD(ours.parameters(), lr=1e-3))
    step_ref = train_step(ref, x, y, torch.optim.SGD(ref.parameters(), lr=1e-3))
    t_ours, t_ref = time_pair(step_ours, step_ref, device, repeats)
    return {
        "case": name,
        "ours_img_s": batch / t_ours,
        "reference": "timm Sequencer2d",
        "reference_img_s": batch / t_ref,
        "ratio": t_ref / t_ours,  # > 1: ours is faster
        "goal": ">= 1.0",
    }


def lstm_cases(device: torch.device, repeats: int, quick: bool) -> list[dict]:
    seqs, steps, c, h = (64, 16, 64, 16) if quick else (256, 32, 192, 48)
    torch.manual_seed(0)
    ref = nn.LSTM(c, h, batch_first=True, bidirectional=True).to(device)
    x = torch.randn(seqs, steps, c, device=device, requires_grad=True)
    rows = []
    for fused in (True, False):
        ours = sm.LSTM(c, h, bidirectional=True, fused=fused).to(device)
        ours.load_state_dict(ref.state_dict())

        def run(m: nn.Module = ours) -> None:
            m(x)[0].sum().backward()

        def run_ref() -> None:
            ref(x)[0].sum().backward()

        t_ours, t_ref = time_pair(run, run_ref, device, repeats)
        rows.append({
            "case": f"BiLSTM fwd+bwd {seqs}×{steps}×{c}, h={h}, {'fused' if fused else 'didactic'}",
            "ours_seq_s": seqs / t_ours,
            "reference": "nn.LSTM",
            "reference_seq_s": seqs / t_ref,
            "ratio": t_ref / t_ours,
            "slowdown": t_ours / t_ref,
            "goal": "slowdown <= 3" if fused else "(didactic, no goal)",
        })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="small shapes and 3 repeats")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    repeats = 3 if args.quick else args.repeats
    mini = dict(layers=(2, 4), patch_sizes=(2, 2), embed_dims=(64, 128), hidden_sizes=(16, 32),
                mlp_ratios=(3.0, 3.0), num_classes=10)
    rows = [model_pair("sequencer2d_mini32, 32×32, batch 64", mini, 32, 3, 64, device, repeats)]
    if not args.quick:
        s = dict(layers=(4, 3, 8, 3), patch_sizes=(7, 2, 1, 1), embed_dims=(192, 384, 384, 384),
                 hidden_sizes=(48, 96, 96, 96), mlp_ratios=(3.0,) * 4)
        rows.append(model_pair("sequencer2d_s, 224×224, batch 8", s, 224, 3, 8, device, repeats))
    rows += lstm_cases(device, repeats, args.quick)
    print(f"{'case':<58}{'ours':>10}{'reference':>12}{'ratio':>8}  goal")
    for r in rows:
        ours = r.get("ours_img_s", r.get("ours_seq_s"))
        ref = r.get("reference_img_s", r.get("reference_seq_s"))
        print(f"{r['case']:<58}{ours:>10.1f}{ref:>12.1f}{r['ratio']:>8.2f}  {r['goal']}")
    print("ratio = reference time / our time (> 1 means ours is faster); throughput in images/s or sequences/s")
    out = args.out or Path(__file__).parent / "results" / f"speed-{device.type}{'-quick' if args.quick else ''}.json"
    write_results(out, {"benchmark": "speed", "device": str(device), "threads": torch.get_num_threads(), "rows": rows})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
