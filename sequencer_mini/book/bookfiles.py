"""What the book says exists: the recorded runs and the chapter map.

The book claims a result only where its file exists. :func:`recorded_runs` lists the results files committed
under ``book/results/`` (each written by :func:`sequencer_mini.core.provenance.write_results`, so each names
its device; the folder is found by :func:`sequencer_mini.core.paths.results_dir`, the one resolver of the
repository's files), and :func:`chapter_map` / :func:`recorded_runs_text` turn that list into the sentences
that say which chapter shows which recorded run. Chapter 0, the README's chapter table and the setup page are
generated from them (``tools/write_results_claims.py``), so they cannot claim a run that is not committed. A
results file is assigned to a chapter by its ``dataset`` (training runs) or, for experiment and benchmark files
(``experiment`` or ``benchmark`` key), to the findings chapter; a file may also name its chapter with a
``"chapter": N`` key.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
import shlex

from sequencer_mini.core.paths import results_dir

__all__ = ["CHAPTERS", "Chapter", "RecordedRun", "chapter_map", "is_gpu_device", "public_command",
           "public_provenance", "recorded_runs", "recorded_runs_text"]

_REPO_DIRS = ("sequencer_mini", "bench", "tools", "book", "tests")


def public_command(command: str) -> str:
    """A recorded command without the recording machine's folders.

    A path inside the repository keeps its repository-relative part
    (``/any/checkout/bench/throughput.py`` becomes ``bench/throughput.py``); any other absolute path
    keeps its last component (``--out /root/out/fmnist`` becomes ``--out <dir>/fmnist``).
    """
    words = []
    for word in shlex.split(command):
        if word.startswith("/") and len(word) > 1:
            parts = Path(word).parts
            inside = [i for i, part in enumerate(parts) if part in _REPO_DIRS]
            word = "/".join(parts[inside[0]:]) if inside else f"<dir>/{parts[-1]}"
        words.append(word)
    return " ".join(w if w.startswith("<dir>/") else shlex.quote(w) for w in words)


def public_provenance(provenance: dict) -> dict[str, str]:
    """The parts of a results file's provenance a page shows: device, date, versions, commit, command.

    The commit comes from ``git_commit`` or, for a copy of the tree made without git, from the hash
    named in ``git_commit_note``; the command goes through :func:`public_command`.
    """
    commit = str(provenance.get("git_commit") or "unknown")
    note = str(provenance.get("git_commit_note") or "")
    if commit == "unknown":
        found = re.search(r"\b([0-9a-f]{40})\b", note)
        commit = found.group(1) if found else "unknown"
    if commit != "unknown":
        commit = commit[:10] + (" + uncommitted changes" if provenance.get("git_dirty") or "uncommitted" in note
                                else "")
    return {"device": str(provenance.get("device", "unknown")), "date": str(provenance.get("date", "unknown")),
            "torch": str(provenance.get("torch", "unknown")), "commit": commit,
            "command": public_command(str(provenance.get("command", "")))}


def is_gpu_device(name: str) -> bool:
    """True for an accelerator name; CPUs are written ``"<model> (N cores)"`` by ``provenance.device_name``."""
    return not re.search(r"\(\d+ cores?\)\s*$", name or "")


@dataclass(frozen=True)
class Chapter:
    """One chapter of the book, as the chapter map lists it."""

    number: int
    notebook: str  #: file name in book/ without extension
    part: str
    title: str
    builds: str  #: what the reader builds or does, in a few words
    module: str
    datasets: tuple[str, ...] = ()  #: training runs on these datasets belong to this chapter
    experiments: bool = False  #: experiment and benchmark results files belong to this chapter


# Titles say what each chapter is whatever is committed; the map adds what is recorded.
CHAPTERS: tuple[Chapter, ...] = (
    Chapter(1, "01_lstm", "Foundations", "LSTM",
            "an LSTM cell from its four gates, checked against `torch.nn.LSTM`", "sequencer_mini.models.lstm"),
    Chapter(2, "02_bilstm", "Foundations", "BiLSTM", "reading a sequence both ways", "sequencer_mini.models.lstm"),
    Chapter(3, "03_images_as_sequences", "Sequencer", "Images as sequences",
            "patch embedding and the vanilla (1-D) Sequencer block", "sequencer_mini.models.blocks"),
    Chapter(4, "04_bilstm2d", "Sequencer", "BiLSTM2D",
            "the vertical + horizontal layer, with timm's weight layout", "sequencer_mini.models.bilstm2d"),
    Chapter(5, "05_sequencer2d", "Sequencer", "Sequencer2D",
            "the full model, equal to timm's; parameters and FLOPs", "sequencer_mini.models.sequencer2d"),
    Chapter(6, "06_training_fmnist", "Training", "Fashion-MNIST on a CPU",
            "a Sequencer, a CNN and a ViT of the same size at equal images, and why they learn differently",
            "sequencer_mini.train",
            datasets=("fashion_mnist",)),
    Chapter(7, "07_cifar_gpu", "Training", "A CIFAR recipe for a GPU",
            "the CIFAR stem, the cost of an epoch, a recipe to run on Colab (code paths tested, no CIFAR run recorded)",
            "sequencer_mini.train.data",
            datasets=("cifar10", "cifar100")),
    Chapter(8, "08_imagenet_subset", "Training", "An ImageNet-subset recipe for a GPU",
            "evaluating and fine-tuning the authors' weights on Imagenette, a recipe to run on Colab "
            "(code paths tested)",
            "sequencer_mini.train.data", datasets=("imagenette", "tiny_imagenet")),
    Chapter(9, "09_receptive_fields", "Looking inside", "Receptive fields",
            "effective receptive fields of chapter 6's trained models, interactive", "sequencer_mini.analysis.erf"),
    Chapter(10, "10_findings", "Looking inside", "Findings",
            "what the paper claims and what we could check", "sequencer_mini.analysis.robustness", experiments=True),
)

_DATASET_NAMES = {"fashion_mnist": "Fashion-MNIST", "cifar10": "CIFAR-10", "cifar100": "CIFAR-100",
                  "imagenette": "Imagenette", "tiny_imagenet": "Tiny-ImageNet"}


@dataclass(frozen=True)
class RecordedRun:
    """One committed results file."""

    path: str  #: relative to the repository root, e.g. ``book/results/fmnist-cpu-small_cnn/results.json``
    chapter: int | None
    kind: str  #: "training" (has a dataset) or "experiment"
    dataset: str | None
    device: str
    gpu: bool


def _chapter_of(data: dict) -> int | None:
    if isinstance(data.get("chapter"), int):
        return data["chapter"]
    dataset = str(data.get("dataset") or "").split("-")[0]  # "imagenette-FIXTURE" is never committed
    for chapter in CHAPTERS:
        if dataset and dataset in chapter.datasets:
            return chapter.number
        if not dataset and chapter.experiments and ("experiment" in data or "benchmark" in data):
            return chapter.number
    return None


def recorded_runs(directory: str | Path | None = None) -> list[RecordedRun]:
    """Every results file under ``book/results`` (``*.json`` and ``*/results.json``) that carries provenance.

    Files without a ``provenance`` entry are skipped: they were not written by ``write_results``
    and the book does not cite them. So are training results that say ``"complete": false``: a run still in
    progress (its partial results file) or one that stopped early is not a recorded run.
    """
    root = Path(directory) if directory is not None else results_dir(missing_ok=True)
    if root is None or not root.is_dir():
        return []
    runs = []
    for path in sorted([*root.glob("*.json"), *root.glob("*/results.json")]):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        prov = data.get("provenance") if isinstance(data, dict) else None
        if not isinstance(prov, dict) or data.get("complete") is False:
            continue
        device = str(prov.get("device") or "unknown")
        rel = f"book/results/{path.relative_to(root).as_posix()}"
        runs.append(RecordedRun(rel, _chapter_of(data), "training" if data.get("dataset") else "experiment",
                                data.get("dataset"), device, is_gpu_device(device)))
    return runs


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _describe(runs: list[RecordedRun]) -> str:
    """E.g. "4 Fashion-MNIST runs on a CPU, 1 on a GPU (NVIDIA H200)"; "none committed"."""
    if not runs:
        return "none committed yet: a recipe you run"
    parts = []
    for kind, noun_one, noun_many in (("training", "run", "runs"), ("experiment", "results file", "results files")):
        of_kind = [r for r in runs if r.kind == kind]
        for gpu in (False, True):
            sel = [r for r in of_kind if r.gpu == gpu]
            if not sel:
                continue
            names = sorted({_DATASET_NAMES.get(r.dataset or "", r.dataset or "") for r in sel} - {""})
            where = "on a GPU (" + ", ".join(sorted({r.device for r in sel})) + ")" if gpu else "on a CPU"
            label = " ".join(filter(None, [", ".join(names), noun_one if len(sel) == 1 else noun_many]))
            parts.append(f"{len(sel)} {label} {where}")
    return "; ".join(parts)


def chapter_map(runs: list[RecordedRun] | None = None, readme: bool = False) -> str:
    """The chapter map as a markdown table: what each chapter builds, and the recorded runs it shows.

    Args:
        runs: default :func:`recorded_runs` of the repository.
        readme: name the notebooks (``book/NN_x.ipynb``) instead of the chapter titles only.
    """
    runs = recorded_runs() if runs is None else runs
    head = ("| part | notebook | chapter: what you build | recorded runs it shows |\n|---|---|---|---|" if readme
            else "| part | chapter | what you build | library module | recorded runs it shows |\n|---|---|---|---|---|")
    lines, last_part = [head], None
    for ch in CHAPTERS:
        part = ch.part if ch.part != last_part else ""
        last_part = ch.part
        mine = [r for r in runs if r.chapter == ch.number]
        shown = _describe(mine) if (ch.datasets or ch.experiments) else "computed on the page"
        if readme:
            lines.append(f"| {part} | `book/{ch.notebook}.ipynb` | {ch.number} · {ch.title}: {ch.builds} | {shown} |")
        else:
            lines.append(f"| {part} | {ch.number} · {ch.title} | {ch.builds} | `{ch.module}` | {shown} |")
    return "\n".join(lines)


def recorded_runs_text(runs: list[RecordedRun] | None = None) -> str:
    """One paragraph for the setup page: which runs that needed a GPU are committed, per chapter."""
    runs = recorded_runs() if runs is None else runs
    gpu = [r for r in runs if r.gpu]
    cpu = [r for r in runs if not r.gpu]
    text = [f"The repository holds {_count(len(runs), 'results file', 'results files')} under `book/results/`, "
            f"{len(cpu)} recorded on a CPU and {len(gpu)} on a GPU."]
    if gpu:
        by_chapter = sorted({r.chapter for r in gpu if r.chapter is not None})
        where = "; ".join(f"{_describe([r for r in gpu if r.chapter == c])}, for chapter {c}" for c in by_chapter)
        text.append(f"The GPU ones: {where}.")
    for ch in CHAPTERS:
        if ch.datasets and not any(r.chapter == ch.number for r in runs):
            names = " or ".join(_DATASET_NAMES.get(d, d) for d in ch.datasets)
            text.append(f"No {names} run is committed: chapter {ch.number} is a recipe that you run yourself on a GPU "
                        "(Colab included; its code paths are tested on format fixtures and at the gpu budget in dry "
                        "runs), and it shows a run once its results file is added.")
    return " ".join(text)
