"""Chapter 10: which design choices of Sequencer2D matter, by training each ablation variant.

:data:`ABLATIONS` maps each variant of the paper's ablation study to changes of :data:`BASE`, the book's CPU
model ``sequencer2d_fast28`` (one stage: a 7×7 grid of ``C`` = 128-wide tokens, ``h`` = 32), following the
official ablation configurations; :func:`run_ablation` trains every variant once per seed with one fixed recipe,
and :func:`summarize_ablation` gives mean ± std and the paired difference to the baseline (``bench/findings.py``
adds the command line, the sizes per budget and the results file).
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Any
from collections.abc import Callable, Sequence

import torch
from torch import nn

from sequencer_mini.measure.cost import param_count
from sequencer_mini.measure.macs import count_macs
from sequencer_mini.models.sequencer2d import create_model, preset_config
from sequencer_mini.train.data import AugmentConfig, make_loaders
from sequencer_mini.train.loop import TrainConfig, fit

__all__ = ["ABLATIONS", "BASE", "ablation_model", "run_ablation", "summarize_ablation"]

#: The preset every variant changes: the model of chapter 6's race and of chapter 9.
BASE = "sequencer2d_fast28"

#: The ablation variants, as changes of :data:`BASE` (``C`` = 128, ``h`` = 32), with the official
#: configuration each one mirrors (``okojoalg/sequencer``, ``models/two_dim_sequencer.py`` and
#: ``vanilla_sequencer.py``). ``with_fc=False`` needs the mixed width to equal ``C``: ``cat`` gives ``4h = C`` as
#: it is; a single axis gives ``2h``, so, as the official ``sequencer2d_vertical``, those variants double ``h``
#: (``"hidden_x": 2``); the vanilla block uses ``h = C/2``.
ABLATIONS: dict[str, dict[str, Any]] = {
    "baseline": {"kwargs": {}, "official": "sequencer2d_s",
                 "what": "BiLSTM2D: bidirectional, vertical + horizontal, cat, FC, LSTM (the paper's design)"},
    "unidirectional": {"kwargs": {"bidirectional": False}, "official": "sequencer2d_s_unidirectional",
                       "what": "each axis read in one direction only"},
    "add": {"kwargs": {"union": "add"}, "official": "sequencer2d_s_add",
            "what": "vertical and horizontal outputs added instead of concatenated"},
    "without_fc": {"kwargs": {"with_fc": False}, "official": "sequencer2d_s_without_fc",
                   "what": "no FC after the concatenation (4h = C already)"},
    "vertical_only": {"kwargs": {"union": "vertical", "with_fc": False, "hidden_x": 2},
                      "official": "sequencer2d_vertical", "what": "columns only, h doubled, no FC"},
    "horizontal_only": {"kwargs": {"union": "horizontal", "with_fc": False, "hidden_x": 2},
                        "official": "sequencer2d_s_horizontal", "what": "rows only, h doubled, no FC"},
    "vanilla": {"kwargs": {"block": "vanilla", "hidden_x": 2}, "official": "v_sequencer_s",
                "what": "one BiLSTM over all H·W tokens (vanilla Sequencer), h = C/2, no FC"},
    "gru": {"kwargs": {"rnn": "gru"}, "official": "gru_sequencer2d_s",
            "what": "GRU instead of LSTM in the same 2-D layout"},
}


def ablation_model(name: str, **kwargs: Any) -> nn.Module:
    """:data:`BASE` with the changes of ablation ``name`` (extra ``kwargs`` override)."""
    if name not in ABLATIONS:
        raise ValueError(f"unknown ablation {name!r}; expected one of {list(ABLATIONS)}")
    changes = dict(ABLATIONS[name]["kwargs"])
    factor = changes.pop("hidden_x", 1)
    if factor != 1:  # h relative to the base, so the variants follow the base preset
        changes["hidden_sizes"] = tuple(factor * h for h in preset_config(BASE).hidden_sizes)
    return create_model(BASE, **{**changes, **kwargs})


def run_ablation(
    variants: Sequence[str],
    seeds: Sequence[int],
    *,
    epochs: int,
    limit_train: int | None,
    limit_test: int | None,
    batch_size: int,
    lr: float = 2e-3,
    warmup_epochs: float = 0.1,
    amp: str = "off",
    device: str | torch.device = "cpu",
    done: Sequence[dict] = (),
    on_run: Callable[[dict], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> list[dict]:
    """Train every ablation variant once per seed with one fixed recipe; one dict per run.

    Recipe: AdamW (lr ``lr``, weight decay 0.05), linear warmup then cosine, no augmentation, no label smoothing,
    ``epochs`` epochs on a fixed random subset of ``limit_train`` training images (the same subset for every
    seed and variant; the seed sets the initial weights and the batch order). The score is the test accuracy
    after the last epoch on a fixed subset of ``limit_test`` test images (no selection on the test set).
    ``amp`` is the trainer's mixed precision (``'bf16'`` trains about 1.4× faster on CPUs with native bfloat16,
    e.g. AVX512-BF16). Runs listed in ``done`` (same variant, seed and recipe) are kept instead of retrained.
    """
    recipe = {"epochs": epochs, "limit_train": limit_train, "limit_test": limit_test, "batch_size": batch_size,
              "lr": lr, "weight_decay": 0.05, "warmup_epochs": warmup_epochs, "aug": "none", "label_smoothing": 0.0,
              "amp": amp}
    finished = {(r["variant"], r["seed"]): r for r in done if r.get("recipe") == recipe}
    runs = []
    for seed in seeds:  # seed-major: an interrupted run still has every variant for the first seeds
        for variant in variants:
            if (variant, seed) in finished:
                runs.append(finished[(variant, seed)])
                continue
            torch.manual_seed(seed)
            model = ablation_model(variant)
            n_params, n_macs = param_count(model), count_macs(model, (1, 28, 28))
            train_loader, test_loader, _ = make_loaders(
                "fashion_mnist", batch_size, AugmentConfig.preset("none"), limit_train=limit_train,
                limit_test=limit_test, seed=seed, device=device)
            cfg = TrainConfig(epochs=epochs, lr=lr, weight_decay=0.05, warmup_epochs=warmup_epochs,
                              aug=AugmentConfig.preset("none"), amp=amp, device=str(device), seed=seed)
            t0 = time.perf_counter()
            history = fit(model, train_loader, test_loader, cfg)
            run = {"variant": variant, "seed": seed, "params": n_params, "macs": n_macs,
                   "test_acc": history["test_acc"][-1], "train_acc": history["train_acc"][-1],
                   "train_loss": history["train_loss"][-1], "wall_s": time.perf_counter() - t0,
                   "images_per_s": statistics.fmean(history["images_per_s"]), "recipe": recipe}
            runs.append(run)
            if log:
                log(f"ablation {variant:<16} seed {seed}: test acc {100 * run['test_acc']:.2f}%  "
                    f"({n_params:,} params, {run['wall_s']:.0f}s)")
            if on_run is not None:
                on_run(run)
    return runs


def summarize_ablation(runs: Sequence[dict], baseline: str = "baseline") -> dict[str, dict[str, Any]]:
    """Per variant: mean ± std (n-1) of the test accuracy over seeds, and the paired difference to ``baseline``.

    The difference is taken seed by seed (same data order, same subset), its mean ± std and standard error;
    ``within_noise`` is True when ``|mean difference| < 2 · standard error`` (or fewer than two seeds).
    """
    by_variant: dict[str, dict[int, dict]] = {}
    for r in runs:
        by_variant.setdefault(r["variant"], {})[r["seed"]] = r
    base = by_variant.get(baseline, {})
    out: dict[str, dict[str, Any]] = {}
    for variant, seeds in by_variant.items():
        accs = [seeds[s]["test_acc"] for s in sorted(seeds)]
        any_run = next(iter(seeds.values()))
        row: dict[str, Any] = {"n": len(accs), "mean": statistics.fmean(accs),
                               "std": statistics.stdev(accs) if len(accs) > 1 else None,
                               "params": any_run["params"], "macs": any_run["macs"],
                               "official": ABLATIONS.get(variant, {}).get("official"),
                               "what": ABLATIONS.get(variant, {}).get("what"),
                               "mean_wall_s": statistics.fmean(seeds[s]["wall_s"] for s in seeds)}
        paired = [seeds[s]["test_acc"] - base[s]["test_acc"] for s in sorted(seeds) if s in base]
        if variant != baseline and paired:
            sd = statistics.stdev(paired) if len(paired) > 1 else None
            se = sd / math.sqrt(len(paired)) if sd is not None else None
            row.update({"delta_mean": statistics.fmean(paired), "delta_std": sd, "delta_se": se,
                        "within_noise": se is None or abs(statistics.fmean(paired)) < 2 * se})
        out[variant] = row
    return out
