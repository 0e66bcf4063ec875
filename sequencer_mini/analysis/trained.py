"""Chapters 6, 9 and 10: the book's trained Fashion-MNIST models, loaded one way, and the one "recorded, else made
here" rule of the book.

The race of chapter 6 (:mod:`sequencer_mini.train.protocol`, run by ``bench/experiments.py``) trains a Sequencer2D, a
CNN and a ViT of about the same size on the same 240,000 images (4 passes over the 60,000 training images), each at
the learning rate its tuning chose (``book/results/fmnist-tune/choice.json``), for the seeds
``protocol.RACE_SEEDS``. Each run writes ``book/results/fmnist-race240k-<model>-s<seed>/`` (the folder is
:func:`~sequencer_mini.train.protocol.race_run`'s, read here through :func:`run_name`): ``results.json`` (recipe,
per-pass history, time spent training, provenance) and ``final.pt``, the weights the book reads: ``{"model":
state_dict, "epoch", "test_acc", "images_seen", "model_config"}`` (and, in the first runs, ``"ema_probes"``, which
nothing here reads). The tuning chose no EMA (``choice.json``: ``"ema": "off"``), so ``model`` holds the raw weights
at the end of the run. Quarter-pass ``snapshots/`` stay on the machine that trained them.

:func:`load_trained` returns one model as a :class:`TrainedModel`; :func:`load_race` all three;
:func:`race_seeds` which seeds of a model are finished.

**Recorded, else made here.** Every page shows recorded results and makes a result itself only when its file is
missing (or at the ``ci`` budget, to test the code that makes it). One function decides,
:func:`recorded_or_computed` (the data, with an ``origin`` line that says which happened); one function trains
here, :func:`train_here` (a run that resumes after an interruption and is reused once finished), in a folder from
:func:`checkpoint_dir` that survives a Colab disconnect:

1. ``$SEQUENCER_CHECKPOINTS/<name>``;
2. on Colab with Drive mounted: ``/content/drive/MyDrive/sequencer_mini/<name>``;
3. on Colab without Drive: ``/content/sequencer_mini_runs/<name>``, with a message that a disconnect loses it;
4. elsewhere: ``~/.cache/sequencer_mini/runs/<name>`` (or ``$SEQUENCER_CACHE/runs/<name>``).

A dry run (``SEQUENCER_DRY_RUN``) uses a ``dry-run/`` subfolder, so its checkpoints never mix with real ones.
:func:`recorded_or_trained` is the two together: a recorded training run, else that run trained here.

**The fallback policy of the race's models.** When the recorded weights are missing (a fresh clone without them, a
run not finished yet), ``fallback="train"`` trains the *same* recipe (the protocol's flags) through ``python -m
sequencer_mini.train`` at the current budget (:func:`~sequencer_mini.core.budget.budget`): at ``ci`` shortened to
one pass over :data:`CI_IMAGES` images (float32, crop/flip throughout, the recipe's warmup share, no EMA probes or
snapshots), at ``cpu``/``gpu`` the recipe as recorded. It trains with :func:`train_here` into
``<checkpoint_dir("fallback")>/<budget>/<run>/`` (resumable; a finished one is reused), and the note says
``FALLBACK`` and names the command that remakes the recorded run. ``fallback="error"`` raises
:class:`FileNotFoundError` instead. Recorded weights are loaded at every budget, ``ci`` included (loading them is
cheap; the fallback is what a missing file costs). Nothing printed holds an absolute path: files are shown
relative to the repository.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sequencer_mini.core import paths
from sequencer_mini.core.budget import budget, dry_run
from sequencer_mini.core.env import cache_dir
from sequencer_mini.core.fsutil import check_finite_weights
from sequencer_mini.core.provenance import DryRunResultsError, is_dry_run, read_json_object, read_results
from sequencer_mini.train import protocol
from sequencer_mini.train.cli import main as train_main
from sequencer_mini.train.recipes import LABELS, RACE_MODELS, build_model, model_args

__all__ = ["LABELS", "TrainedModel", "load_trained", "load_race", "race_seeds", "build", "run_name", "remake_command",
           "race_choice", "read_weights", "load_weights", "recorded_or_computed", "recorded_or_trained", "train_here",
           "checkpoint_dir", "on_colab", "CHECKPOINTS_VAR", "CHOICE", "CI_IMAGES"]

#: The environment variable that overrides where runs trained here are written.
CHECKPOINTS_VAR = "SEQUENCER_CHECKPOINTS"
#: Google Drive as Colab mounts it (``drive.mount("/content/drive")``).
DRIVE = Path("/content/drive/MyDrive")
#: Colab's local disk: gone after a disconnect.
COLAB_LOCAL = Path("/content/sequencer_mini_runs")

_warned: set[str] = set()

#: The ``ci`` budget's fallback: the recipe shortened to one pass over this many training (and test) images.
CI_IMAGES = 256
#: The tuning's choice (``chosen_lr`` per model, ``ema``), inside the repository; written by ``bench/experiments.py``.
CHOICE = f"{protocol.TUNE_DIR}/choice.json"


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
        results: the run's ``results.json`` (recipe, history, time spent training, provenance).
    """

    model: nn.Module
    name: str
    label: str
    seed: int
    source: str
    note: str
    weights: str
    results: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """JSON-ready: who the model is, where it came from, and its training run in brief."""
        r = self.results
        train: dict[str, Any] = {k: r[k] for k in ("final_test_acc", "best_test_acc", "epochs_completed", "complete",
                                                   "n_train", "n_test", "images_seen", "train_time_s", "wall_time_s",
                                                   "budget", "batch_size", "params") if k in r}
        recipe = r.get("recipe") or {}
        train.update({f"recipe_{k}": recipe[k] for k in ("name", "epochs", "lr", "limit_train")
                      if recipe.get(k) is not None})
        prov = r.get("provenance") or {}
        train.update({f"provenance_{k}": prov[k] for k in ("date", "device", "git_commit", "command") if k in prov})
        return {"name": self.name, "label": self.label, "seed": self.seed, "source": self.source, "note": self.note,
                "weights": self.weights, "train": train}

    def untrained(self, seed: int = 0) -> nn.Module:
        """The same architecture with fresh weights (seeded), in eval mode: the "random init" baseline."""
        return build(self.name, seed).eval()


def race_choice() -> dict[str, Any]:
    """The tuning's choice, :data:`CHOICE` (``{"chosen_lr": {model: lr}, "ema": "off", ...}``), checked.

    Raises:
        FileNotFoundError: if the file is missing (it is committed; ``bench/experiments.py run`` remakes it).
        ValueError: if it is damaged, lacks a positive ``chosen_lr`` for a race model, or chose an EMA (the race's
            ``final.pt`` holds the raw weights, which are the chosen ones only when ``ema`` is ``"off"``).
    """
    path = _choice_file()
    fix = "restore it (git checkout) or remake it with: python bench/experiments.py run"
    choice = protocol.read_json(path)
    if choice is None:
        raise FileNotFoundError(f"{_shown(path)} is missing: the learning rate chapter 6's tuning chose for each "
                                f"race model; {fix}")
    lrs = choice.get("chosen_lr")
    bad = [m for m in LABELS if not isinstance(lrs, dict) or isinstance(lrs.get(m), bool)
           or not isinstance(lrs.get(m), (int, float)) or not lrs[m] > 0]
    if bad:
        raise ValueError(f"{_shown(path)}: 'chosen_lr' must give a learning rate > 0 for each of {list(LABELS)}, "
                         f"none for {bad}; {fix}")
    if choice.get("ema", "off") != "off":
        raise ValueError(f"{_shown(path)} chose EMA {choice['ema']!r}, but the race's final.pt holds the raw weights "
                         f"(the choice the book reads is 'off'); teach load_trained to read the chosen EMA first")
    return choice


def _race_run(model: str, seed: int) -> protocol.Run:
    """The protocol's race run of ``model`` and ``seed``, at the learning rate of :func:`race_choice`."""
    _check_model(model)
    return protocol.race_run(model, float(race_choice()["chosen_lr"][model]), seed)


def run_name(model: str, seed: int = 0) -> str:
    """``'fmnist-race240k-<model>-s<seed>'``: the race run's folder under ``book/results/``
    (:func:`~sequencer_mini.train.protocol.race_run`)."""
    return Path(_race_run(model, seed).out).name


def remake_command(model: str, seed: int = 0) -> str:
    """The command that remakes the recorded run from the repository root: the protocol's (what
    ``bench/experiments.py run`` executes), without ``--threads``."""
    words = _race_run(model, seed).command(1)
    at = words.index("--threads")
    return shlex.join(words[:at] + words[at + 2:])


def build(model: str, seed: int = 0) -> nn.Module:
    """The race's architecture ``model`` (1 × 28 × 28 inputs, 10 classes, the recipe's preset overrides) with
    fresh weights drawn after ``torch.manual_seed(seed)``."""
    torch.manual_seed(seed)
    return build_model(model, 1, 10, 28, **model_args(RACE_MODELS[model]["model_arg"]))[0]


def read_weights(path: str | Path) -> dict[str, Any]:
    """A weights file (``final.pt``, a checkpoint) read on the CPU with ``weights_only=True``, as it is: a dict.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: naming the file, if it is empty, truncated, not a weights file or not a dict.
    """
    size = Path(path).stat().st_size if Path(path).is_file() else None
    if size == 0:
        raise ValueError(f"weights file {_shown(Path(path))} is empty (0 bytes: a write that never finished); "
                         f"restore it (git checkout) or remake the run")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:
        raise ValueError(f"weights file {_shown(Path(path))} is unreadable (truncated or not a weights file: "
                         f"{type(e).__name__}: {str(e).splitlines()[0][:200]}); restore it (git checkout) or remake "
                         f"the run") from e
    if not isinstance(state, dict):
        raise ValueError(f"weights file {_shown(Path(path))} holds a {type(state).__name__}, expected a dict")
    return state


def load_weights(path: str | Path) -> dict[str, Tensor]:
    """A state dict from a weights file: ``final.pt`` (key ``model``; other keys such as ``ema_probes`` are
    ignored), a training checkpoint, or a bare state dict (``module.`` and ``_orig_mod.`` prefixes of DDP /
    ``torch.compile`` removed). Refused, naming the file: an empty, truncated or foreign file, and weights holding
    NaN or infinity."""
    state: Any = read_weights(path)
    for key in ("model", "state_dict", "model_state"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    check_finite_weights(state, _shown(Path(path)))
    return {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in state.items()}


def load_trained(
    model: str,
    seed: int = 0,
    *,
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
        results_dir: where the recorded runs are (default: :func:`sequencer_mini.core.paths.results_dir`).
        fallback: ``'train'`` or ``'error'``, when the recorded weights are missing.
        fallback_dir: where fallbacks are trained, in ``<budget>/<run>/`` (default:
            ``checkpoint_dir("fallback")``, on Google Drive when Colab has it mounted).
        device: where the model is returned.
        log: called with a line before a fallback trains (``None``: silent).
    """
    if fallback not in ("train", "error"):
        raise ValueError(f"fallback must be 'train' or 'error', got {fallback!r}")
    run = _results_root(results_dir) / run_name(model, seed)
    path = run / "final.pt"
    command = remake_command(model, seed)
    trained_in: list[Path] = []  # the fallback's folder, once it has trained (or found) its run

    def train_fallback() -> dict[str, Any]:
        if fallback == "error":
            raise FileNotFoundError(f"{_shown(path)} is missing (the recorded weights of {model}, seed "
                                    f"{seed}); remake the run with: {command}")
        # a dry run's fallback never shares a folder with a real one (checkpoint_dir adds dry-run/ itself)
        base = Path(fallback_dir) / ("dry-run" if dry_run() else "") if fallback_dir else checkpoint_dir("fallback")
        out = base / budget() / run_name(model, seed)
        trained_in.append(out)

        def announce(line: str) -> None:
            if log is not None:
                log(f"{run_name(model, seed)}: {_shown(path)} is missing, so the fallback is {line}")

        return train_here(_fallback_argv(model, seed, device), out, log=None if log is None else announce)

    results = recorded_or_computed(path, command, train_fallback, read=lambda _: _run_results(run, model, seed),
                                   recorded_at_ci=True, log=None)
    if not trained_in:
        net, info = _load(model, path, results, device)
        note = f"{LABELS[model]} ({model}, seed {seed}): {_shown(path)}, {_facts(info, results)}"
        return TrainedModel(net, model, LABELS[model], seed, "recorded", note, _shown(path), results)

    have = results["epochs_completed"]
    used = trained_in[0] / "final.pt"
    net, info = _load(model, used, results, device)
    how = (f"shortened to the ci budget ({have} pass over {results['n_train']} images, float32)" if budget() == "ci"
           else f"as recorded, at the {budget()} budget")
    note = (f"{LABELS[model]} ({model}, seed {seed}): FALLBACK, {_shown(path)} is missing, so this model was trained "
            f"here with the race's recipe {how}: {_shown(used)}, {_facts(info, results)}. It is NOT "
            f"the recorded model; the recorded run is remade by: {command}")
    return TrainedModel(net, model, LABELS[model], seed, "fallback", note, _shown(used), results)


def load_race(seed: int = 0, *, models: tuple[str, ...] = tuple(LABELS), **kwargs: Any) -> dict[str, TrainedModel]:
    """:func:`load_trained` for each race model (keyword arguments passed on), keyed by model name."""
    return {model: load_trained(model, seed, **kwargs) for model in models}


def race_seeds(model: str, *, at_least: int = 1, at_most: int | None = None,
               results_dir: str | Path | None = None) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``(seeds, finished)``: the seeds of ``protocol.RACE_SEEDS`` to use for ``model``, and those of them whose
    recorded run is finished (``results.json`` complete and ``final.pt`` present). ``seeds`` is every finished seed,
    topped up to ``at_least`` with the first unfinished ones (which :func:`load_trained` then makes as a fallback)
    and cut to ``at_most``.

    Raises:
        ValueError: for an unknown model, ``at_least`` outside ``1..len(RACE_SEEDS)`` or ``at_most < at_least``; a
            damaged ``results.json`` (naming it and the command that remakes the run).
        DryRunResultsError: for a ``results.json`` written by a dry run, outside a dry run.
    """
    _check_model(model)
    top = len(protocol.RACE_SEEDS)
    if isinstance(at_least, bool) or not isinstance(at_least, int) or not 1 <= at_least <= top:
        raise ValueError(f"at_least must be a number of seeds from 1 to {top}, got {at_least!r}")
    if at_most is not None and (isinstance(at_most, bool) or not isinstance(at_most, int) or at_most < at_least):
        raise ValueError(f"at_most must be None or a number of seeds >= at_least ({at_least}), got {at_most!r}")
    root = _results_root(results_dir)
    finished = []
    for seed in protocol.RACE_SEEDS:
        run = root / run_name(model, seed)
        results = _read_json(run / "results.json", model, seed) if (run / "results.json").is_file() else {}
        if results.get("complete") is True and (run / "final.pt").is_file():
            finished.append(seed)
    seeds = finished + [s for s in protocol.RACE_SEEDS if s not in finished][: max(at_least - len(finished), 0)]
    seeds = sorted(seeds)[:at_most]
    return tuple(seeds), tuple(s for s in finished if s in seeds)


# ------------------------------------------------------------------------------ recorded, else made here


def on_colab() -> bool:
    """True inside a Google Colab kernel."""
    return "google.colab" in sys.modules


def _checkpoint_root() -> tuple[Path, str]:
    if os.environ.get(CHECKPOINTS_VAR):
        return Path(os.environ[CHECKPOINTS_VAR]).expanduser(), f"${CHECKPOINTS_VAR}"
    if DRIVE.is_dir():
        return DRIVE / "sequencer_mini", "Google Drive"
    if on_colab():
        return COLAB_LOCAL, "the Colab machine's own disk"
    return Path(cache_dir()) / "runs", "the local cache"


def checkpoint_dir(name: str) -> Path:
    """The folder (created) for the checkpoints and ``results.json`` of run ``name``: on Google Drive when Colab
    has it mounted, with a message when Colab has not; see the module docstring for the order.

    Raises:
        ValueError: if ``name`` is empty or is not a single folder name.
    """
    if not name or Path(name).name != name or name in (".", ".."):
        raise ValueError(f"run name must be a single folder name such as 'fmnist-gpu-sequencer2d_mini28', got {name!r}")
    root, where = _checkpoint_root()
    folder = root / ("dry-run" if dry_run() else "") / name
    folder.mkdir(parents=True, exist_ok=True)
    if where == "the Colab machine's own disk" and name not in _warned:
        _warned.add(name)
        print(f"Google Drive is NOT mounted: the checkpoints of {name!r} go to {folder}, which a Colab disconnect "
              "deletes.\nTo keep them, run\n    from google.colab import drive; drive.mount('/content/drive')\n"
              "and re-run this cell: runs then go to Google Drive and a re-run resumes from the last finished epoch.")
    return folder


def recorded_or_computed(recorded: str | os.PathLike[str] | None, command: str,
                         compute: Callable[[], dict[str, Any]], *,
                         read: Callable[[Path], dict[str, Any]] | None = None, recorded_at_ci: bool = False,
                         log: Callable[[str], None] | None = print) -> dict[str, Any]:
    """The recorded results file, else ``compute()`` made here: the data, with an ``origin`` line.

    At the ``cpu`` and ``gpu`` budgets an existing ``recorded`` file is read and nothing is computed; a missing
    one is reported with the command that makes it, then computed here. At the ``ci`` budget it is always
    computed, to test the code that makes it (``compute`` reads the budget and makes a small version), unless
    ``recorded_at_ci``.

    Args:
        recorded: the committed file (None: there is none).
        command: the command that makes ``recorded``.
        compute: makes the data here and returns it (a dict; it may set its own ``origin``).
        read: reads ``recorded`` (default: :func:`~sequencer_mini.core.provenance.read_results`, which refuses a
            dry run's numbers and names ``command`` when the file is missing).
        recorded_at_ci: read an existing recorded file at the ``ci`` budget too (trained weights: cheap to load).
        log: called with the line that reports a missing file (None: silent).

    Returns:
        the data with ``data["origin"]``, one line: it starts with ``"recorded"`` when the recorded file was read
        (``recorded by `<command>` on <device>, <date>, budget <budget>``, and ``INCOMPLETE`` for an interrupted
        run); otherwise it is what ``compute`` set, by default ``computed in this run at the <budget> budget (not
        the recorded results)``.
    """
    current = budget()
    path = None if recorded is None else Path(recorded)
    if path is not None and path.is_file() and (current != "ci" or recorded_at_ci):
        data = read(path) if read is not None else read_results(path, command)
        data["origin"] = _recorded_origin(data, command)
        return data
    if path is not None and current != "ci" and log is not None:
        log(f"{_shown(path)} is missing; it is made by: {command}")
    data = compute()
    data.setdefault("origin", f"computed in this run at the {current} budget (not the recorded results)")
    return data


def train_here(args: Sequence[str], out: str | os.PathLike[str], *, train: Callable[[list[str]], Any] | None = None,
               log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """``python -m sequencer_mini.train ARGS --budget <budget> --out OUT --resume``: a run finished in ``out`` at the
    current budget is returned as it is, an interrupted one (a Colab disconnect, ``--stop-after``) resumes from its
    ``last.pt``, otherwise it trains.

    Args:
        args: command-line arguments without ``--budget``/``--out``/``--resume``.
        out: the run's folder (:func:`checkpoint_dir` for one that survives a Colab disconnect).
        train: the command line's ``main`` (a parameter for tests); default :func:`sequencer_mini.train.cli.main`.
        log: called with one line (what runs, and its command) before it trains (None: silent).

    Returns:
        the run's ``results.json``, its provenance command shown without this machine's folders, with ``origin``:
        ``trained here``, ``resumed here`` (either with ``NOT complete yet`` when it stopped early) or
        ``trained here earlier``, and the budget.
    """
    current, out = budget(), Path(out)
    done = out / "results.json"
    if done.is_file():
        run = read_results(done)
        if run.get("complete") and run.get("budget") == current:
            return _made_here(run, out, f"trained here earlier ({current} budget, {_shown(out)})")
    resuming = (out / "last.pt").is_file()
    argv = [*args, "--budget", current, "--out", str(out), "--resume"]
    if log is not None:
        shown = shlex.join(["python", "-m", "sequencer_mini.train",
                            *(_shown(out) if a == str(out) else a for a in argv)])
        log(f"{'resuming' if resuming else 'training'} here at the {current} budget: {shown}")
    (train or train_main)(argv)
    run = read_results(done)
    state = "resumed" if resuming else "trained"
    return _made_here(run, out, f"{state} here ({current} budget)"
                      + ("" if run.get("complete") else ", NOT complete yet"))


def recorded_or_trained(recorded: str | os.PathLike[str] | None, command: str, args: Sequence[str], name: str,
                        train: Callable[[list[str]], Any] | None = None) -> dict[str, Any]:
    """The recorded training run, else ``python -m sequencer_mini.train ARGS`` trained (or resumed, or found) here:
    :func:`recorded_or_computed` with :func:`train_here` as the computation.

    Args:
        recorded: the committed ``results.json`` shown at the cpu and gpu budgets (None: there is none).
        command: the command that makes ``recorded``, printed when it is missing.
        args: command-line arguments for :func:`sequencer_mini.train.cli.main` without
            ``--budget``/``--out``/``--resume``.
        name: the run's folder name under :func:`checkpoint_dir`.
        train: the command line's ``main`` (a parameter for tests); default :func:`sequencer_mini.train.cli.main`.

    Returns:
        the run's results with its ``origin`` line: ``recorded by ...``, ``trained here``, ``resumed here`` or
        ``trained here earlier``. At the ``ci`` budget it always trains, in a fresh temporary folder, to test this
        code; otherwise the run lives in ``checkpoint_dir(name)``, so re-running the notebook after a disconnect
        continues where it stopped.
    """
    def train_it() -> dict[str, Any]:
        if budget() == "ci":
            return train_here(args, tempfile.mkdtemp(prefix=f"{name}-"), train=train)
        out = checkpoint_dir(name)
        return train_here(args, out, train=train,
                          log=lambda line: print(f"  {line}\n  (checkpoints in {out}: a re-run resumes)"))

    return recorded_or_computed(recorded, command, train_it)


# ----------------------------------------------------------------------------------------------- helpers


def _check_model(model: str) -> None:
    if model not in LABELS:
        raise ValueError(f"unknown race model {model!r}; expected one of {list(LABELS)}")


def _choice_file() -> Path:
    """:data:`CHOICE` from the first place that has it (:func:`~sequencer_mini.core.paths.repo_file`), else where
    the checkout would hold it."""
    return paths.repo_file(CHOICE, missing_ok=True) or paths.REPO_ROOT / CHOICE


def _read_json(path: Path, model: str, seed: int) -> dict[str, Any]:
    """A run's ``results.json``, checked: valid JSON, an object, not a dry run's; errors name the file."""
    fix = f"remake the run with: {remake_command(model, seed)}"
    if not path.is_file():
        raise FileNotFoundError(f"{_shown(path)} is missing; {fix}")
    results = read_json_object(path, "results file", fix)
    if is_dry_run(results) and not dry_run():
        raise DryRunResultsError(f"results file {_shown(path)} was written by a dry run (provenance.dry_run): its "
                                 f"numbers and weights are not results; {fix}")
    history = results.get("history", {})
    if not isinstance(history, dict) or not all(isinstance(v, list) for v in history.values()):
        raise ValueError(f"results file {_shown(path)}: 'history' must be an object of per-epoch lists; {fix}")
    return results


def _load(model: str, path: Path, results: dict[str, Any], device: str | torch.device) -> tuple[nn.Module, dict]:
    """Build the architecture, check it against the recorded ``model_config``, load the weights (strict)."""
    net, config = build_model(model, 1, 10, 28, **model_args(RACE_MODELS[model]["model_arg"]))
    info = read_weights(path)
    done = results.get("epochs_completed")
    if isinstance(done, int) and isinstance(info.get("epoch"), int) and info["epoch"] > done:
        raise ValueError(f"{_shown(path)} holds epoch {info['epoch']}, but the run's results.json records "
                         f"{done} epoch(s): the weights belong to another run (or one that did not finish writing); "
                         f"remake the run")
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
    """'epoch 4 of 4, test accuracy 88.97% on 10,000 test images, 240,000 images seen, 613 s in training steps'
    from what is known."""
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
    spent = results.get("train_time_s")  # every pass, across resumes (a resumed run's wall_time_s is its last call)
    if isinstance(spent, (int, float)) and not isinstance(spent, bool):
        parts.append(f"{spent:,.0f} s in training steps")
    return ", ".join(parts) or "no accuracy recorded"


def _results_root(results_dir: str | os.PathLike[str] | None) -> Path:
    """``results_dir``, else the checkout's ``book/results`` (:func:`sequencer_mini.core.paths.results_dir`), else
    where it would be (every recorded file is then reported missing)."""
    if results_dir:
        return Path(results_dir)
    return paths.results_dir(missing_ok=True) or paths.REPO_ROOT / "book" / "results"


def _run_results(run: Path, model: str, seed: int) -> dict[str, Any]:
    """A recorded run's ``results.json``, or ``{}`` where only its weights were committed."""
    return _read_json(run / "results.json", model, seed) if (run / "results.json").is_file() else {}


def _recorded_origin(data: dict[str, Any], command: str) -> str:
    prov = data.get("provenance") or {}
    origin = (f"recorded by `{command}` on {prov.get('device', 'an unknown device')}, "
              f"{str(prov.get('date', 'an unknown date'))[:10]}, budget {prov.get('budget', 'unknown')}")
    if data.get("complete") is False:
        origin += " — INCOMPLETE: the run was interrupted; rerun the command to finish it"
    return origin


def _made_here(run: dict[str, Any], out: Path, origin: str) -> dict[str, Any]:
    """``run`` with ``origin``, and its provenance command without this machine's path to ``out``."""
    prov = run.setdefault("provenance", {})
    words = shlex.split(str(prov.get("command", "")))
    prov["command"] = shlex.join(_shown(out) if w == str(out) else w for w in words)
    run["origin"] = origin
    return run


def _fallback_argv(model: str, seed: int, device: str | torch.device) -> list[str]:
    """The protocol's race flags at the current budget (:func:`train_here` adds budget, folder and ``--resume``): as
    recorded, or at ``ci`` one pass over :data:`CI_IMAGES` images, float32, crop/flip throughout, the recipe's share
    of warmup, no EMA probes or snapshots."""
    argv = _without(list(_race_run(model, seed).flags), ("--budget", "--device"))
    argv += ["--device", str(device)]
    if budget() == "ci":
        share = float(_value(argv, "--warmup-epochs")) / float(_value(argv, "--epochs"))
        argv = _without(argv, ("--ema-probe", "--snapshots", "--limit-test"))
        for flag, value in (("--epochs", "1"), ("--limit-train", str(CI_IMAGES)), ("--warmup-epochs", f"{share:g}"),
                            ("--aug-from-epoch", "0"), ("--amp", "off")):
            argv[argv.index(flag) + 1] = value
        argv += ["--limit-test", str(CI_IMAGES)]
    return argv


def _value(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def _without(argv: list[str], flags: tuple[str, ...]) -> list[str]:
    """``argv`` without ``flags`` and the value after each (every flag here takes one value)."""
    out, skip = [], False
    for word in argv:
        if skip:
            skip = False
        elif word in flags:
            skip = True
        else:
            out.append(word)
    return out


def _shown(path: Path) -> str:
    """``path`` for printing: relative to the repository or the working directory, else from its run folder
    on (``fmnist-race240k-.../final.pt``), never absolute."""
    path = Path(path).resolve()
    for root in (paths.REPO_ROOT, Path.cwd()):
        try:
            return path.relative_to(root.resolve()).as_posix()
        except ValueError:
            pass
    parts = path.parts
    start = next((i for i, p in enumerate(parts) if p.startswith("fmnist-race")), len(parts) - 1)
    return "/".join(parts[max(start - 1, 1):])
