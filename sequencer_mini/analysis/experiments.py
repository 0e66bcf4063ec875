"""Chapter 6's controlled experiments, read back: the tuning, the race at equal images, the single-factor
ablations and the 16-pass runs (the runs of :mod:`sequencer_mini.train.protocol`, made by
``python bench/experiments.py run``).

Every accuracy here is a run's **final** one, at the budget fixed in advance (nothing is picked on the test set).
The EMA setting that :func:`~sequencer_mini.train.protocol.ema_choice` chose on validation images decides which
column of a run is reported: ``"off"`` is the trained weights themselves, a decay is the watching EMA of that
decay, scored on the same test images after every pass.
"""
from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sequencer_mini.core.paths import REPO_ROOT
from sequencer_mini.analysis.stats import Interval, bootstrap, mean_difference
from sequencer_mini.train.protocol import (
    ABLATED,
    ABLATION_SEEDS,
    ABLATIONS,
    RACE_SEEDS,
    Run,
    Screening,
    ablation_run,
    finished,
    long_run,
    race_run,
    read_json,
    screening,
    tune_run,
    tuning,
)
from sequencer_mini.train.recipes import LABELS, RACE_MODELS

__all__ = ["TuningCurve", "read_tuning", "final_acc", "RaceRow", "race_table", "AblationRow", "ablation_table",
           "noise_band", "TRAIN_MACS_FACTOR", "training_gmacs_per_s", "benchmark_images_per_s", "ema_lever", "predict",
           "weight_sets", "correctness", "plot_tuning",
           "plot_ablations", "read_predictions", "curve", "snapshot_curve", "race_outcomes", "ablation_intervals",
           "LongRow", "long_table", "plot_race_curves", "plot_long"]

#: A training step costs about three forward passes (the backward pass computes gradients for the inputs and for
#: the weights, each about one forward's MACs); the table's achieved GMAC/s uses this factor and says so.
TRAIN_MACS_FACTOR = 3


@dataclass(frozen=True)
class TuningCurve:
    """One model's learning-rate search: validation accuracy per tried rate, per EMA setting."""

    model: str
    label: str
    chosen: float | None          # None while the search is still running
    val_acc: dict[float, float]   # rate -> validation accuracy of the trained weights (EMA off); -inf: diverged
    probes: dict[str, dict[float, float]]  # EMA decay -> rate -> validation accuracy of that EMA

    @property
    def interior(self) -> bool:
        """The chosen rate has a tried rate on each side (the optimum is bracketed)."""
        return self.chosen is not None and min(self.val_acc) < self.chosen < max(self.val_acc)


def read_tuning(root: Path = REPO_ROOT) -> list[TuningCurve]:
    """Every race model's search as it stands on disk."""
    curves = []
    for model in RACE_MODELS:
        _, chosen, tried = tuning(model, root)
        probes: dict[str, dict[float, float]] = {}
        for lr in tried:
            res = finished(tune_run(model, lr), root)
            if res is None:
                continue
            for decay, acc in (res["history"].get("probe_val_acc") or [None])[-1].items():
                probes.setdefault(decay, {})[lr] = acc
        curves.append(TuningCurve(model, LABELS[model], chosen, dict(sorted(tried.items())), probes))
    return curves


def final_acc(results: dict[str, Any], ema: str = "off") -> float:
    """A run's final test accuracy with the given EMA setting (``"off"`` or a decay it watched)."""
    if ema == "off":
        return float(results["final_test_acc"])
    probes = (results["history"].get("probe_test_acc") or [None])[-1]
    if not probes or ema not in probes:
        raise ValueError(f"this run has no watching EMA of decay {ema} (it watched {sorted(probes or {})}); "
                         f"its command needs --ema-probe {ema}")
    return float(probes[ema])


def training_gmacs_per_s(macs: int, images_per_s: float) -> float:
    """Achieved training arithmetic, GMAC/s: ``TRAIN_MACS_FACTOR x forward MACs per image x training images/s``."""
    return TRAIN_MACS_FACTOR * macs * images_per_s / 1e9


def benchmark_images_per_s(speed: dict[str, Any], model: str) -> float:
    """Training images/s of a race model in ``bench/cpu_recipe_speed.py``'s results (``speed``) at the race's
    settings: batch 128, 28 px, bfloat16 autocast where :data:`~sequencer_mini.train.recipes.RACE_MODELS` uses it
    (the ``bf16`` row), else float32 (that row's reference, measured alternately in the same run)."""
    row = next((r for r in speed["rows"] if r["model"] == model and r["variant"] == "bf16"), None)
    if row is None:
        raise ValueError(f"the speed benchmark's results hold no 'bf16' row for {model}; remake them: "
                         f"python bench/cpu_recipe_speed.py --threads 1")
    return float(row["img_per_s"] if RACE_MODELS[model]["amp"] == "bf16" else row["reference_img_per_s"])


@dataclass(frozen=True)
class RaceRow:
    """One model in the race: final test accuracy per seed at equal images, and what a run cost."""

    model: str
    label: str
    lr: float
    params: int
    macs: int                     # forward multiply-accumulates per image
    images_seen: int
    accs: dict[int, float]        # seed -> final test accuracy
    train_s: dict[int, float]     # seed -> measured time in training steps, all passes, across resumes
    #                               (results' train_time_s: a resumed run's wall_time_s is its last call only)
    images_per_s: dict[int, float]  # seed -> training images per second, measured in the run

    @property
    def mean(self) -> float:
        return statistics.fmean(self.accs.values())

    @property
    def sd(self) -> float:
        """Sample standard deviation over seeds (0 with one seed)."""
        return statistics.stdev(self.accs.values()) if len(self.accs) > 1 else 0.0

    @property
    def fastest_images_per_s(self) -> float:
        """The fastest seed's training images/s: other jobs on the machine can only slow a run down, so the
        fastest run is the least disturbed measurement of what the model costs."""
        return max(self.images_per_s.values())

    @property
    def gmacs_per_s(self) -> float:
        """Achieved training arithmetic at the fastest seed's speed (:func:`training_gmacs_per_s`)."""
        return training_gmacs_per_s(self.macs, self.fastest_images_per_s)


def race_table(chosen: dict[str, float], ema: str = "off", root: Path = REPO_ROOT,
               seeds: Sequence[int] = RACE_SEEDS) -> list[RaceRow]:
    """One row per race model with every finished seed (models without one are left out), best mean first."""
    rows = []
    for model, lr in chosen.items():
        done = {s: r for s in seeds if (r := finished(race_run(model, lr, s), root)) is not None}
        if not done:
            continue
        first = next(iter(done.values()))
        rows.append(RaceRow(model, LABELS[model], lr, int(first["params"]), int(first["macs"]),
                            int(first["images_seen"]), {s: final_acc(r, ema) for s, r in done.items()},
                            {s: float(r["train_time_s"]) for s, r in done.items()},
                            {s: float(r["images_per_s"]) for s, r in done.items()}))
    return sorted(rows, key=lambda r: -r.mean)


@dataclass(frozen=True)
class AblationRow:
    """One lever of the Sequencer's race recipe switched alone: its seeds' accuracies and their paired
    differences from the race run of the same seed."""

    lever: str
    accs: dict[int, float]
    deltas: dict[int, float]      # seed -> accuracy minus the race recipe's with that seed

    @property
    def mean_delta(self) -> float:
        return statistics.fmean(self.deltas.values())


def ema_lever(ema: str) -> tuple[str, str]:
    """The EMA ablation of a race that used ``ema``: (the other setting, its label). With the EMA off, the lever is
    the watching EMA of decay 0.998 (about one pass of memory); with an EMA, switching it off."""
    return ("0.998", "ema 0.998") if ema == "off" else ("off", "no ema")


def ablation_table(chosen_lr: float, ema: str = "off", root: Path = REPO_ROOT, model: str = ABLATED,
                   levers: Sequence[str] | None = None) -> list[AblationRow]:
    """The finished single-factor ablations of ``model``'s race recipe (at its tuned rate ``chosen_lr``), each
    against the race run of the same seed: ``levers`` of :data:`~sequencer_mini.train.protocol.ABLATIONS`, or every
    lever and the EMA itself (read from the race runs' watching EMAs) when None."""
    race = {s: r for s in RACE_SEEDS if (r := finished(race_run(model, chosen_lr, s), root)) is not None}
    rows = []
    for lever in ABLATIONS if levers is None else levers:
        done = {s: final_acc(r, ema) for s in ABLATION_SEEDS
                if (r := finished(ablation_run(lever, chosen_lr, ema, s, model), root)) is not None and s in race}
        if done:
            rows.append(AblationRow(lever, done, {s: a - final_acc(race[s], ema) for s, a in done.items()}))
    if race and levers is None:  # the EMA switched: the other side of the decision, from the same runs
        other, label = ema_lever(ema)
        watched = (race[next(iter(race))]["history"].get("probe_test_acc") or [{}])[-1]
        if other == "off" or other in watched:
            accs = {s: final_acc(r, other) for s, r in race.items()}
            rows.append(AblationRow(label, accs, {s: accs[s] - final_acc(race[s], ema) for s in race}))
    return rows


def noise_band(race_row: RaceRow, k: float = 2.0) -> float:
    """Half-width of the band inside which a single-factor change is not distinguishable from reseeding:
    ``k`` times the seed standard deviation of a difference of two runs (``sqrt(2) x sd`` of one run)."""
    return k * (2 ** 0.5) * race_row.sd


# ----------------------------------------------------------------------------- per-image predictions

@torch.no_grad()
def predict(model: nn.Module, images: Tensor, batch_size: int = 500) -> str:
    """Predicted classes of ``images (N, 1, 28, 28)`` (normalised) as a string of digits, one per image: a
    compact record of a 10-class model's every answer, from which any accuracy over any subset of the test images
    (and its bootstrap) follows."""
    was_training = model.training
    model.eval()
    try:
        preds = torch.cat([model(images[i:i + batch_size]).argmax(-1) for i in range(0, len(images), batch_size)])
    finally:
        model.train(was_training)
    if int(preds.max()) > 9:
        raise ValueError("predict() records one digit per image: it needs a model with at most 10 classes")
    return "".join(map(str, preds.tolist()))


def weight_sets(weights: dict[str, Any]) -> dict[str, dict[str, Tensor]]:
    """The state dicts a ``final.pt`` or snapshot file holds, by EMA setting: ``"off"`` (the trained weights,
    kept as ``raw`` when the reported model was an EMA) and each watching EMA's decay."""
    sets = {"off": weights["raw"] if weights.get("raw") is not None else weights["model"]}
    for decay, state in (weights.get("ema_probes") or {}).items():
        sets[decay] = state
    return sets


def correctness(predictions: dict[int, str], labels: Tensor) -> Tensor:
    """``(seeds, images)`` 1.0/0.0 from per-seed prediction strings (for
    :func:`~sequencer_mini.analysis.stats.bootstrap`)."""
    truth = labels.tolist()
    rows = []
    for seed in sorted(predictions):
        text = predictions[seed]
        if len(text) != len(truth):
            raise ValueError(f"seed {seed}: {len(text)} predictions for {len(truth)} test images")
        rows.append([float(int(c) == t) for c, t in zip(text, truth, strict=True)])
    return torch.tensor(rows)


def read_predictions(run: Run, root: Path = REPO_ROOT) -> dict[str, Any] | None:
    """A finished run's ``predictions.json`` (``python bench/experiments.py predict``), or None while it has none."""
    return read_json(root / run.out / "predictions.json")


def curve(results: dict[str, Any]) -> dict[int, float]:
    """Images seen -> test accuracy after each pass (the run's history; the reported weights)."""
    h = results["history"]
    return {int(n): float(a) for n, a in zip(h["images_seen"], h["test_acc"], strict=True)}


def snapshot_curve(predictions: dict[str, Any], labels: Tensor) -> dict[int, float]:
    """Images seen -> test accuracy of every quarter-pass snapshot, from a run's predictions (10,000 digits each)."""
    return {int(n): float(correctness({0: text}, labels).mean()) for n, text in predictions["snapshots"].items()}


def race_outcomes(chosen: dict[str, float], labels: Tensor, ema: str = "off", root: Path = REPO_ROOT,
                  seeds: Sequence[int] = RACE_SEEDS) -> dict[str, Tensor]:
    """Model -> ``(seeds, images)`` right/wrong of the final weights (the chosen EMA setting) on the test images,
    for every race run with predictions recorded."""
    out = {}
    for model, lr in chosen.items():
        preds = {s: p["test"][ema] for s in seeds if (p := read_predictions(race_run(model, lr, s), root))}
        if preds:
            out[model] = correctness(preds, labels)
    return out


def ablation_intervals(chosen_lr: float, labels: Tensor, ema: str = "off", root: Path = REPO_ROOT,
                       n_boot: int = 2000, model: str = ABLATED,
                       levers: Sequence[str] | None = None) -> dict[str, Interval]:
    """Lever -> bootstrap interval (seeds and test images, :func:`~sequencer_mini.analysis.stats.bootstrap`) of its
    final test accuracy minus the race recipe's, from the recorded predictions of ``model``'s runs; with ``levers``
    None, every lever and the EMA (from the race runs' watching EMAs: the decay 0.998, or off when the race used
    one). Levers without predictions are left out."""
    race = {s: p for s in RACE_SEEDS if (p := read_predictions(race_run(model, chosen_lr, s), root))}
    if not race:
        return {}
    base = correctness({s: p["test"][ema] for s, p in race.items()}, labels)
    out = {}
    for lever in ABLATIONS if levers is None else levers:
        preds = {s: p["test"][ema] for s in ABLATION_SEEDS
                 if (p := read_predictions(ablation_run(lever, chosen_lr, ema, s, model), root))}
        if preds:
            out[lever] = bootstrap({"lever": correctness(preds, labels), "race": base},
                                   mean_difference("lever", "race"), n_boot=n_boot)
    other, label = ema_lever(ema)
    if levers is None and all(other in p["test"] for p in race.values()):
        flipped = correctness({s: p["test"][other] for s, p in race.items()}, labels)
        out[label] = bootstrap({"lever": flipped, "race": base}, mean_difference("lever", "race"), n_boot=n_boot)
    return out


@dataclass(frozen=True)
class LongRow:
    """One 16-pass recipe: its seeds' final test accuracies, curves and costs."""

    recipe: str
    flags: tuple[str, ...]          # what the recipe adds to the stretched race recipe
    accs: dict[int, float]          # seed -> final test accuracy
    curves: dict[int, dict[int, float]]  # seed -> images seen -> test accuracy after each pass
    params: int
    images_seen: int
    train_s: dict[int, float]       # seed -> time in training steps, all passes, across resumes
    images_per_s: dict[int, float]
    device: str

    @property
    def mean(self) -> float:
        return statistics.fmean(self.accs.values())


def _seed(run: Run) -> int:
    seed = run.value("--seed")
    if seed is None:
        raise ValueError(f"{run.out}: its command has no --seed")
    return int(seed)


def _long_row(recipe: str, runs: Sequence[Run], root: Path, base_flags: Sequence[str]) -> LongRow | None:
    done = {_seed(r): res for r in runs if (res := finished(r, root)) is not None}
    if not done:
        return None
    first = next(iter(done.values()))
    extra = tuple(runs[0].flags[len(base_flags):])
    return LongRow(recipe, extra, {s: float(r["final_test_acc"]) for s, r in done.items()},
                   {s: curve(r) for s, r in done.items()}, int(first["params"]), int(first["images_seen"]),
                   {s: float(r["train_time_s"]) for s, r in done.items()},
                   {s: float(r["images_per_s"]) for s, r in done.items()}, str(first["provenance"]["device"]))


def long_table(chosen: dict[str, float], ema: str = "off", root: Path = REPO_ROOT
               ) -> tuple[Screening, dict[str, LongRow], LongRow | None]:
    """The 16-pass search as it stands: (the screening, recipe -> its finished runs, the CNN's 16-pass run)."""
    model = "sequencer2d_fast28"
    search = screening(chosen[model], ema, root)
    base = long_run(model, "race", chosen[model], ema, 0).flags
    rows = {}
    for recipe, run in search.runs.items():
        runs = search.kept_runs if recipe == search.kept else [run]
        row = _long_row(recipe, runs, root, base)
        if row is not None:
            rows[recipe] = row
    cnn_run = long_run("small_cnn", "race", chosen["small_cnn"], ema, 0)
    return search, rows, _long_row("CNN, race recipe", [cnn_run], root, cnn_run.flags)


# ----------------------------------------------------------------------------- figures

def plot_tuning(curves: Sequence[TuningCurve]):
    """Validation accuracy against peak learning rate (log axis), one line per model, the chosen rate ringed;
    a diverged rate is marked at the bottom."""
    import matplotlib.pyplot as plt  # plotting stays out of the import path of the tables above

    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    finite = [a for c in curves for a in c.val_acc.values() if a > float("-inf")]
    floor = 100 * min(finite) - 2 if finite else 0.0
    for c in curves:
        rates = sorted(c.val_acc)
        accs = [100 * c.val_acc[r] if c.val_acc[r] > float("-inf") else floor for r in rates]
        line, = ax.plot(rates, accs, "o-", label=c.label)
        if c.chosen is not None:
            ax.plot([c.chosen], [100 * c.val_acc[c.chosen]], "o", ms=12, mfc="none", color=line.get_color())
    ax.set_xscale("log", base=2)
    ax.set(xlabel="peak learning rate", ylabel="validation accuracy (%)",
           title="tuning: 2 passes over 50,000 images, 10,000 validation images")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_ablations(rows: Sequence[AblationRow], band: float):
    """Chapter 6's dot plot: each lever's paired difference from the race recipe, one dot per seed and the mean,
    with the noise band (± ``band``, from the seed spread) shaded around zero."""
    import matplotlib.pyplot as plt  # plotting stays out of the import path of the tables above

    fig, ax = plt.subplots(figsize=(6.4, 0.45 * len(rows) + 1.2))
    ax.axvspan(-100 * band, 100 * band, color="grey", alpha=0.2, lw=0, label="noise band (seeds)")
    ax.axvline(0, color="grey", lw=0.8)
    for y, row in enumerate(rows):
        ax.plot([100 * d for d in row.deltas.values()], [y] * len(row.deltas), "o", color="C0", alpha=0.6)
        ax.plot([100 * row.mean_delta], [y], "D", color="C3")
    ax.set_yticks(range(len(rows)), [r.lever for r in rows])
    ax.set(xlabel="final test accuracy minus the race recipe's, same seed (points)",
           title="single-factor ablations of the Sequencer's race recipe")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def plot_race_curves(curves: dict[str, dict[int, dict[int, float]]]):
    """Test accuracy against images seen: ``curves[label][seed][images] = accuracy``, one thin line per seed and
    a thick one for the mean over the seeds that share the same points."""
    import matplotlib.pyplot as plt  # plotting stays out of the import path of the tables above

    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    for k, (label, by_seed) in enumerate(curves.items()):
        colour = f"C{k}"
        for c in by_seed.values():
            xs = sorted(c)
            ax.plot(xs, [100 * c[x] for x in xs], color=colour, lw=0.7, alpha=0.5)
        common = sorted(set.intersection(*(set(c) for c in by_seed.values())))
        ax.plot(common, [100 * statistics.fmean(c[x] for c in by_seed.values()) for x in common], color=colour, lw=2,
                label=f"{label} (mean of {len(by_seed)} seed{'s' * (len(by_seed) > 1)})")
    ax.set(xlabel="training images seen", ylabel="test accuracy (%)")
    _images_axis(ax)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def _images_axis(ax) -> None:
    """Images seen as 240k, 960k (not matplotlib's 1e6 offset, which a reader has to multiply back)."""
    from matplotlib.ticker import FuncFormatter  # plotting stays out of the import path of the tables

    ax.xaxis.set_major_formatter(FuncFormatter(
        lambda x, _: f"{x / 1e6:g}M" if x >= 1e6 else f"{x / 1e3:g}k" if x else "0"))


def plot_long(rows: Sequence[LongRow], goal: float | None = None):
    """Test accuracy against images seen out to 16 passes, one line per recipe and seed; the goal dashed."""
    import matplotlib.pyplot as plt  # plotting stays out of the import path of the tables above

    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for k, row in enumerate(rows):
        for j, (seed, c) in enumerate(sorted(row.curves.items())):
            xs = sorted(c)
            ax.plot(xs, [100 * c[x] for x in xs], color=f"C{k}", ls="-" if j == 0 else "--",
                    label=f"{row.recipe}, seed {seed}")
    if goal is not None:
        ax.axhline(100 * goal, color="k", ls=":", lw=1, label=f"goal {100 * goal:.1f} %")
    ax.set(xlabel="training images seen", ylabel="test accuracy (%)")
    _images_axis(ax)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig
