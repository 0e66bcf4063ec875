"""Train-step speed of bfloat16 autocast against float32 on the CPU, as ratios measured in the same run.

Chapter 6's CPU-goal run trains ``sequencer2d_fast28`` with ``--amp bf16``. Whether that pays depends on the CPU:
oneDNN runs bfloat16 matrix products natively only with AVX512-BF16 or AMX. This benchmark times one training
step (forward, backward, AdamW) of each Fashion-MNIST model at batch 128, 28×28, in float32 and under
``torch.autocast('cpu', torch.bfloat16)``, alternately (A, B, A, B, ...), and reports the ratio of medians.

    python bench/cpu_amp.py            # writes bench/results/amp-cpu.json
    python bench/cpu_amp.py --quick    # 3 repeats, batch 32 (seconds)
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import time_pair, train_step  # noqa: E402

from sequencer_mini.core.provenance import write_results  # noqa: E402
from sequencer_mini.train.loop import cpu_bf16_native
from sequencer_mini.train.recipes import build_model  # noqa: E402

MODELS = ("sequencer2d_mini28", "sequencer2d_fast28", "small_cnn", "small_vit")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "amp-cpu.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats, batch = (3, 32) if args.quick else (args.repeats, args.batch)
    native = cpu_bf16_native()
    rows = []
    for name in MODELS:
        torch.manual_seed(0)
        fp32, _ = build_model(name, 1, 10, 28)
        bf16 = copy.deepcopy(fp32)  # the same weights, its own optimizer state
        x, y = torch.randn(batch, 1, 28, 28), torch.randint(0, 10, (batch,))
        steps = [train_step(m, x, y, torch.optim.AdamW(m.parameters(), lr=1e-3), dtype)
                 for m, dtype in ((fp32, None), (bf16, torch.bfloat16))]
        t32, t16 = time_pair(*steps, torch.device("cpu"), repeats)
        rows.append({"model": name, "batch": batch, "fp32_img_per_s": batch / t32, "bf16_img_per_s": batch / t16,
                     "speedup_bf16_over_fp32": t32 / t16})
        print(f"{name:<20} fp32 {batch / t32:7.0f} img/s   bf16 {batch / t16:7.0f} img/s   "
              f"bf16/fp32 speed {t32 / t16:.2f}x", flush=True)
    if not args.quick:
        write_results(args.out, {"benchmark": "cpu_amp", "native_bf16": native, "threads": torch.get_num_threads(),
                                 "repeats": repeats, "rows": rows})
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
