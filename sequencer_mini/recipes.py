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

from typing import Any

__all__ = ["RECIPES", "RACE_MODELS", "race_recipe"]

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
