"""sequencer_mini: Sequencer2D from scratch, the library of the book, in layers.

Each layer imports only the layers below it (``tests/test_architecture.py`` checks it)::

    core      budget switch, results files with provenance, safe writes, data-set facts, environment
    models    chapters 1-5: LSTM, BiLSTM2D, blocks, Sequencer2D and its presets, the CNN and ViT baselines
    interop   timm's registry and the authors' pretrained weights
    measure   multiply-accumulates, throughput, peak memory
    train     chapters 6-8: data, the training loop, the command line, recipes, torchrun
    analysis  chapters 6, 9, 10: the recorded runs, the race, ablations, robustness, receptive fields, widgets
    book      the book's plumbing: which runs are recorded, glue, diagrams, figure style, quizzes
    exercises the checked coding exercises of chapters 1-5 and 9 (a sibling of book: neither imports the other)

timm is not imported here (it and the torchvision models it loads double the import time of every process):
``import sequencer_mini.interop.timm_models`` puts the presets in timm's registry.

The names below are the public API (``import sequencer_mini as sm; sm.Sequencer2D``); CONTRIBUTING.md maps
each chapter to its modules.

Paper: Tatsunami & Taki, *Sequencer: Deep LSTM for Image Classification*, NeurIPS 2022 (arXiv 2205.01972).
Reference implementation: timm's ``sequencer.py`` (Ross Wightman and the official authors), Apache-2.0.
"""

from sequencer_mini.interop.weights import convert_official_state_dict, load_weights, pretrained
from sequencer_mini.measure.macs import count_macs, summary
from sequencer_mini.models.bilstm2d import BiLSTM2D
from sequencer_mini.models.blocks import (
    MLP,
    Downsample2D,
    DropPath,
    FlatBiLSTM,
    PatchEmbed,
    Sequencer2DBlock,
    SequencerBlock,
    VanillaSequencerBlock,
    patchify,
)
from sequencer_mini.models.lstm import LSTM, LSTMCell
from sequencer_mini.models.sequencer2d import (
    MODELS,
    Sequencer2D,
    Sequencer2DConfig,
    create_model,
    sequencer2d_fast28,
    sequencer2d_l,
    sequencer2d_m,
    sequencer2d_mini28,
    sequencer2d_mini32,
    sequencer2d_s,
)


__version__ = "0.1.0"

#: The package's layers, lowest first; a module imports only its own layer and those before it (one tuple holds
#: siblings that do not import each other). tests/test_architecture.py, tools/module_map.py and the book's API
#: page read this.
LAYERS: tuple[tuple[str, ...], ...] = (("core",), ("models",), ("interop", "measure"), ("train",), ("analysis",),
                                       ("book", "exercises"))

__all__ = [
    "LSTMCell",
    "LSTM",
    "BiLSTM2D",
    "patchify",
    "PatchEmbed",
    "Downsample2D",
    "MLP",
    "DropPath",
    "SequencerBlock",
    "Sequencer2DBlock",
    "FlatBiLSTM",
    "VanillaSequencerBlock",
    "Sequencer2D",
    "Sequencer2DConfig",
    "sequencer2d_s",
    "sequencer2d_m",
    "sequencer2d_l",
    "sequencer2d_mini28",
    "sequencer2d_mini32",
    "sequencer2d_fast28",
    "MODELS",
    "create_model",
    "count_macs",
    "summary",
    "convert_official_state_dict",
    "load_weights",
    "pretrained",
]
