"""Gradient checkpointing on Sequencer2D: peak memory and speed of one training pass, with and without, same run.

``model.set_grad_checkpointing(True)`` keeps only each block's input during the forward pass and recomputes
the block in the backward pass. The memory it frees is the activations inside the blocks, above all the LSTM
gates of every step, which grow with the number of tokens, i.e. with the square of the resolution: the case
the paper makes for Sequencer (high resolution) is the case where this matters.

Each measurement is a **fresh Python subprocess** (as :func:`sequencer_mini.measure.cost.peak_memory` does): build
the model, warm the math libraries up on a tiny input, read the resident set size, reset the kernel's peak
counter (``/proc/self/clear_refs``), run one forward + backward, and report ``VmHWM - VmRSS``; then time
``--repeats`` more passes (median). Plain and checkpointed alternate for each resolution, on one thread.

    python bench/grad_checkpointing.py            # sequencer2d_s, batch 1, 224 and 448 px (a few minutes)
    python bench/grad_checkpointing.py --quick    # sequencer2d_mini32 at 32 and 64 px (seconds on an idle CPU);
                                                  # writes bench/results/grad-checkpointing-cpu-quick.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHILD = r"""
import gc, json, statistics, sys, time
import torch
from sequencer_mini.models.sequencer2d import create_model

def status_kib(key):
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])

name, side, batch, ckpt, repeats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1", int(sys.argv[5])
torch.set_num_threads(1)
torch.manual_seed(0)
model = create_model(name).train()
model.set_grad_checkpointing(ckpt)
torch.nn.init.normal_(model.head.fc.weight, std=0.02)  # a non-zero head: the backward reaches every block
red = model.reduction

def step(x):
    model.zero_grad(set_to_none=True)
    model(x).logsumexp(-1).mean().backward()

step(torch.randn(1, model.in_chans, 2 * red, 2 * red))  # warm-up: load and initialise the libraries
x = torch.randn(batch, model.in_chans, side, side)
gc.collect()
model.zero_grad(set_to_none=True)
base = status_kib("VmRSS")
with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
    fh.write("5")
t0 = time.perf_counter()
step(x)
first = time.perf_counter() - t0
peak = status_kib("VmHWM")
times = [first]
for _ in range(repeats):
    t0 = time.perf_counter()
    step(x)
    times.append(time.perf_counter() - t0)
print(json.dumps({"peak_mib": (peak - base) / 1024, "baseline_mib": base / 1024, "seconds": statistics.median(times),
                  "times_s": times}))
"""


def measure(name: str, side: int, batch: int, ckpt: bool, repeats: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", CHILD, name, str(side), str(batch), "1" if ckpt else "0",
                           str(repeats)], capture_output=True, text=True, env=env, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"measuring subprocess failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="sequencer2d_s")
    parser.add_argument("--sides", type=int, nargs="+", default=[224, 448])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2, help="timed passes after the measured one")
    parser.add_argument("--quick", action="store_true", help="sequencer2d_mini32 at 32 and 64 px")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "grad-checkpointing-cpu.json")
    args = parser.parse_args()
    if args.quick:
        args.model, args.sides = "sequencer2d_mini32", [32, 64]
        args.out = args.out.with_name("grad-checkpointing-cpu-quick.json")
    from sequencer_mini.core.provenance import write_results

    rows = []
    for side in args.sides:
        plain = measure(args.model, side, args.batch, False, args.repeats)
        ckpt = measure(args.model, side, args.batch, True, args.repeats)
        row = {"side": side, "batch": args.batch, "plain": plain, "checkpointed": ckpt,
               "memory_ratio": ckpt["peak_mib"] / plain["peak_mib"], "time_ratio": ckpt["seconds"] / plain["seconds"]}
        rows.append(row)
        print(f"{args.model} {side}px batch {args.batch}: peak {plain['peak_mib']:.0f} -> {ckpt['peak_mib']:.0f} MiB "
              f"(x{row['memory_ratio']:.2f}), step {plain['seconds']:.2f} -> {ckpt['seconds']:.2f} s "
              f"(x{row['time_ratio']:.2f})", file=sys.stderr)
    payload = {
        "description": "Gradient checkpointing (model.set_grad_checkpointing(True)) against none: peak resident memory "
                       "of one forward+backward pass (VmHWM - VmRSS in a fresh subprocess after a warm-up) and the "
                       "median time of a pass, on one CPU thread; ratios are checkpointed / plain, measured in the "
                       "same run.",
        "model": args.model, "device": "cpu", "threads": 1, "rows": rows,
    }
    write_results(args.out, payload)
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
