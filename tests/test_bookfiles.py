"""sequencer_mini.book.bookfiles (what the book says exists) and sequencer_mini.book.diagrams."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

from sequencer_mini.book.bookfiles import (  # noqa: E402
    RecordedRun,
    chapter_map,
    is_gpu_device,
    public_command,
    public_provenance,
    recorded_runs,
    recorded_runs_text,
)

def _write(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload))


def test_is_gpu_device():
    assert not is_gpu_device("AMD EPYC (2 cores)")
    assert not is_gpu_device("Apple M2 (8 cores)")
    assert is_gpu_device("NVIDIA H200")
    assert is_gpu_device("Tesla T4")


def test_recorded_runs_are_found_and_assigned_to_chapters(tmp_path):
    cpu = {"device": "Intel Xeon (2 cores)", "command": "x"}
    gpu = {"device": "NVIDIA T4", "command": "x"}
    _write(tmp_path / "fmnist-cpu-a" / "results.json", {"dataset": "fashion_mnist", "provenance": cpu})
    _write(tmp_path / "cifar10-gpu-b" / "results.json", {"dataset": "cifar10", "provenance": gpu})
    _write(tmp_path / "findings-x.json", {"experiment": "x", "provenance": cpu})
    _write(tmp_path / "no-provenance" / "results.json", {"dataset": "cifar10"})  # not cited: skipped
    _write(tmp_path / "fmnist-running" / "results.json",  # a run in progress: not a recorded run yet
           {"dataset": "fashion_mnist", "complete": False, "provenance": cpu})
    _write(tmp_path / "own-chapter.json", {"benchmark": "y", "chapter": 9, "provenance": cpu})
    runs = {r.path.split("/")[2]: r for r in recorded_runs(tmp_path)}
    assert set(runs) == {"fmnist-cpu-a", "cifar10-gpu-b", "findings-x.json", "own-chapter.json"}
    assert runs["fmnist-cpu-a"].chapter == 6 and not runs["fmnist-cpu-a"].gpu
    assert runs["cifar10-gpu-b"].chapter == 7 and runs["cifar10-gpu-b"].gpu
    assert runs["findings-x.json"].chapter == 10 and runs["findings-x.json"].kind == "experiment"
    assert runs["own-chapter.json"].chapter == 9
    assert recorded_runs(tmp_path / "missing") == []


def test_chapter_map_and_setup_text_claim_only_what_exists():
    none = chapter_map([])
    assert none.count("none committed yet") == 4  # chapters 6, 7, 8 and 10 show recorded files
    assert "GPU" not in none.split("recorded runs it shows")[1].replace("for a GPU", "")
    run = RecordedRun("book/results/cifar10-gpu-b/results.json", 7, "training", "cifar10", "NVIDIA T4", True)
    with_run = chapter_map([run])
    row7 = next(line for line in with_run.splitlines() if "7 · " in line)
    assert "1 CIFAR-10 run on a GPU (NVIDIA T4)" in row7
    assert "No CIFAR-10 or CIFAR-100 run is committed" in recorded_runs_text([])
    text = recorded_runs_text([run])
    assert "No CIFAR" not in text and "1 CIFAR-10 run on a GPU (NVIDIA T4), for chapter 7" in text
    readme = chapter_map([run], readme=True)
    assert "`book/07_cifar_gpu.ipynb`" in readme


def test_public_command_and_provenance_hide_machine_folders():
    cmd = "python3 /srv/x/checkout/sequencer_mini/train/cli.py --epochs 6 --out /root/out/fmnist"
    assert public_command(cmd) == "python3 sequencer_mini/train/cli.py --epochs 6 --out <dir>/fmnist"
    prov = {"device": "NVIDIA H200", "date": "d", "torch": "2", "git_commit": "unknown", "command": cmd,
            "git_commit_note": "copy had no .git; sent from commit " + "a" * 40 + " plus uncommitted work"}
    shown = public_provenance(prov)
    assert shown["commit"] == "a" * 10 + " + uncommitted changes"
    assert "/root" not in json.dumps(shown) and ".git" not in json.dumps(shown)


def test_diagrams_draw_the_configuration():
    import matplotlib.pyplot as plt

    from sequencer_mini import Sequencer2DConfig
    from sequencer_mini.book.diagrams import lstm_cell_figure, sequencer2d_figure

    def texts(fig):  # a box's lines joined by spaces, as a reader reads them
        return " ".join(t.get_text().replace("\n", " ") for ax in fig.axes for t in ax.texts)

    fig = sequencer2d_figure()
    shown = texts(fig)
    for part in ("stage 0", "stage 3", "8 × block", "32×32 C=192, D=48", "C=384, D=96", "concatenate", "FC (linear)",
                 "vertical BiLSTM", "horizontal BiLSTM", "linear → 1000"):
        assert part in shown, part
    small = texts(sequencer2d_figure(Sequencer2DConfig(layers=(2, 4), patch_sizes=(2, 2), embed_dims=(64, 128),
                                                       hidden_sizes=(16, 32), mlp_ratios=(3.0, 3.0), num_classes=10),
                                     img_size=32))
    assert "16×16 C=64" in small and "8×8 C=128" in small and "stage 1" in small and "stage 2" not in small
    assert "stage 4" not in shown  # stages are numbered from 0, like the modules (stages.0 ...) and the prose
    cell = texts(lstm_cell_figure())
    for gate in ("f: forget", "i: input", "g: candidate", "o: output"):
        assert gate in cell
    plt.close("all")
