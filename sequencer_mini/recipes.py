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

from typing import Any, NamedTuple

__all__ = ["RECIPES", "RACE_MODELS", "RECIPE_TABLE", "RecipeRow", "race_recipe", "recipe_table_commands"]

# model -> (its own preset arguments, autocast: bf16 only where it speeds training up on this CPU; see
# bench/results/cpu-recipe-speed.json)
RACE_MODELS: dict[str, dict[str, Any]] = {
    "sequencer2d_fast28": {"model_arg": [], "amp": "bf16"},
    "small_cnn": {"model_arg": [], "amp": "bf16"},
    "small_vit": {"model_arg": ["depth=6"], "amp": "off"},  # depth 6: parameters within 15 % of the others
}


def race_recipe(model: str, epochs: int, lr: float) -> dict[str, Any]:
    """The race's shared recipe for ``model``, with ``epochs`` from the 15-minute budget and ``lr`` from the sweep:
    28-pixel images, a warmup of half an epoch, then a cosine; label smoothing 0.1; an EMA of the weights (decay
    0.998, about one epoch's worth of steps); crop and flip from the middle epoch on."""
    return {"dataset": "fashion_mnist", "model": model, **RACE_MODELS[model], "epochs": epochs, "lr": lr,
            "batch_size": 128, "warmup_epochs": 0.5, "limit_train": 60000, "limit_test": None,
            "aug": "light", "aug_from_epoch": epochs // 2, "ema": 0.998, "drop_path": 0.0, "budget": "cpu"}


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
