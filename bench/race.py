"""Chapter 6's race: what 15 CPU minutes buy a Sequencer, a CNN and a ViT of about the same size.

Three steps, each writing results files with provenance under ``book/results/``:

    python bench/race.py sweep              # each model's peak learning rate, chosen on validation images
    python bench/race.py run --seeds 0 1    # the race: each recipe of sequencer_mini/train/recipes.py, per seed
    python bench/race.py ablate             # the Sequencer's other full-length recipes (chapter 6's recipe table)
    python bench/race.py commands           # print the exact training commands (what the README lists)

The sweep gives every model the same small budget: one epoch of 20,000 training images at each of three peak
learning rates, scored on 5,000 validation images carved from the training set (never the test set). The race
recipes (``fmnist-race-*`` in ``sequencer_mini/train/recipes.py``) then use each model's best rate. ``--jobs 2 --threads
1`` runs two trainings side by side with one thread each (more images per second in total on 2 cores than one
run with two threads); a recipe is defined by the images it shows, so its result does not depend on that, only
its wall time does (``--jobs 1 --threads 2`` is the setting that the 15-minute figures refer to).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from sequencer_mini.train.recipes import RACE_MODELS, RECIPES, recipe_table_commands  # noqa: E402

SWEEP_LRS = ("1e-3", "2e-3", "4e-3")
SWEEP_DIR = "book/results/fmnist-sweep"


def sweep_commands(threads: int) -> list[list[str]]:
    cmds = []
    for model, spec in RACE_MODELS.items():
        for lr in SWEEP_LRS:
            cmd = ["python", "-m", "sequencer_mini.train", "--dataset", "fashion_mnist", "--model", model]
            for arg in spec["model_arg"]:
                cmd += ["--model-arg", arg]
            cmd += ["--budget", "cpu", "--limit-train", "25000", "--val", "5000", "--epochs", "1", "--batch-size",
                   "128", "--lr", lr, "--warmup-epochs", "0.3", "--aug", "none", "--smoothing", "0.1",
                   "--amp", spec["amp"], "--threads", str(threads), "--out", f"{SWEEP_DIR}/{model}-lr{lr}"]
            cmds.append(cmd)
    return cmds


def race_commands(seeds: list[int], threads: int) -> list[list[str]]:
    return [["python", "-m", "sequencer_mini.train", "--recipe", name, "--seed", str(seed), "--threads", str(threads),
             "--keep-epochs", "--out", f"book/results/{name}-s{seed}"]
            for seed in seeds for name in sorted(RECIPES) if name.startswith("fmnist-race-")]


def sweep_choice(folder: Path = ROOT / SWEEP_DIR) -> dict[str, dict]:
    """model -> {"lr": best peak lr on validation, "val_acc": {lr: accuracy}} from the sweep's results files."""
    out: dict[str, dict] = {}
    for f in sorted(folder.glob("*/results.json")):
        r = json.loads(f.read_text())
        entry = out.setdefault(r["model"], {"val_acc": {}})
        entry["val_acc"][r["recipe"]["lr"]] = r["final_val_acc"]
    for entry in out.values():
        entry["lr"] = max(entry["val_acc"], key=entry["val_acc"].get)
    return out


def _run(cmd: list[str], log: Path) -> int:
    env = {**os.environ, "SEQUENCER_QUIET": "1"}
    with open(log, "w") as f:
        print("$", shlex.join(cmd), flush=True)
        return subprocess.call(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, env=env)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("step", choices=["sweep", "run", "ablate", "commands"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--logs", type=Path, default=Path("/tmp/race-logs"))
    args = p.parse_args()
    # ablate: chapter 6's recipe table, the Sequencer's full-length runs that are not race runs (RECIPE_TABLE)
    cmds = {"sweep": sweep_commands, "ablate": recipe_table_commands}.get(
        args.step, lambda t: race_commands(args.seeds, t))(args.threads)
    if args.step == "commands":
        everything = sweep_commands(args.threads) + cmds + recipe_table_commands(args.threads)
        print("\n".join(shlex.join(c) for c in everything))
        return
    args.logs.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(args.jobs) as pool:
        codes = list(pool.map(lambda c: _run(c, args.logs / (Path(c[-1]).name + ".log")), cmds))
    if args.step == "sweep":
        for model, entry in sweep_choice().items():
            print(f"{model}: best peak lr {entry['lr']:g} (validation accuracy {entry['val_acc']})")
    sys.exit(max(codes))


if __name__ == "__main__":
    main()
