"""Training speed of the CPU recipe's levers, as ratios against float32 / batch 128 / 28 px in the same run.

Chapter 6 gives three models the same number of training images. What those images cost in time depends on how
fast each model trains, so this benchmark times one training step (forward, backward, AdamW) of each race model
under each speed lever, alternating every variant with the reference (A, B, A, B, ...) so load changes hit both
alike, and reports images/s and the ratio of medians:

* ``bf16``: ``torch.autocast('cpu', torch.bfloat16)`` (pays only where oneDNN has native bfloat16);
* ``batch 64`` / ``batch 256``: images/s at other batch sizes;
* ``20 px`` / ``24 px``: progressive resizing's cheaper early epochs;
* ``channels_last``: the NHWC memory layout on the CPU;
* ``compile``: ``torch.compile`` (inductor), compile time reported separately.

The ``bf16`` rows give the images/s that define each model's share of the race (``--budget-s``, default 900 s):
``epochs = budget_s x img/s / (train images + the per-epoch evaluation cost)``.

    python bench/cpu_recipe_speed.py            # writes bench/results/cpu-recipe-speed.json
    python bench/cpu_recipe_speed.py --quick    # 2 repeats, no compile (seconds)
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import time_pair, train_step  # noqa: E402

from sequencer_mini.core.provenance import write_results  # noqa: E402
from sequencer_mini.train.loop import cpu_bf16_native
from sequencer_mini.train.recipes import build_model  # noqa: E402

# the race's three models (the ViT at depth 6 so that parameters stay within 15 % of each other)
RACE = {"sequencer2d_fast28": {}, "small_cnn": {}, "small_vit": {"depth": 6}}


def _step(model: torch.nn.Module, batch: int, size: int, dtype: torch.dtype | None, channels_last: bool = False):
    x, y = torch.randn(batch, 1, size, size), torch.randint(0, 10, (batch,))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    return train_step(model, x, y, torch.optim.AdamW(model.parameters(), lr=1e-3), dtype)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).resolve().parent / "results" / "cpu-recipe-speed.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    repeats = 2 if args.quick else args.repeats
    bf16 = torch.bfloat16
    rows = []
    for name, overrides in RACE.items():
        torch.manual_seed(0)
        ref_model, _ = build_model(name, 1, 10, 28, **overrides)
        params = sum(p.numel() for p in ref_model.parameters())
        variants = {"bf16": dict(dtype=bf16), "bf16, batch 64": dict(dtype=bf16, batch=64),
                    "bf16, batch 256": dict(dtype=bf16, batch=256), "bf16, 20 px": dict(dtype=bf16, size=20),
                    "bf16, 24 px": dict(dtype=bf16, size=24),
                    "bf16, channels_last": dict(dtype=bf16, channels_last=True)}
        if not (args.quick or args.no_compile):
            variants["bf16, torch.compile"] = dict(dtype=bf16, compile=True)
        for label, v in variants.items():
            batch, size = v.get("batch", 128), v.get("size", 28)
            model = copy.deepcopy(ref_model)
            compile_s = None
            if v.get("compile"):
                t0 = time.perf_counter()
                model = torch.compile(model)
                _step(model, batch, size, v["dtype"])()  # the first call compiles
                compile_s = time.perf_counter() - t0
            ref = _step(copy.deepcopy(ref_model), 128, 28, None)
            var = _step(model, batch, size, v["dtype"], v.get("channels_last", False))
            t_ref, t_var = time_pair(ref, var, torch.device("cpu"), repeats)
            row = {"model": name, "model_args": overrides, "params": params, "variant": label, "batch": batch,
                   "img_size": size, "img_per_s": batch / t_var, "reference_img_per_s": 128 / t_ref,
                   "speed_ratio": (batch / t_var) / (128 / t_ref), "compile_s": compile_s}
            rows.append(row)
            print(f"{name:<20} {label:<22} {row['img_per_s']:7.0f} img/s  vs fp32 b128 28px "
                  f"{row['reference_img_per_s']:7.0f}: {row['speed_ratio']:.2f}x"
                  + (f"  (compile {compile_s:.0f} s)" if compile_s else ""), flush=True)
    if not args.quick:
        write_results(args.out, {"benchmark": "cpu_recipe_speed", "native_bf16": cpu_bf16_native(),
                                 "threads": torch.get_num_threads(), "repeats": repeats, "rows": rows})
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
