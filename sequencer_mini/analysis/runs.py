"""Where the training chapters' runs live: a recorded run, or one trained here that survives a Colab disconnect.

Chapters 6-8 show recorded runs (``book/results/*/results.json``) and train a run only when its recorded
file is missing (or at the ``ci`` budget, to test the code). A run trained on Colab must survive a
disconnect, which wipes the machine: :func:`checkpoint_dir` puts its checkpoints on Google Drive when Drive
is mounted (and says clearly when it is not), and :func:`recorded_or_trained` resumes from them when the
notebook is run again.

Folders, first match wins:

1. ``$SEQUENCER_CHECKPOINTS/<name>``;
2. on Colab with Drive mounted: ``/content/drive/MyDrive/sequencer_mini/<name>``;
3. on Colab without Drive: ``/content/sequencer_mini_runs/<name>``, with a message that a disconnect loses it;
4. elsewhere: ``~/.cache/sequencer_mini/runs/<name>`` (or ``$SEQUENCER_CACHE/runs/<name>``).

A dry run (``SEQUENCER_DRY_RUN``) uses a ``dry-run/`` subfolder, so its checkpoints never mix with real ones.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

from sequencer_mini.core.budget import budget, dry_run
from sequencer_mini.core.env import cache_dir
from sequencer_mini.core.provenance import read_results
from sequencer_mini.train.cli import main as train_main

__all__ = ["CHECKPOINTS_VAR", "checkpoint_dir", "on_colab", "recorded_or_trained"]

#: The environment variable that overrides where runs are written.
CHECKPOINTS_VAR = "SEQUENCER_CHECKPOINTS"
#: Google Drive as Colab mounts it (``drive.mount("/content/drive")``).
DRIVE = Path("/content/drive/MyDrive")
#: Colab's local disk: gone after a disconnect.
COLAB_LOCAL = Path("/content/sequencer_mini_runs")

_warned: set[str] = set()


def on_colab() -> bool:
    """True inside a Google Colab kernel."""
    return "google.colab" in sys.modules


def _root() -> tuple[Path, str]:
    if os.environ.get(CHECKPOINTS_VAR):
        return Path(os.environ[CHECKPOINTS_VAR]).expanduser(), f"${CHECKPOINTS_VAR}"
    if DRIVE.is_dir():
        return DRIVE / "sequencer_mini", "Google Drive"
    if on_colab():
        return COLAB_LOCAL, "the Colab machine's own disk"

    return Path(cache_dir()) / "runs", "the local cache"


def checkpoint_dir(name: str) -> Path:
    """The folder (created) for the checkpoints and ``results.json`` of run ``name``; see the module docstring.

    Raises:
        ValueError: if ``name`` is empty or is not a single folder name.
    """
    if not name or Path(name).name != name or name in (".", ".."):
        raise ValueError(f"run name must be a single folder name such as 'fmnist-gpu-sequencer2d_mini28', got {name!r}")
    root, where = _root()
    folder = root / ("dry-run" if dry_run() else "") / name
    folder.mkdir(parents=True, exist_ok=True)
    if where == "the Colab machine's own disk" and name not in _warned:
        _warned.add(name)
        print(f"Google Drive is NOT mounted: the checkpoints of {name!r} go to {folder}, which a Colab disconnect "
              "deletes.\nTo keep them, run\n    from google.colab import drive; drive.mount('/content/drive')\n"
              "and re-run this cell: runs then go to Google Drive and a re-run resumes from the last finished epoch.")
    return folder


def recorded_or_trained(recorded: str | os.PathLike[str] | None, command: str, args: Sequence[str], name: str,
                        train: Callable[[list[str]], Any] | None = None) -> tuple[dict, str, Path]:
    """The recorded run, else a run of ``python -m sequencer_mini.train ARGS`` trained (or resumed, or found) here.

    Args:
        recorded: the committed ``results.json`` shown at the cpu and gpu budgets (None: there is none).
        command: the command that makes ``recorded``, printed when it is missing.
        args: command-line arguments for :func:`sequencer_mini.train.main` without ``--budget``/``--out``/``--resume``.
        name: the run's folder name under :func:`checkpoint_dir`.
        train: the command line's ``main`` (a parameter for tests); default :func:`sequencer_mini.train.main`.

    Returns:
        ``(results, source, run folder)``; ``source`` says which of the four cases happened.

    At the ``ci`` budget it always trains, in a fresh temporary folder, to test this code. Otherwise a run
    found complete in its folder is returned as it is, and an interrupted one (a Colab disconnect, or
    ``--stop-after``) is resumed from its ``last.pt``: re-running the notebook continues where it stopped.
    """
    current = budget()
    if current != "ci" and recorded is not None and Path(recorded).is_file():
        return read_results(recorded, command), "recorded run", Path(recorded).parent
    if current == "ci":
        out = Path(tempfile.mkdtemp(prefix=f"{name}-"))
    else:
        out = checkpoint_dir(name)
        done = out / "results.json"
        if done.is_file():
            run = read_results(done)
            if run.get("complete") and run.get("budget") == current:
                return run, f"trained here earlier ({current} budget, {out})", out
        if recorded is not None:
            print(f"{recorded} is missing; it is made by\n    {command}\n  Training it here at the {current} budget "
                  f"instead, with checkpoints in {out} (a re-run resumes).")
    resuming = (out / "last.pt").is_file()
    if train is None:
        train = train_main
    train([*args, "--budget", current, "--out", str(out), "--resume"])
    run = read_results(out / "results.json")
    state = "resumed" if resuming else "trained"
    return run, f"{state} here ({current} budget)" + ("" if run.get("complete") else ", NOT complete yet"), out
