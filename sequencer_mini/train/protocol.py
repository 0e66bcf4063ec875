"""Chapter 6's experimental protocol: every controlled run, its results folder and its flags, in one place.

``bench/experiments.py`` runs what this module defines (and decides what runs next from the results on disk); the
analysis (``sequencer_mini.analysis.experiments``) reads the same runs by the same names. The steps, their budgets in
images seen and why are in ``bench/experiments.py``'s docstring and in chapter 6.

Folders are relative to the repository root, so every remake command runs from there.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sequencer_mini.core.paths import REPO_ROOT
from sequencer_mini.core.provenance import read_json_object
from sequencer_mini.train.recipes import RACE_MODELS

__all__ = ["GRID", "START", "PROBES", "TUNE_DIR", "RACE_PASSES", "RACE_SEEDS", "LONG_PASSES", "ABLATIONS", "LEVERS",
           "ABLATION_SEEDS", "EXCLUSIVE", "LONG_SEEDS", "Screening", "Run", "lever_flags", "screening", "tune_run",
           "race_run", "replay_run", "replayed", "REPLAY_MODELS", "REPLAY_SNAPSHOTS",
           "ablation_run", "ABLATED", "CONTROL", "helping_levers", "long_run", "read_json", "finished",
           "diverged", "tuning", "ema_choice"]

#: The learning-rate grid: factor-2 steps; tuning starts in the middle (START) and grows outwards.
GRID: tuple[float, ...] = (2.5e-4, 5e-4, 1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2, 3.2e-2, 6.4e-2)
START: tuple[float, ...] = (2e-3, 4e-3, 8e-3)
#: The EMA decays that watch every tuning and race run (about 100, 500 and 2,000 steps of memory).
PROBES: tuple[float, ...] = (0.99, 0.998, 0.9995)
TUNE_DIR = "book/results/fmnist-tune"
RACE_PASSES, RACE_SEEDS = 4, (0, 1, 2)
#: Seeds of each single-factor ablation (and of its CNN control).
ABLATION_SEEDS: tuple[int, ...] = (0, 1)


@dataclass(frozen=True)
class Run:
    """One planned training run: its results folder (relative to the repository root) and its flags."""
    out: str
    flags: tuple[str, ...]

    def command(self, threads: int) -> list[str]:
        return ["python", "-m", "sequencer_mini.train", *self.flags, "--threads", str(threads), "--resume",
                "--out", self.out]

    def value(self, flag: str, default: str | None = None) -> str | None:
        """The value of ``flag`` (e.g. ``"--epochs"``) in the run's command; the last one wins, as in argparse."""
        values = [self.flags[i + 1] for i, f in enumerate(self.flags[:-1]) if f == flag]
        return values[-1] if values else default


def _model_flags(model: str, ema: str | None = None) -> list[str]:
    """The flags every run of ``model`` shares; ``ema``: None (the EMAs of PROBES watch), "off", or a decay."""
    spec = RACE_MODELS[model]
    flags = ["--dataset", "fashion_mnist", "--model", model, "--amp", spec["amp"], "--budget", "cpu",
             "--batch-size", "128", "--limit-train", "60000", "--aug", "light", "--smoothing", "0.1"]
    if ema is None:
        flags += ["--ema-probe", ",".join(f"{d:g}" for d in PROBES)]
    elif ema != "off":
        flags += ["--ema", ema]
    for arg in spec["model_arg"]:
        flags += ["--model-arg", arg]
    return flags


def tune_run(model: str, lr: float) -> Run:
    """2 passes over 50,000 images; 10,000 validation images; crop/flip in the second pass; warmup 1/8 of the run."""
    return Run(f"{TUNE_DIR}/{model}-lr{lr:g}",
               (*_model_flags(model), "--epochs", "2", "--warmup-epochs", "0.25", "--aug-from-epoch", "1",
                "--val", "10000", "--limit-test", "1000", "--lr", f"{lr:g}", "--seed", "0"))


def race_run(model: str, lr: float, seed: int) -> Run:
    """4 passes over all 60,000 images; crop/flip in the second half; warmup 1/8 of the run; weights every 1/4 pass."""
    return Run(f"book/results/fmnist-race{RACE_PASSES * 60}k-{model}-s{seed}",
               (*_model_flags(model), "--epochs", str(RACE_PASSES), "--warmup-epochs", f"{RACE_PASSES / 8:g}",
                "--aug-from-epoch", str(RACE_PASSES // 2), "--snapshots", "4", "--lr", f"{lr:g}",
                "--seed", str(seed)))


#: Chapter 10's matched checkpoints need snapshots closer together where a model's accuracy rises fastest: the
#: Sequencer and the CNN cross the range of accuracies that every model reaches (up to the ViT's final ~83 %) within
#: their first pass, where a quarter pass moves the CNN by up to 10 points; the ViT crosses it in passes 2-4.
REPLAY_MODELS: tuple[str, ...] = ("sequencer2d_fast28", "small_cnn")
REPLAY_SNAPSHOTS = 32


def replay_run(model: str, lr: float, seed: int) -> Run:
    """The race run's first pass once more, with the same flags and seed (the same computation, so the same weights
    bit for bit wherever its snapshots and the race's coincide; ``bench/findings.py`` checks that before it uses
    one), saving the weights every 1/32 pass and stopping after that pass (``--stop-after 1``: the command run again
    on a killed replay redoes its pass; on a finished one it would go on into the race's second pass, which the
    scheduler never asks for)."""
    race = race_run(model, lr, seed)
    flags = list(race.flags)
    flags[flags.index("--snapshots") + 1] = str(REPLAY_SNAPSHOTS)
    return Run(f"{race.out}-pass1", (*flags, "--stop-after", "1"))


#: Lever -> what switching it alone changes in the race recipe (the rate levers are computed from the tuned rate).
ABLATIONS: dict[str, list[str]] = {
    "no-smoothing": ["--smoothing", "0"],
    "no-crop-flip": ["--aug", "none", "--smoothing", "0.1"],
    "crop-flip-throughout": ["--aug-from-epoch", "0"],
    "lr-up": [],
    "lr-down": [],
}


#: The model whose race recipe the ablations switch, and the model that gets a helping switch too (a control: does
#: the switch close the Sequencer's gap to the CNN, or lift both?).
ABLATED, CONTROL = "sequencer2d_fast28", "small_cnn"


def ablation_run(lever: str, lr: float, ema: str, seed: int, model: str = ABLATED) -> Run:
    """The race recipe of ``model`` (at its tuned rate ``lr``) with one lever of :data:`ABLATIONS` switched."""
    i = GRID.index(lr)
    rate = {"lr-up": GRID[i + 1], "lr-down": GRID[i - 1]}.get(lever, lr)
    return Run(f"book/results/fmnist-ablate{RACE_PASSES * 60}k-{model}-{lever}-s{seed}",
               (*_model_flags(model, ema), "--epochs", str(RACE_PASSES), "--warmup-epochs", f"{RACE_PASSES / 8:g}",
                "--aug-from-epoch", str(RACE_PASSES // 2), "--lr", f"{rate:g}", "--seed", str(seed),
                *ABLATIONS[lever]))


def helping_levers(chosen: dict[str, float], ema: str, root: Path = REPO_ROOT) -> list[str] | None:
    """The levers whose switch lifted the Sequencer by more than reseeding does: mean gain over
    :data:`ABLATION_SEEDS` (ablation minus race run, seed by seed) beyond ``2 * sqrt(2) * sd`` of its race seeds'
    final accuracies (the noise band chapter 6 draws), best first. None until every one of those runs is finished;
    these levers get the :data:`CONTROL` model's runs."""
    lr = chosen[ABLATED]
    race = [finished(race_run(ABLATED, lr, s), root) for s in RACE_SEEDS]
    ablated = {lever: [finished(ablation_run(lever, lr, ema, s), root) for s in ABLATION_SEEDS] for lever in ABLATIONS}
    if any(r is None for r in race) or any(r is None for runs in ablated.values() for r in runs):
        return None
    accs = [float(r["final_test_acc"]) for r in race if r is not None]
    mean = sum(accs) / len(accs)
    band = 2 * math.sqrt(2) * math.sqrt(sum((a - mean) ** 2 for a in accs) / (len(accs) - 1))
    race_acc = dict(zip(RACE_SEEDS, accs, strict=True))
    gain = {lever: sum(float(r["final_test_acc"]) - race_acc[s] for s, r in zip(ABLATION_SEEDS, runs, strict=True)
                       if r is not None) / len(ABLATION_SEEDS) for lever, runs in ablated.items()}
    return sorted((lever for lever, g in gain.items() if g > band), key=lambda lever: -gain[lever])


LONG_PASSES = 16
#: Recipe -> the flags it adds to the race recipe stretched to LONG_PASSES passes (the Sequencer's screening).
LEVERS: dict[str, list[str]] = {
    "race": [],
    "random-erasing": ["--random-erasing", "0.25"],
    "trivialaugment": ["--auto-augment", "trivialaugment"],
    "drop-path": ["--drop-path", "0.1"],
    "mixup-cutmix": ["--mixup", "0.8", "--cutmix", "1.0"],
    "long-warmup": ["--warmup-epochs", f"{LONG_PASSES / 4:g}"],
    "randaugment": ["--auto-augment", "randaugment"],
    # not the paper's: the one switch chapter 6's 4-pass ablations found helping the Sequencer (crop/flip off);
    # does it still help when the run is four times as long?
    "no-crop-flip": ABLATIONS["no-crop-flip"],
}


#: Levers that cannot be switched on together (one ``--auto-augment`` policy at a time).
EXCLUSIVE: tuple[str, ...] = ("trivialaugment", "randaugment")


def lever_flags(recipe: str, levers: Sequence[str] = ()) -> list[str]:
    """The flags a 16-pass recipe adds: one lever of :data:`LEVERS`, or ``"combined"`` with ``levers`` (their
    flags one after the other; a later ``--warmup-epochs`` replaces the stretched recipe's)."""
    if recipe == "combined":
        if len(levers) < 2 or any(lever not in LEVERS or lever == "race" for lever in levers):
            raise ValueError(f"a combined recipe needs at least two levers of {sorted(set(LEVERS) - {'race'})}, "
                             f"got {list(levers)}")
        if sum(lever in EXCLUSIVE for lever in levers) > 1:
            raise ValueError(f"levers {list(EXCLUSIVE)} cannot be combined (one --auto-augment policy at a time)")
        return [flag for lever in levers for flag in LEVERS[lever]]
    if recipe not in LEVERS:
        raise ValueError(f"unknown 16-pass recipe {recipe!r}; expected one of {[*LEVERS, 'combined']}")
    return list(LEVERS[recipe])


def long_run(model: str, recipe: str, lr: float, ema: str, seed: int, levers: Sequence[str] = ()) -> Run:
    """The race recipe stretched to LONG_PASSES passes (warmup 1/8, crop/flip in the second half), plus a lever."""
    return Run(f"book/results/fmnist-{LONG_PASSES}pass-{model}-{recipe}-s{seed}",
               (*_model_flags(model, ema), "--epochs", str(LONG_PASSES), "--warmup-epochs", f"{LONG_PASSES / 8:g}",
                "--aug-from-epoch", str(LONG_PASSES // 2), "--lr", f"{lr:g}", "--seed", str(seed),
                *lever_flags(recipe, levers)))


@dataclass(frozen=True)
class Screening:
    """Where the search for the Sequencer's best 16-pass recipe stands (:func:`screening`)."""

    needed: list[Run]              # runs to make now (empty: nothing can run yet, or all done)
    accs: dict[str, float]         # recipe -> final test accuracy of seed 0 (finished runs only)
    helped: list[str]              # levers that beat the stretched race recipe on seed 0, best first
    kept: str | None               # the recipe kept (best seed-0 accuracy), once every candidate is screened
    kept_runs: list[Run]           # the kept recipe's runs, seeds LONG_SEEDS
    runs: dict[str, Run]           # recipe -> its seed-0 run, for every recipe screened or planned
    combo: list[str]               # the levers of "combined" (empty when fewer than two helped)


#: Seeds of the kept 16-pass recipe (the screening itself runs seed 0 only).
LONG_SEEDS: tuple[int, ...] = (0, 1)


def screening(lr: float, ema: str, root: Path = REPO_ROOT, model: str = "sequencer2d_fast28") -> Screening:
    """The 16-pass search, decided from finished runs alone: (1) every recipe of :data:`LEVERS` on seed 0;
    (2) when two or more levers beat the stretched race recipe, ``"combined"``: all of them together (of the
    :data:`EXCLUSIVE` ones only the better); (3) the kept recipe = the best seed-0 final test accuracy among all
    screened (a tie goes to the simpler recipe: race, then a single lever, then the combination), then run again
    on seed 1. The choice is made on seed 0's test accuracy, so the chapter reports seed 1
    on its own beside the mean (the one figure the choice never saw). A diverged run counts as worse than any."""
    def acc(run: Run) -> float | None:
        res = finished(run, root)
        if res is not None:
            return float(res["final_test_acc"])
        return -math.inf if diverged(run, root) else None

    needed: list[Run] = []
    accs: dict[str, float] = {}
    runs = {recipe: long_run(model, recipe, lr, ema, 0) for recipe in LEVERS}
    for recipe, run in runs.items():
        a = acc(run)
        if a is None:
            needed.append(run)
        else:
            accs[recipe] = a
    if needed:
        return Screening(needed, accs, [], None, [], runs, [])
    helped = sorted((r for r in LEVERS if r != "race" and accs[r] > accs["race"]), key=lambda r: -accs[r])
    exclusive = [r for r in helped if r in EXCLUSIVE]
    combo = [r for r in helped if r not in EXCLUSIVE or r == (exclusive[0] if exclusive else None)]
    if len(combo) < 2:
        combo = []
    else:
        runs["combined"] = run = long_run(model, "combined", lr, ema, 0, combo)
        a = acc(run)
        if a is None:
            return Screening([run], accs, helped, None, [], runs, combo)
        accs["combined"] = a
    # max() keeps the first of equal values: a tie goes to the recipe screened earlier, i.e. the stretched race
    # recipe before any lever, a single lever before the combination (fewer changes for the same accuracy)
    kept = max(accs, key=lambda r: accs[r])
    kept_runs = [long_run(model, kept, lr, ema, s, combo if kept == "combined" else ()) for s in LONG_SEEDS]
    return Screening([r for r in kept_runs if acc(r) is None], accs, helped, kept, kept_runs, runs, combo)


# ----------------------------------------------------------------------------- reading what is done

def read_json(path: Path) -> dict | None:
    """A results file, or None if absent; a damaged one is a ``ValueError`` that names it and what to do
    (:func:`~sequencer_mini.core.provenance.read_json_object`, the project's one strict reader)."""
    if not path.exists():
        return None
    return read_json_object(path, "results file", "delete it to redo that run (python bench/experiments.py run)")


def finished(run: Run, root: Path = REPO_ROOT) -> dict | None:
    """The run's results if it completed (a dry run never counts)."""
    data = read_json(root / run.out / "results.json")
    if data is None or not data.get("complete") or (data.get("provenance") or {}).get("dry_run"):
        return None
    return data


def replayed(run: Run, root: Path = REPO_ROOT) -> dict | None:
    """A :func:`replay_run`'s results once its pass is done (it never completes the race's 4 passes)."""
    data = read_json(root / run.out / "results.json")
    if data is None or (data.get("provenance") or {}).get("dry_run") or not data.get("epochs_completed"):
        return None
    return data


def diverged(run: Run, root: Path = REPO_ROOT) -> bool:
    """Whether the run stopped on a non-finite loss (``bench/experiments.py`` records it as ``diverged.json``)."""
    return (root / run.out / "diverged.json").exists()


def tuning(model: str, root: Path = REPO_ROOT) -> tuple[list[Run], float | None, dict[float, float]]:
    """(runs still needed, chosen rate or None, {rate: validation accuracy}) for one model's bracketing search."""
    tried: dict[float, float] = {}
    needed = []
    lrs = list(START)
    while True:
        for lr in lrs:
            if lr in tried:
                continue
            run = tune_run(model, lr)
            res = finished(run, root)
            if res is not None:
                tried[lr] = float(res["final_val_acc"])
            elif diverged(run, root):
                tried[lr] = -math.inf
            else:
                needed.append(run)
        if needed:
            return needed, None, tried
        best = max(tried, key=lambda k: tried[k])
        i = GRID.index(best)
        lower, higher = GRID[i - 1] if i > 0 else None, GRID[i + 1] if i + 1 < len(GRID) else None
        extra = [lr for lr in (lower, higher) if lr is not None and lr not in tried]
        if not extra:
            return [], best, tried
        lrs = extra


def ema_choice(chosen: dict[str, float], root: Path = REPO_ROOT) -> dict:
    """Mean validation accuracy over the models at their chosen rates, per EMA setting; the best one wins."""
    per_setting: dict[str, list[float]] = {"off": []}
    for model, lr in chosen.items():
        res = finished(tune_run(model, lr), root)
        if res is None:
            raise ValueError(f"{tune_run(model, lr).out}: no finished tuning run for {model} at {lr:g}")
        hist = res["history"]
        per_setting["off"].append(hist["val_acc"][-1])
        for decay, acc in hist["probe_val_acc"][-1].items():
            per_setting.setdefault(decay, []).append(acc)
    means = {k: sum(v) / len(v) for k, v in per_setting.items()}
    return {"ema": max(means, key=lambda k: means[k]), "mean_val_acc": means, "val_acc": per_setting}
