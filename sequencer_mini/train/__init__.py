"""Layer 3, training (chapters 6-8): data, the loop (fit, evaluate, checkpoints), the command line, recipes and
torchrun support. Imports measure, interop, models and core, never analysis or the book layer.

``python -m sequencer_mini.train`` is the command line (:mod:`sequencer_mini.train.cli`). The names a chapter
needs most are re-exported here: ``from sequencer_mini.train import fit, TrainConfig``.
"""

from sequencer_mini.train.cli import main
from sequencer_mini.train.loop import (
    Evaluation,
    TrainConfig,
    confusion_matrix,
    evaluate,
    fit,
    load_checkpoint,
    plot_history,
    save_checkpoint,
    train_one_epoch,
)
from sequencer_mini.train.recipes import build_model, recipe_defaults

__all__ = ["TrainConfig", "fit", "train_one_epoch", "evaluate", "Evaluation", "confusion_matrix", "plot_history",
           "save_checkpoint", "load_checkpoint", "build_model", "recipe_defaults", "main"]
