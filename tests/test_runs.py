"""sequencer_mini.analysis.runs: checkpoint folders that survive a Colab disconnect, and the resume path of the
notebook helper ``recorded_or_trained`` (chapters 6-8)."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from sequencer_mini.analysis import runs
from sequencer_mini.core.provenance import write_results


@pytest.fixture
def no_drive(monkeypatch, tmp_path):
    """No $SEQUENCER_CHECKPOINTS, no Drive, Colab's local disk and the cache in tmp_path, not a dry run."""
    for name in (runs.CHECKPOINTS_VAR, "SEQUENCER_DRY_RUN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(runs, "DRIVE", tmp_path / "drive" / "MyDrive")
    monkeypatch.setattr(runs, "COLAB_LOCAL", tmp_path / "content" / "sequencer_mini_runs")
    monkeypatch.setenv("SEQUENCER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(runs, "_warned", set())
    return tmp_path


def test_checkpoint_dir_locations(no_drive, monkeypatch, capsys):
    tmp = no_drive
    assert runs.checkpoint_dir("a") == tmp / "cache" / "runs" / "a"  # off Colab: the local cache
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    assert runs.checkpoint_dir("b") == tmp / "content" / "sequencer_mini_runs" / "b"
    message = capsys.readouterr().out
    assert "Google Drive is NOT mounted" in message and "drive.mount('/content/drive')" in message
    (tmp / "drive" / "MyDrive").mkdir(parents=True)  # Drive mounted
    assert runs.checkpoint_dir("b") == tmp / "drive" / "MyDrive" / "sequencer_mini" / "b"
    assert capsys.readouterr().out == ""
    monkeypatch.setenv("SEQUENCER_DRY_RUN", "1")
    assert runs.checkpoint_dir("b") == tmp / "drive" / "MyDrive" / "sequencer_mini" / "dry-run" / "b"
    monkeypatch.setenv(runs.CHECKPOINTS_VAR, str(tmp / "mine"))
    assert runs.checkpoint_dir("c").is_dir() and runs.checkpoint_dir("c") == tmp / "mine" / "dry-run" / "c"
    for bad in ("", "a/b", "..", "/abs"):
        with pytest.raises(ValueError, match="single folder name"):
            runs.checkpoint_dir(bad)


def test_recorded_run_is_read_not_trained(no_drive, monkeypatch):
    monkeypatch.setenv("SEQUENCER_BUDGET", "cpu")
    recorded = write_results(no_drive / "rec" / "results.json", {"complete": True, "best_test_acc": 0.9})
    run, source, folder = runs.recorded_or_trained(recorded, "cmd", [], "x", train=lambda argv: pytest.fail("trained"))
    assert source == "recorded run" and folder == recorded.parent and run["best_test_acc"] == 0.9


ARGS = ["--dataset", "fashion_mnist", "--model", "sequencer2d_mini28", "--limit-train", "64", "--limit-test", "32",
        "--batch-size", "32", "--epochs", "2", "--aug", "none", "--threads", "1"]


def test_interrupted_run_resumes_on_rerun(no_drive, monkeypatch, capsys):
    """A disconnect after epoch 1 (--stop-after 1), then the same cell again: it resumes and ends equal to an
    uninterrupted run; a third call finds the finished run and does not train."""
    from sequencer_mini.train.cli import main as train_main

    monkeypatch.setenv("SEQUENCER_BUDGET", "cpu")
    monkeypatch.setenv("SEQUENCER_QUIET", "1")
    monkeypatch.setenv(runs.CHECKPOINTS_VAR, str(no_drive / "ckpt"))
    missing = no_drive / "not-recorded" / "results.json"
    calls: list[list[str]] = []

    def train(argv):
        calls.append(argv)
        return train_main(argv)

    first, source, folder = runs.recorded_or_trained(missing, "python -m ...", [*ARGS, "--stop-after", "1"], "fm",
                                                     train)
    assert "is missing" in capsys.readouterr().out
    assert folder == no_drive / "ckpt" / "fm" and (folder / "last.pt").is_file()
    assert not first["complete"] and first["epochs_completed"] == 1 and "NOT complete" in source
    second, source, _ = runs.recorded_or_trained(missing, "python -m ...", [*ARGS, "--stop-after", "1"], "fm", train)
    assert source.startswith("resumed here") and second["complete"] and second["epochs_completed"] == 2
    assert second["history"]["train_loss"][0] == first["history"]["train_loss"][0]  # epoch 1 kept, not redone
    third, source, _ = runs.recorded_or_trained(missing, "python -m ...", ARGS, "fm", train)
    assert len(calls) == 2 and source.startswith("trained here earlier") and third == second

    straight = train_main([*ARGS, "--budget", "cpu", "--out", str(no_drive / "straight")])
    timing = {"images_per_s", "epoch_time_s"}
    assert {k: v for k, v in straight["history"].items() if k not in timing} == \
        {k: v for k, v in second["history"].items() if k not in timing}


def test_ci_budget_always_trains_in_a_fresh_folder(no_drive, monkeypatch):
    monkeypatch.setenv("SEQUENCER_BUDGET", "ci")
    seen = []

    def fake_train(argv):
        out = Path(argv[argv.index("--out") + 1])
        seen.append(out)
        write_results(out / "results.json", {"complete": True, "budget": "ci"})

    recorded = write_results(no_drive / "rec" / "results.json", {"complete": True})
    for _ in range(2):
        run, source, folder = runs.recorded_or_trained(recorded, "cmd", [], "x", train=fake_train)
        assert source == "trained here (ci budget)"
    assert len(set(seen)) == 2  # a new temporary folder each time: nothing is resumed at ci
