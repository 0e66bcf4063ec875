"""Chapter 6: the race's three models and the training defaults of the book's budgets.

:data:`RACE_MODELS` names the Sequencer, the CNN and the ViT of about the same size that chapter 6 compares (their
preset overrides and whether bfloat16 autocast pays on a CPU); their runs, flags and budgets in images seen are
defined once, in :mod:`sequencer_mini.train.protocol`. :func:`build_model` builds any preset or baseline sized for
a dataset, :func:`recipe_defaults` gives the defaults of ``python -m sequencer_mini.train`` per budget.
"""
from __future__ import annotations

import ast
from collections.abc import Sequence
from typing import Any

from torch import nn

from sequencer_mini.models.baselines import BASELINES
from sequencer_mini.models.sequencer2d import MODELS, PRESETS, create_model
from sequencer_mini.train.data import IN_MEMORY

__all__ = ["RACE_MODELS", "LABELS", "build_model", "DEFAULT_MODEL", "recipe_defaults", "model_args"]

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
