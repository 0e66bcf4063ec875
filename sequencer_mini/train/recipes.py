"""Chapter 6: the named training recipes of the book, as command-line defaults.

``python -m sequencer_mini.train --recipe NAME --seed S --out DIR`` trains one; any other flag overrides the
recipe. A recipe is defined by the images it shows the model (epochs x 60,000 training images, at the image
sides of ``img_sizes``), not by a wall time, so it reproduces on any machine; the results file records the
images/s of the machine that ran it.

The three ``fmnist-race-*`` recipes give the Sequencer, a CNN and a ViT of about the same size the same 15
minutes of a 2-core CPU: the same levers (label smoothing, an EMA of the weights, crop/flip in the second half,
a short warmup then a cosine), each model's own peak learning rate from the same sweep (``bench/race.py
sweep``), and as many epochs as fit in 15 minutes at that model's training speed on the 2-core CPU, evaluation
after every epoch included (the slower a model trains per image, the fewer epochs it gets). Progressive resizing
is not in the race recipe: a first version trained its first epochs at 20 and 24 pixels and learned much more
slowly per minute than the same model at 28 pixels (chapter 6 compares the two at equal images).
"""
from __future__ import annotations

import ast
from collections.abc import Sequence
from typing import Any, NamedTuple

from torch import nn

from sequencer_mini.models.baselines import BASELINES
from sequencer_mini.models.sequencer2d import MODELS, PRESETS, create_model
from sequencer_mini.train.data import IN_MEMORY

__all__ = ["RECIPES", "RACE_MODELS", "LABELS", "RECIPE_TABLE", "RecipeRow", "race_recipe", "recipe_table_commands",
           "build_model", "DEFAULT_MODEL", "recipe_defaults", "model_args"]

#: The race's models: model -> ``label`` (its name in the book's tables and figures), ``model_arg`` (its own preset
#: arguments) and ``amp`` (autocast: bf16 only where it speeds training up on this CPU; see
#: bench/results/cpu-recipe-speed.json).
RACE_MODELS: dict[str, dict[str, Any]] = {
    "sequencer2d_fast28": {"label": "Sequencer2D", "model_arg": [], "amp": "bf16"},
    "small_cnn": {"label": "CNN", "model_arg": [], "amp": "bf16"},
    # depth 6: parameters within 15 % of the others
    "small_vit": {"label": "ViT", "model_arg": ["depth=6"], "amp": "off"},
}

#: Race model -> its label ("Sequencer2D", "CNN", "ViT").
LABELS: dict[str, str] = {name: spec["label"] for name, spec in RACE_MODELS.items()}


def race_recipe(model: str, epochs: int, lr: float) -> dict[str, Any]:
    """The race's shared recipe for ``model``, with ``epochs`` from the 15-minute budget and ``lr`` from the sweep:
    28-pixel images, a warmup of half an epoch, then a cosine; label smoothing 0.1; an EMA of the weights (decay
    0.998, about one epoch's worth of steps); crop and flip from the middle epoch on."""
    spec = RACE_MODELS[model]
    return {"dataset": "fashion_mnist", "model": model, "model_arg": spec["model_arg"], "amp": spec["amp"],
            "epochs": epochs, "lr": lr, "batch_size": 128, "warmup_epochs": 0.5, "limit_train": 60000,
            "limit_test": None, "aug": "light", "aug_from_epoch": epochs // 2, "ema": 0.998, "drop_path": 0.0,
            "budget": "cpu"}


RECIPES: dict[str, dict[str, Any]] = {
    # epochs: what fits into 15 min at each model's speed on an idle 2-core CPU (seed 0 of each ran with 2 threads on
    # a machine shared with other jobs: its results.json has the wall time); lr: the sweep's best on validation images
    # (python bench/race.py sweep)
    "fmnist-race-sequencer2d_fast28": race_recipe("sequencer2d_fast28", epochs=7, lr=0.004),
    "fmnist-race-small_cnn": race_recipe("small_cnn", epochs=6, lr=0.002),
    "fmnist-race-small_vit": race_recipe("small_vit", epochs=4, lr=0.004),
}


class RecipeRow(NamedTuple):
    """One row of chapter 6's recipe table: its results folder under ``book/results/`` and the training flags
    that remake it (``None`` for the race runs, made by ``python bench/race.py run``, and for a stopped run of an
    earlier race recipe)."""

    folder: str
    flags: list[str] | None


_FAST28 = ["--dataset", "fashion_mnist", "--model", "sequencer2d_fast28", "--budget", "cpu", "--limit-train", "60000",
           "--amp", "bf16"]
_FLIP_SMOOTH = [*_FAST28, "--aug", "flip", "--warmup-epochs", "0.3", "--lr", "3e-3", "--smoothing", "0.1"]

#: Chapter 6's recipe table: every full-length run of ``sequencer2d_fast28`` on all 60,000 training images, one
#: recipe (and seed) a row, label -> :class:`RecipeRow`. ``python bench/race.py ablate`` runs the rows with flags.
#: The EMA needs no row of its own: every run with an EMA also scores its raw weights at the end.
RECIPE_TABLE: dict[str, RecipeRow] = {
    "plain": RecipeRow("fmnist-cpu-goal-sequencer2d_fast28",
                       [*_FAST28, "--epochs", "7", "--aug", "none", "--lr", "2e-3"]),
    "flip": RecipeRow("fmnist-recipe-flip-sequencer2d_fast28",
                      [*_FAST28, "--epochs", "8", "--aug", "flip", "--warmup-epochs", "0.3", "--lr", "2e-3"]),
    "flip, smoothing, lr 3e-3": RecipeRow("fmnist-recipe-flip-smoothing-sequencer2d_fast28",
                                          [*_FLIP_SMOOTH, "--epochs", "8"]),
    # the paper's "without FC" ablation (4h = C, so the concatenation is already C wide): chapter 10's ablation
    # table found it ahead of the paper's block at two passes; here at full length, with the recipe of the row above
    "the same, without the fc": RecipeRow("fmnist-recipe-nofc-sequencer2d_fast28",
                                          [*_FLIP_SMOOTH, "--epochs", "8", "--model-arg", "with_fc=False"]),
    # what more passes buy: the row above with twice the images (about 30 minutes on the 2-core CPU, past the goal)
    "the same, twice the passes": RecipeRow("fmnist-recipe-nofc-16ep-sequencer2d_fast28",
                                            [*_FLIP_SMOOTH, "--epochs", "16", "--model-arg", "with_fc=False"]),
    "race recipe, seed 0": RecipeRow("fmnist-race-sequencer2d_fast28-s0", None),
    "race recipe, seed 1": RecipeRow("fmnist-race-sequencer2d_fast28-s1", None),
    "race + progressive (stopped)": RecipeRow("fmnist-race-v2-progressive-sequencer2d_fast28-s0", None),
}


def recipe_table_commands(threads: int) -> list[list[str]]:
    """The training commands of the recipe table's rows that have flags (``python bench/race.py ablate``)."""
    return [["python", "-m", "sequencer_mini.train", *row.flags, "--threads", str(threads), "--out",
             f"book/results/{row.folder}"] for row in RECIPE_TABLE.values() if row.flags is not None]


# ----------------------------------------------------------------------------- models and recipes

def build_model(name: str, in_chans: int, num_classes: int, img_size: int, drop_path: float = 0.0,
                **overrides: Any) -> tuple[nn.Module, dict]:
    """A Sequencer preset or a baseline, sized for the dataset; returns ``(model, config dict)``.
    ``overrides`` change the preset's own arguments (e.g. ``depth=6`` for ``small_vit``)."""
    if name in BASELINES:
        kwargs = dict(in_chans=in_chans, num_classes=num_classes, img_size=img_size, **overrides)
        return BASELINES[name](**kwargs), {"name": name, **kwargs}
    if name in MODELS:
        model = create_model(name, in_chans=in_chans, num_classes=num_classes, drop_path_rate=drop_path, **overrides)
        return model, {"name": name, **model.config.to_dict()}
    raise ValueError(f"unknown model {name!r}; expected one of {sorted(MODELS) + sorted(BASELINES)}")


#: Dataset -> the preset that trains on it when no ``--model`` is given (``Preset.default_for`` of the presets table).
DEFAULT_MODEL: dict[str, str] = {dataset: name for name, preset in PRESETS.items() for dataset in preset.default_for}


def recipe_defaults(dataset: str, budget: str) -> dict[str, Any]:
    """Default epochs / data sizes / batch / augmentation per budget.

    ``cpu`` is sized for <= 15 min on 2 cores with ``sequencer2d_mini28`` on Fashion-MNIST: measured ~130
    training img/s and ~380 evaluation img/s per uncontended core at batch 128 (CPU time, one thread), so 3
    epochs of 24,000 images + 3 evaluations of the 10,000 test images take ~10.5 min on one core. On a CPU
    shared with other jobs use one thread (``--threads 1``): two OpenMP threads that wait for each other
    ran 5x slower than one there.
    ``gpu``: 50 epochs; ``sequencer2d_mini28`` trained at ~2,500 img/s (bf16) to ~3,400 img/s (fp32) on an
    H200, ~20-25 s per Fashion-MNIST epoch, so ~20 min (longer on a Colab T4).
    """
    small = dataset in IN_MEMORY  # the small data sets: 10 or 100 classes of 28-32 px images
    table: dict[str, dict[str, Any]] = {
        "ci": dict(epochs=1, limit_train=256, limit_test=256, batch_size=64, aug="light", warmup_epochs=0.2,
                   drop_path=0.0),
        "cpu": dict(epochs=3, limit_train=(24000 if dataset == "fashion_mnist" else 20000) if small else 5000,
                    limit_test=None if small else 2000, batch_size=128, aug="light", warmup_epochs=0.3,
                    drop_path=0.0),
        "gpu": dict(epochs=50, limit_train=None, limit_test=None, batch_size=128, aug="paper", warmup_epochs=5,
                    drop_path=0.1),
    }
    if budget not in table:
        raise ValueError(f"budget must be one of {list(table)}, got {budget!r}")
    return table[budget]


def model_args(pairs: Sequence[str]) -> dict[str, Any]:
    """``["depth=6", "embed_dim=96"] -> {"depth": 6, "embed_dim": 96}`` (values read as Python literals)."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--model-arg expects KEY=VALUE, got {pair!r}")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out
