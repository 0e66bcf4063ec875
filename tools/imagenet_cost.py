#!/usr/bin/env python
"""The cost of the paper's ImageNet-1k recipe, computed from published numbers, as a table in the appendix.

Inputs: ``book/data/paper.json`` (the official recipe: epochs, global batch, GPUs; each model's MACs per image
at 224 px, the README's "FLOPs" column, which counts multiply-accumulates including the LSTMs) and
``book/data/beyond_one_gpu.json`` (the size of the ImageNet-1k training set; timm's measured training
throughput on one RTX 3090). Nothing is measured here.

* optimizer steps: ``epochs × floor(images / global batch)`` (timm's training loader drops the last batch);
* training compute: ``6 × MACs × images × epochs`` FLOPs (a forward pass is 2 FLOPs per MAC; the backward
  pass costs about twice the forward);
* GPU-hours: ``images × epochs / throughput`` at timm's measured RTX 3090 speed, and the wall-clock time on
  the recipe's 8 such GPUs with perfect scaling (a lower bound: data loading and the all-reduce are not in it).

Usage::

    python tools/imagenet_cost.py           # rewrite the table in book/appendix_beyond_one_gpu.md
    python tools/imagenet_cost.py --check   # exit 1 if the table is not what this script writes
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "book" / "appendix_beyond_one_gpu.md"
START, END = "<!-- imagenet-cost:start (tools/imagenet_cost.py) -->", "<!-- imagenet-cost:end -->"


def estimate() -> dict:
    paper = json.loads((ROOT / "book" / "data" / "paper.json").read_text(encoding="utf-8"))
    extra = json.loads((ROOT / "book" / "data" / "beyond_one_gpu.json").read_text(encoding="utf-8"))
    recipe = paper["training_recipe_imagenet"]
    images = extra["imagenet_train_images"]["value"]
    epochs, batch, gpus = recipe["epochs"], recipe["global_batch"], recipe["gpus"]
    rows = []
    for model, numbers in paper["imagenet_224"]["models"].items():
        speed = extra["timm_train_throughput"]["models"][model]["images_per_s"]
        seen = images * epochs
        gpu_hours = seen / speed / 3600
        rows.append({"model": model, "macs_G": numbers["flops_G"], "top1": numbers["top1"],
                     "steps": epochs * (images // batch), "exaflop": 6 * numbers["flops_G"] * 1e9 * seen / 1e18,
                     "images_per_s": speed, "gpu_hours": gpu_hours, "wall_days": gpu_hours / gpus / 24})
    return {"images": images, "epochs": epochs, "global_batch": batch, "gpus": gpus,
            "gpu": extra["timm_train_throughput"]["gpu"], "rows": rows}


def table(est: dict) -> str:
    lines = [
        f"| model | MACs / image | top-1 (paper) | optimizer steps | training compute | {est['gpu']} img/s (timm) "
        f"| {est['gpu']} GPU-hours | days on {est['gpus']} GPUs |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in est["rows"]:
        lines.append(f"| {r['model']} | {r['macs_G']:.1f} G | {r['top1']:.1f} % | {r['steps']:,} | "
                     f"{r['exaflop']:.1f} EFLOP | {r['images_per_s']:.0f} | {r['gpu_hours']:,.0f} | "
                     f"{r['wall_days']:.1f} |")
    lines.append("")
    lines.append(f"*{est['images']:,} training images × {est['epochs']} epochs at a global batch of "
                 f"{est['global_batch']:,}; computed by `tools/imagenet_cost.py` from `book/data/paper.json` and "
                 f"`book/data/beyond_one_gpu.json`.*")
    return "\n".join(lines)


def render(page_text: str) -> str:
    head, rest = page_text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{table(estimate())}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    current = PAGE.read_text(encoding="utf-8")
    new = render(current)
    if args.check:
        if new != current:
            print(f"{PAGE.relative_to(ROOT)}: the cost table is out of date; run: python tools/imagenet_cost.py")
            return 1
        return 0
    PAGE.write_text(new, encoding="utf-8")
    print(f"wrote the cost table in {PAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
