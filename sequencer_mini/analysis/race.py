"""Chapter 6: reading the race — three models, the same 15 CPU minutes, several seeds.

The runs are the results files that ``python -m sequencer_mini.train --recipe fmnist-race-<model> --seed S``
writes under ``book/results/fmnist-race-<model>-s<S>/`` (``bench/race.py run`` makes them all). This module
turns them into what the chapter shows: one row per model with the mean and spread over seeds, a verdict
computed from those numbers (who wins, by how much, and whether the seeds agree), and curves of test accuracy
against images seen and against training time.

Reported accuracies are the **last epoch's** (the recipe fixes the number of epochs in advance); nothing is
chosen on the test set.
"""
from __future__ import annotations

import re
import statistics
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Sequence
from typing import Any

from sequencer_mini.core.provenance import read_json_object
from sequencer_mini.measure.cost import param_count
from sequencer_mini.models.sequencer2d import Sequencer2D
from sequencer_mini.train.recipes import LABELS  # the race models and their labels, with their recipes

__all__ = ["RaceRow", "read_race", "race_rows", "race_verdict", "gap_by_images", "plot_race", "recipe_levers",
           "LABELS"]

_RUN = re.compile(r"fmnist-race-(?P<model>.+)-s(?P<seed>\d+)$")


def read_race(results_dir: str | Path) -> dict[str, dict[int, dict[str, Any]]]:
    """``{model: {seed: results}}`` for every ``fmnist-race-<model>-s<seed>/results.json`` under ``results_dir``
    that finished (``complete``). Dry runs (``provenance.dry_run``) are never read as results."""
    runs: dict[str, dict[int, dict[str, Any]]] = {}
    for path in sorted(Path(results_dir).glob("fmnist-race-*-s*/results.json")):
        match = _RUN.match(path.parent.name)
        results = read_json_object(path, "race results file", "remake the run: python bench/race.py run")
        if not match or not results.get("complete") or (results.get("provenance") or {}).get("dry_run"):
            continue
        runs.setdefault(match["model"], {})[int(match["seed"])] = results
    return runs


@dataclass
class RaceRow:
    """One model's race: final test accuracy per seed and the cost of one run (all seeds share the recipe)."""
    model: str
    label: str
    params: int
    macs: int
    seeds: list[int]
    accs: list[float]          # final test accuracy per seed, in [0, 1]
    images_seen: int           # per run: epochs x training images
    epochs: int
    lr: float
    wall_s: dict[int, float]   # seed -> wall time of the whole call (training + per-epoch evaluation)
    threads: dict[int, int]    # seed -> torch threads of that run
    images_per_s: dict[int, float]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.accs)

    @property
    def spread(self) -> float:
        """Half the range over seeds (with two seeds: the distance of each from the mean)."""
        return (max(self.accs) - min(self.accs)) / 2


def race_rows(runs: dict[str, dict[int, dict[str, Any]]]) -> list[RaceRow]:
    """One ``RaceRow`` per model, best mean first."""
    rows = []
    for model, by_seed in runs.items():
        seeds = sorted(by_seed)
        first = by_seed[seeds[0]]
        rows.append(RaceRow(
            model=model, label=LABELS.get(model, model), params=first["params"], macs=first["macs"], seeds=seeds,
            accs=[by_seed[s]["final_test_acc"] for s in seeds], images_seen=first["images_seen"],
            epochs=first["epochs_completed"], lr=first["recipe"]["lr"],
            wall_s={s: by_seed[s]["wall_time_s"] for s in seeds},
            threads={s: by_seed[s]["recipe"]["threads"] for s in seeds},
            images_per_s={s: by_seed[s]["images_per_s"] for s in seeds}))
    return sorted(rows, key=lambda r: -r.mean)


def race_verdict(rows: Sequence[RaceRow]) -> str:
    """A sentence computed from the rows: the winner, its margin over the runner-up, and whether every seed of
    the winner beats every seed of the runner-up (a margin larger than the seed spread) or not."""
    if len(rows) < 2:
        return "not enough models have finished runs to compare"
    first, second = rows[0], rows[1]
    margin = 100 * (first.mean - second.mean)
    clear = min(first.accs) > max(second.accs)
    n = min(len(first.accs), len(second.accs))
    if n < 2:
        return (f"{first.label} is ahead of {second.label} by {margin:.2f} points ({100 * first.mean:.2f} % vs "
                f"{100 * second.mean:.2f} %) with one seed each, so the seed-to-seed spread is not measured yet")
    return (f"{first.label} wins by {margin:.2f} points over {second.label} "
            f"({100 * first.mean:.2f} % vs {100 * second.mean:.2f} %, mean of {n} seeds); "
            + ("every seed of the winner beats every seed of the runner-up" if clear else
               "the seeds overlap, so this margin is within the seed-to-seed spread"))


def gap_by_images(runs: dict[str, dict[int, dict[str, Any]]], model: str, reference: str, seed: int = 0,
                  key: str = "train_acc") -> list[tuple[int, float]]:
    """``[(images seen, reference - model), ...]`` of the history entry ``key`` at the epochs where both runs have
    seen the same number of images (the slower model stops earlier). The default, ``train_acc``, is the raw
    weights' accuracy on the epoch's own training batches: a measure of how fast each model learns per image that
    the EMA's lag does not distort (the EMA's test accuracy trails the raw weights in the first epochs)."""
    a, b = runs[model][seed]["history"], runs[reference][seed]["history"]
    at_b = dict(zip(b["images_seen"], b[key], strict=True))
    return [(n, at_b[n] - v) for n, v in zip(a["images_seen"], a[key], strict=True) if n in at_b]


def plot_race(runs: dict[str, dict[int, dict[str, Any]]], reference: dict[str, Any] | None = None):
    """Test accuracy per epoch against images seen (every seed; dotted: the accuracy on the epoch's training
    batches) and against minutes of training (seed runs that had the CPU to themselves, i.e. the most threads).
    ``reference``: an extra curve ``{"label", "images", "acc"}`` (chapter 1's row LSTM). Returns the Figure."""
    # import cost: matplotlib loads only when a figure is drawn
    import matplotlib.pyplot as plt

    fig, (ax_img, ax_time) = plt.subplots(1, 2, figsize=(10, 3.6), dpi=80, sharey=True)
    for k, (model, by_seed) in enumerate(sorted(runs.items())):
        color = f"C{k}"
        solo = max(by_seed, key=lambda s: (by_seed[s]["recipe"]["threads"], -s))
        for seed, r in sorted(by_seed.items()):
            h = r["history"]
            label = f"{LABELS.get(model, model)}" if seed == min(by_seed) else None
            ax_img.plot([n / 1e3 for n in h["images_seen"]], [100 * a for a in h["test_acc"]], "o-", ms=3,
                        color=color, alpha=1.0 if seed == solo else 0.45, label=label)
        h = by_seed[solo]["history"]
        ax_img.plot([n / 1e3 for n in h["images_seen"]], [100 * a for a in h["train_acc"]], ":", color=color, lw=1)
        minutes, t = [], 0.0
        for s in h["epoch_time_s"]:
            t += s
            minutes.append(t / 60)
        ax_time.plot(minutes, [100 * a for a in h["test_acc"]], "o-", ms=3, color=color,
                     label=f"{LABELS.get(model, model)} (seed {solo}, {by_seed[solo]['recipe']['threads']} threads)")
    if reference is not None:
        ax_img.plot([n / 1e3 for n in reference["images"]], [100 * a for a in reference["acc"]], "k--", lw=1,
                    label=reference["label"])
    ax_img.set(xlabel="training images seen (thousands)", ylabel="accuracy (%)",
               title="per image: test (EMA, all seeds), dotted: training batches (raw weights)")
    ax_time.set(xlabel="minutes of training (evaluation not counted)", title="per minute of CPU")
    for ax in (ax_img, ax_time):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    lows = [100 * min(r["history"]["test_acc"]) for by_seed in runs.values() for r in by_seed.values()]
    ax_img.set_ylim(max(0.0, min(lows) - 2) if lows else 0, 100)
    fig.tight_layout()
    return fig


def _params(results: dict[str, Any]) -> int:
    """The run's parameter count. Files written by an earlier version of the training CLI for a stopped run (the
    progressive-resizing run of chapter 6) lack it; then it is counted from the recorded model config."""
    if results.get("params") is not None:
        return results["params"]
    return param_count(Sequencer2D(**{k: v for k, v in results["model_config"].items() if k != "name"}))


def recipe_levers(results: dict[str, Any]) -> dict[str, Any]:
    """The levers of one recorded run, read from its results file, for the recipe-ablation table:
    ``{"params", "epochs", "images_seen", "lr", "augmentation", "smoothing", "ema", "sizes", "complete", "final",
    "raw", "images_per_s", "wall_min", "threads"}`` (``final``: the last epoch's test accuracy, of a stopped run
    too; ``raw``: the raw weights' final accuracy when the run kept an EMA)."""
    recipe, history = results["recipe"], results["history"]
    aug = recipe["aug"]
    parts = [name for name, on in (("crop", aug.get("crop_padding")), ("flip", aug.get("hflip"))) if on]
    start = recipe.get("aug_from_epoch") or 0
    augmentation = "none" if not parts else "+".join(parts) + (f" from epoch {start + 1}" if start else "")
    raw = (history.get("test_acc_raw") or [None])[-1]
    return {"params": _params(results), "epochs": results["epochs_completed"],
            "images_seen": history.get("images_seen", [None])[-1] or results["epochs_completed"] * results["n_train"],
            "lr": recipe["lr"],
            "augmentation": augmentation, "smoothing": aug.get("label_smoothing", 0.0), "ema": recipe.get("ema_decay"),
            "sizes": recipe.get("img_sizes") or [], "complete": bool(results.get("complete")),
            "final": results.get("final_test_acc", history["test_acc"][-1]), "raw": raw,
            "images_per_s": results.get("images_per_s") or statistics.fmean(history["images_per_s"]),
            "wall_min": (results.get("wall_time_s") or sum(history["epoch_time_s"])) / 60,
            "threads": recipe.get("threads")}
