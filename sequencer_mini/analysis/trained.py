"""Chapters 6, 9 and 10: the book's trained Fashion-MNIST models, loaded one way, with one fallback policy.

The race of chapter 6 (``sequencer_mini/train/recipes.py``, ``bench/race.py``) trains a Sequencer2D, a CNN and a ViT
of about the same size with the same 15 CPU minutes and writes, per model and seed,
``book/results/fmnist-race-<model>-s<seed>/``: ``results.json`` (recipe, per-epoch history, provenance),
``final.pt`` (the reported weights, the EMA's: ``{"model": state_dict, "epoch", "test_acc", "images_seen",
"model_config"}``) and ``epochs/NNN.pt`` (the same per epoch).

:func:`load_trained` returns one of them as a :class:`TrainedModel`; :func:`load_race` all three.

**The fallback policy.** When the recorded weights are missing (a fresh clone without them, a checkpoint not
committed), ``fallback="train"`` trains the *same* recipe through ``python -m sequencer_mini.train`` at the
current budget (:func:`~sequencer_mini.core.budget.budget`): at ``ci`` shortened to one epoch on 256 images (float32,
native side), at ``cpu``/``gpu`` the recipe as recorded. It trains into ``runs/fallback/<budget>/<run>/``
(resumable; a finished one is reused), and the note says ``FALLBACK`` and names the command that remakes the
recorded run. ``fallback="error"`` raises :class:`FileNotFoundError` instead. Nothing printed holds an absolute
path: files are shown relative to the repository.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

from sequencer_mini.core.budget import budget
from sequencer_mini.train.cli import main as train_main
from sequencer_mini.train.recipes import RACE_MODELS, RECIPES, build_model, model_args

__all__ = ["LABELS", "TrainedModel", "EpochCheckpoint", "load_trained", "load_race", "epoch_checkpoints",
           "build", "run_name", "remake_command", "results_root", "load_weights"]

_REPO_ROOT = Path(__file__).resolve().parent.parent

#: The race's models in the order of the book's tables, with the labels of its figures.
LABELS: dict[str, str] = {"sequencer2d_fast28": "Sequencer2D", "small_cnn": "CNN", "small_vit": "ViT"}

#: The ``ci`` budget's fallback: the recipe shortened to one epoch on this many training (and test) images.
CI_IMAGES = 256


@dataclass
class TrainedModel:
    """A trained model and where its weights came from.

    Attributes:
        model: the network, in eval mode.
        name: the model's preset name, e.g. ``'sequencer2d_fast28'``.
        label: the name in figures: ``'Sequencer2D'``, ``'CNN'`` or ``'ViT'``.
        seed: the training seed.
        source: ``'recorded'`` (the committed run) or ``'fallback'`` (trained here, see the module docstring).
        note: one sentence to print: the file, its test accuracy and images seen, or what the fallback did.
        weights: the weights file, relative to the repository.
        checkpoint: ``'final'`` or ``'epoch:N'``.
        results: the run's ``results.json`` (recipe, history, provenance).
    """

    model: nn.Module
    name: str
    label: str
    seed: int
    source: str
    note: str
    weights: str
    checkpoint: str = "final"
    results: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """JSON-ready: who the model is, where it came from, and its training run in brief."""
        r = self.results
        train = {k: r[k] for k in ("final_test_acc", "best_test_acc", "epochs_completed", "complete", "n_train",
                                   "n_test", "images_seen", "budget", "batch_size", "params") if k in r}
        recipe = r.get("recipe") or {}
        train.update({f"recipe_{k}": recipe[k] for k in ("name", "epochs", "lr", "limit_train") if k in recipe})
        prov = r.get("provenance") or {}
        train.update({f"provenance_{k}": prov[k] for k in ("date", "device", "git_commit", "command") if k in prov})
        return {"name": self.name, "label": self.label, "seed": self.seed, "source": self.source, "note": self.note,
                "weights": self.weights, "checkpoint": self.checkpoint, "train": train}

    def untrained(self, seed: int = 0) -> nn.Module:
        """The same architecture with fresh weights (seeded), in eval mode: the "random init" baseline."""
        return build(self.name, seed).eval()


@dataclass(frozen=True)
class EpochCheckpoint:
    """One epoch of a recorded run: its accuracies from ``results.json`` and whether its weights are present."""

    epoch: int
    checkpoint: str  # pass to load_trained(checkpoint=...)
    test_acc: float | None
    val_acc: float | None
    images_seen: int | None
    img_size: int | None
    weights: str  # relative to the repository
    exists: bool


def run_name(model: str, seed: int = 0) -> str:
    """``'fmnist-race-<model>-s<seed>'``: the run folder under ``book/results/``."""
    return f"{_recipe(model)}-s{seed}"


def remake_command(model: str, seed: int = 0) -> str:
    """The command that remakes the recorded run (what ``bench/race.py run`` executes, without ``--threads``)."""
    return (f"python -m sequencer_mini.train --recipe {_recipe(model)} --seed {seed} --keep-epochs "
            f"--out book/results/{run_name(model, seed)}")


def results_root() -> Path:
    """``book/results`` of this checkout: ``results/`` seen from ``book/`` (a notebook), ``book/results/`` seen
    from the repository root, else the folder next to this package."""
    for candidate in (Path("results"), Path("book") / "results", _REPO_ROOT / "book" / "results"):
        if candidate.is_dir():
            return candidate.resolve()
    return _REPO_ROOT / "book" / "results"


def build(model: str, seed: int = 0) -> nn.Module:
    """The race's architecture ``model`` (1 × 28 × 28 inputs, 10 classes, the recipe's preset overrides) with
    fresh weights drawn after ``torch.manual_seed(seed)``."""

    torch.manual_seed(seed)
    return build_model(model, 1, 10, 28, **model_args(RACE_MODELS[model]["model_arg"]))[0]


def load_weights(path: str | Path) -> dict[str, Tensor]:
    """A state dict from a weights file: ``final.pt``/``epochs/NNN.pt`` (key ``model``), a training checkpoint,
    or a bare state dict (``module.`` and ``_orig_mod.`` prefixes of DDP / ``torch.compile`` removed)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("model", "state_dict", "model_state"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    return {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in state.items()}


def epoch_checkpoints(model: str, seed: int = 0, *, results_dir: str | Path | None = None) -> list[EpochCheckpoint]:
    """Every epoch of the recorded run with its accuracies (from ``results.json``), e.g. to pick the checkpoint
    at which each model reaches a common accuracy. ``exists`` says whether ``epochs/NNN.pt`` is present."""
    run = Path(results_dir or results_root()) / run_name(model, seed)
    results = _read_json(run / "results.json", model, seed)
    h = results.get("history") or {}
    out = []
    for k, epoch in enumerate(h.get("epoch", [])):
        path = run / "epochs" / f"{epoch:03d}.pt"
        out.append(EpochCheckpoint(epoch, f"epoch:{epoch}", _at(h, "test_acc", k), _at(h, "val_acc", k),
                                   _at(h, "images_seen", k), _at(h, "img_size", k), _shown(path), path.is_file()))
    return out


def load_trained(
    model: str,
    seed: int = 0,
    *,
    checkpoint: str = "final",
    results_dir: str | Path | None = None,
    fallback: str = "train",
    fallback_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
    log: Callable[[str], None] | None = print,
) -> TrainedModel:
    """The race's ``model`` trained with ``seed``: the recorded weights, or the fallback (module docstring).

    Args:
        model: ``'sequencer2d_fast28'``, ``'small_cnn'`` or ``'small_vit'``.
        seed: the training seed of the run.
        checkpoint: ``'final'`` (the reported weights) or ``'epoch:N'`` (after epoch N, see
            :func:`epoch_checkpoints`).
        results_dir: where the recorded runs are (default: :func:`results_root`).
        fallback: ``'train'`` or ``'error'``, when the recorded weights are missing.
        fallback_dir: where fallbacks are trained (default: ``runs/fallback`` of the checkout).
        device: where the model is returned.
        log: called with a line before a fallback trains (``None``: silent).
    """
    if fallback not in ("train", "error"):
        raise ValueError(f"fallback must be 'train' or 'error', got {fallback!r}")
    epoch = _parse_checkpoint(checkpoint)
    run = Path(results_dir or results_root()) / run_name(model, seed)
    path = run / ("final.pt" if epoch is None else f"epochs/{epoch:03d}.pt")
    if path.is_file():
        results = _read_json(run / "results.json", model, seed) if (run / "results.json").is_file() else {}
        net, info = _load(model, path, results, device)
        note = f"{LABELS[model]} ({model}, seed {seed}): {_shown(path)}, {_facts(info, results)}"
        return TrainedModel(net, model, LABELS[model], seed, "recorded", note, _shown(path), checkpoint, results)
    command = remake_command(model, seed)
    if fallback == "error":
        raise FileNotFoundError(f"{_shown(path)} is missing (the recorded {checkpoint} weights of {model}, seed "
                                f"{seed}); remake the run with: {command}")

    out = Path(fallback_dir or _default_fallback_dir()) / budget() / run_name(model, seed)
    results = _train_fallback(model, seed, out, device, log, missing=_shown(path))
    have = results["epochs_completed"]
    used = out / ("final.pt" if epoch is None else f"epochs/{min(epoch, have):03d}.pt")
    net, info = _load(model, used, results, device)
    how = (f"shortened to the ci budget ({have} epoch on {results['n_train']} images, float32)" if budget() == "ci"
           else f"as recorded, at the {budget()} budget")
    asked = "" if epoch is None or epoch <= have else f" (epoch {epoch} was asked for; the fallback has {have})"
    note = (f"{LABELS[model]} ({model}, seed {seed}): FALLBACK, {_shown(path)} is missing, so this model was trained "
            f"here with the recipe {_recipe(model)} {how}: {_shown(used)}{asked}, {_facts(info, results)}. It is NOT "
            f"the recorded model; the recorded run is remade by: {command}")
    return TrainedModel(net, model, LABELS[model], seed, "fallback", note, _shown(used), checkpoint, results)


def load_race(seed: int = 0, *, models: tuple[str, ...] = tuple(LABELS), **kwargs: Any) -> dict[str, TrainedModel]:
    """:func:`load_trained` for each race model (keyword arguments passed on), keyed by model name."""
    return {model: load_trained(model, seed, **kwargs) for model in models}


# ----------------------------------------------------------------------------------------------- helpers


def _recipe(model: str) -> str:
    if model not in LABELS:
        raise ValueError(f"unknown race model {model!r}; expected one of {list(LABELS)}")
    return f"fmnist-race-{model}"


def _parse_checkpoint(checkpoint: str) -> int | None:
    """``'final'`` -> None, ``'epoch:N'`` -> N."""
    if checkpoint == "final":
        return None
    kind, _, number = checkpoint.partition(":")
    if kind != "epoch" or not number.isdigit() or int(number) < 1:
        raise ValueError(f"checkpoint must be 'final' or 'epoch:N' with N >= 1, got {checkpoint!r}")
    return int(number)


def _read_json(path: Path, model: str, seed: int) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"{_shown(path)} is missing; remake the run with: {remake_command(model, seed)}")
    return json.loads(path.read_text(encoding="utf-8"))


def _at(history: dict[str, list], key: str, k: int) -> Any:
    values = history.get(key) or []
    return values[k] if k < len(values) else None


def _load(model: str, path: Path, results: dict[str, Any], device: str | torch.device) -> tuple[nn.Module, dict]:
    """Build the architecture, check it against the recorded ``model_config``, load the weights (strict)."""

    net, config = build_model(model, 1, 10, 28, **model_args(RACE_MODELS[model]["model_arg"]))
    info = torch.load(path, map_location="cpu", weights_only=True)
    info = info if isinstance(info, dict) else {}
    recorded = info.get("model_config") or results.get("model_config")
    if recorded and json.loads(json.dumps(config)) != json.loads(json.dumps(recorded)):
        raise ValueError(f"{_shown(path)} holds a {recorded.get('name')} with config {recorded}, but the recipe "
                         f"builds {config}: the recipe changed since the run; remake it")
    try:
        net.load_state_dict(load_weights(path))
    except RuntimeError as err:
        raise RuntimeError(f"{_shown(path)} does not fit {model}: {str(err).splitlines()[0]}") from err
    return net.to(device).eval(), info


def _facts(info: dict[str, Any], results: dict[str, Any]) -> str:
    """'epoch 10, test accuracy 90.12% on 10,000 test images, 600,000 images seen' from what is known."""
    parts = []
    epoch = info.get("epoch")
    if epoch is not None:
        parts.append(f"epoch {epoch}" + (f" of {results['epochs_completed']}" if "epochs_completed" in results else ""))
    acc = info.get("test_acc", results.get("final_test_acc"))
    if isinstance(acc, (int, float)):
        n_test = results.get("n_test")
        parts.append(f"test accuracy {100 * acc:.2f}%" + (f" on {n_test:,} test images" if n_test else ""))
    seen = info.get("images_seen", results.get("images_seen"))
    if seen:
        parts.append(f"{seen:,} images seen")
    return ", ".join(parts) or "no accuracy recorded"


def _default_fallback_dir() -> Path:
    root = results_root()
    checkout = root.parent.parent if root.parent.name == "book" else Path.cwd()
    return checkout / "runs" / "fallback"


def _fallback_argv(model: str, seed: int, out: Path, device: str | torch.device) -> list[str]:
    """The recipe at the current budget: as recorded, or at ``ci`` one epoch on :data:`CI_IMAGES` images at
    the native side, float32, with the recipe's warmup fraction."""

    recipe = RECIPES[_recipe(model)]
    argv = ["--recipe", _recipe(model), "--seed", str(seed), "--keep-epochs", "--resume", "--budget", budget(),
            "--device", str(device), "--out", str(out)]
    if budget() == "ci":
        side = str(recipe["img_sizes"]).split(",")[-1] if recipe.get("img_sizes") else "28"
        argv += ["--epochs", "1", "--limit-train", str(CI_IMAGES), "--limit-test", str(CI_IMAGES), "--img-sizes", side,
                 "--warmup-epochs", f"{recipe['warmup_epochs'] / recipe['epochs']:g}", "--aug-from-epoch", "0",
                 "--amp", "off"]
    return argv


def _train_fallback(model: str, seed: int, out: Path, device: str | torch.device,
                    log: Callable[[str], None] | None, missing: str) -> dict[str, Any]:
    """Train (or resume, or reuse) the fallback run in ``out``; its results, the command shown without paths."""

    argv = _fallback_argv(model, seed, out, device)
    shown = shlex.join(["python", "-m", "sequencer_mini.train", *(_shown(out) if a == str(out) else a for a in argv)])
    done = out / "results.json"
    if done.is_file() and (out / "final.pt").is_file():
        results = json.loads(done.read_text(encoding="utf-8"))
        if results.get("complete"):
            results.setdefault("provenance", {})["command"] = shown
            return results
    if log is not None:
        log(f"{run_name(model, seed)}: {missing} is missing; training the fallback: {shown}")
    train_main(argv)
    results = json.loads(done.read_text(encoding="utf-8"))  # with the provenance that main() wrote
    results["provenance"]["command"] = shown  # the file has the --out path of this machine
    return results


def _shown(path: Path) -> str:
    """``path`` for printing: relative to the repository or the working directory, else from its run folder
    on (``fmnist-race-.../final.pt``), never absolute."""
    path = Path(path).resolve()
    for root in (_REPO_ROOT, Path.cwd()):
        try:
            return path.relative_to(root.resolve()).as_posix()
        except ValueError:
            pass
    parts = path.parts
    start = next((i for i, p in enumerate(parts) if p.startswith("fmnist-race-")), len(parts) - 1)
    return "/".join(parts[max(start - 1, 1):])
