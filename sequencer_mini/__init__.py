"""sequencer_mini: Sequencer2D from scratch, one file per chapter of the book.

=============================  ================================================
chapter                        module
=============================  ================================================
1-2  LSTM, BiLSTM              :mod:`sequencer_mini.lstm`
3    images as sequences       :mod:`sequencer_mini.blocks`
4    BiLSTM2D                  :mod:`sequencer_mini.bilstm2d`
5    Sequencer2D               :mod:`sequencer_mini.sequencer2d`, :mod:`~sequencer_mini.weights`,
                               :mod:`~sequencer_mini.macs`
6-8  training                  :mod:`sequencer_mini.data`, :mod:`sequencer_mini.train`, :mod:`sequencer_mini.baselines`,
                               :mod:`sequencer_mini.recipes`, :mod:`sequencer_mini.trained`
9    receptive fields          :mod:`sequencer_mini.erf`, :mod:`sequencer_mini.widgets`
10   findings                  :mod:`sequencer_mini.cost`, :mod:`sequencer_mini.robustness`,
                               :mod:`sequencer_mini.ablations`
=============================  ================================================

Paper: Tatsunami & Taki, *Sequencer: Deep LSTM for Image Classification*, NeurIPS 2022 (arXiv 2205.01972).
Reference implementation: timm's ``sequencer.py`` (Ross Wightman and the official authors), Apache-2.0.
"""

from importlib.util import find_spec as _find_spec

from .bilstm2d import BiLSTM2D
from .blocks import (
    MLP,
    Downsample2D,
    DropPath,
    FlatBiLSTM,
    PatchEmbed,
    Sequencer2DBlock,
    VanillaSequencerBlock,
    patchify,
)
from .lstm import LSTM, LSTMCell
from .macs import count_macs, summary
from .sequencer2d import (
    MODELS,
    Sequencer2D,
    Sequencer2DConfig,
    create_model,
    sequencer2d_l,
    sequencer2d_m,
    sequencer2d_mini28,
    sequencer2d_mini32,
    sequencer2d_fast28,
    sequencer2d_s,
)
from .weights import convert_official_state_dict, load_weights, pretrained

if _find_spec("timm") is not None:  # timm is optional; with it, timm.create_model knows our presets
    from . import timm_models  # noqa: F401

__version__ = "0.1.0"

__all__ = [
    "LSTMCell",
    "LSTM",
    "BiLSTM2D",
    "patchify",
    "PatchEmbed",
    "Downsample2D",
    "MLP",
    "DropPath",
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
