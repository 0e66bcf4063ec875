"""Chapters 6, 9, 10: sequencer_mini.analysis.trained, the one loader of the race's models and its fallback policy,
and the book's one "recorded, else made here" rule (recorded_or_computed, train_here, recorded_or_trained) with
checkpoint folders that survive a Colab disconnect.

The race's real weights are not needed: each test writes a results folder in the layout that
``python -m sequencer_mini.train --recipe fmnist-race-<model> --keep-epochs`` writes (``results.json``,
``final.pt``, ``epochs/NNN.pt``) from a tiny random model, in ``tmp_path``.
"""

from __future__ import annotations

import json
import re
import sys
import types
from pathlib import Path

import pytest
import torch
from fixtures import make_idx_tree, single_thread  # noqa: F401 (fixture)

from sequencer_mini.analysis import trained
from sequencer_mini.core.provenance import write_results
from sequencer_mini.train.data import MEAN_STD, fashion_mnist_tensors

pytestmark = pytest.mark.usefixtures("single_thread")

ABSOLUTE = re.compile(r"(^|[\s'\"(=:])/[^\s]")  # a path that starts at the file system's root


def fake_run(root: Path, model: str = "small_cnn", seed: int = 0, epochs: int = 2, keep: tuple[int, ...] = (1,),
             model_config: dict | None = None) -> dict[int, dict]:
    """A recorded run of ``model`` under ``root``: one random model per epoch; ``keep`` epochs keep their file."""
    run = root / trained.run_name(model, seed)
    (run / "epochs").mkdir(parents=True)
    from sequencer_mini.train.recipes import build_model, model_args

    config = build_model(model, 1, 10, 28, **model_args(trained.RACE_MODELS[model]["model_arg"]))[1]
    states, history = {}, {"epoch": [], "test_acc": [], "val_acc": [], "images_seen": [], "img_size": []}
    for epoch in range(1, epochs + 1):
        states[epoch] = trained.build(model, seed=100 + epoch).state_dict()
        acc, seen = 0.8 + 0.05 * epoch + 0.0012, 60_000 * epoch
        weights = {"model": states[epoch], "epoch": epoch, "val_acc": None, "test_acc": acc, "images_seen": seen,
                   "model_config": model_config or config}
        if epoch in keep:
            torch.save(weights, run / "epochs" / f"{epoch:03d}.pt")
        if epoch == epochs:
            torch.save(weights, run / "final.pt")
        for key, value in (("epoch", epoch), ("test_acc", acc), ("val_acc", None), ("images_seen", seen),
                           ("img_size", 28)):
            history[key].append(value)
    (run / "results.json").write_text(json.dumps({
        "dataset": "fashion_mnist", "model": model, "model_config": config, "complete": True,
        "epochs_completed": epochs, "final_test_acc": history["test_acc"][-1], "n_test": 10_000,
        "images_seen": history["images_seen"][-1], "recipe": {"name": f"fmnist-race-{model}"}, "history": history}))
    return states


def same_weights(model: torch.nn.Module, state: dict) -> bool:
    return all(torch.equal(a, state[k]) for k, a in model.state_dict().items())


def test_a_recorded_run_loads_with_its_facts(tmp_path) -> None:
    states = fake_run(tmp_path / "results")
    tm = trained.load_trained("small_cnn", 0, results_dir=tmp_path / "results", fallback="error")
    assert tm.source == "recorded" and tm.label == "CNN" and tm.seed == 0 and not tm.model.training
    assert same_weights(tm.model, states[2])
    assert tm.weights == "results/fmnist-race-small_cnn-s0/final.pt"
    assert "epoch 2 of 2" in tm.note and "test accuracy 90.12% on 10,000 test images" in tm.note
    assert "120,000 images seen" in tm.note and not ABSOLUTE.search(tm.note), tm.note
    assert tm.describe()["train"]["final_test_acc"] == pytest.approx(0.9012)
    early = trained.load_trained("small_cnn", 0, checkpoint="epoch:1", results_dir=tmp_path / "results")
    assert early.source == "recorded" and same_weights(early.model, states[1]) and "85.12%" in early.note
    fresh = tm.untrained(seed=3)  # the same architecture, random weights
    assert not fresh.training and not same_weights(fresh, states[2])
    assert [p.shape for p in fresh.parameters()] == [p.shape for p in tm.model.parameters()]


def test_epoch_checkpoints_list_the_recorded_accuracies(tmp_path) -> None:
    fake_run(tmp_path / "results", epochs=3, keep=(1, 3))
    listed = trained.epoch_checkpoints("small_cnn", 0, results_dir=tmp_path / "results")
    assert [c.epoch for c in listed] == [1, 2, 3] and [c.exists for c in listed] == [True, False, True]
    assert [c.checkpoint for c in listed] == ["epoch:1", "epoch:2", "epoch:3"]
    assert [c.test_acc for c in listed] == pytest.approx([0.8512, 0.9012, 0.9512])
    assert listed[1].weights == "results/fmnist-race-small_cnn-s0/epochs/002.pt"
    with pytest.raises(FileNotFoundError, match="fmnist-race-small_vit-s0/results.json is missing"):
        trained.epoch_checkpoints("small_vit", 0, results_dir=tmp_path / "results")


def test_missing_weights_with_fallback_error_name_the_file_and_the_command(tmp_path) -> None:
    command = ("python -m sequencer_mini.train --recipe fmnist-race-small_vit --seed 1 --keep-epochs "
               "--out book/results/fmnist-race-small_vit-s1")
    with pytest.raises(FileNotFoundError) as err:
        trained.load_trained("small_vit", 1, results_dir=tmp_path / "results", fallback="error")
    assert "results/fmnist-race-small_vit-s1/final.pt is missing" in str(err.value) and command in str(err.value)
    assert not ABSOLUTE.search(str(err.value)), str(err.value)
    fake_run(tmp_path / "results", keep=(1,))  # epoch 2's file was not committed
    with pytest.raises(FileNotFoundError, match="epochs/002.pt is missing"):
        trained.load_trained("small_cnn", 0, checkpoint="epoch:2", results_dir=tmp_path / "results", fallback="error")


def test_bad_arguments_say_what_was_expected(tmp_path) -> None:
    with pytest.raises(ValueError, match="unknown race model 'sequencer2d_s'; expected one of"):
        trained.load_trained("sequencer2d_s", results_dir=tmp_path)
    with pytest.raises(ValueError, match="'final' or 'epoch:N'"):
        trained.load_trained("small_cnn", checkpoint="best", results_dir=tmp_path)
    with pytest.raises(ValueError, match="fallback must be 'train' or 'error'"):
        trained.load_trained("small_cnn", fallback="maybe", results_dir=tmp_path)
    fake_run(tmp_path / "results", model_config={"name": "small_cnn", "img_size": 32})
    with pytest.raises(ValueError, match="the recipe changed since the run"):
        trained.load_trained("small_cnn", results_dir=tmp_path / "results")


def test_the_fallback_at_ci_trains_the_recipe_and_says_so(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SEQUENCER_BUDGET", "ci")
    monkeypatch.setenv("SEQUENCER_QUIET", "1")
    monkeypatch.setattr(trained, "CI_IMAGES", 32)  # the policy, on fewer images: seconds
    logs: list[str] = []
    kwargs = dict(results_dir=tmp_path / "results", fallback_dir=tmp_path / "fallback", log=logs.append)
    tm = trained.load_trained("small_vit", 0, **kwargs)
    assert tm.source == "fallback" and not tm.model.training and len(logs) == 1
    assert tm.note.startswith("ViT (small_vit, seed 0): FALLBACK, results/fmnist-race-small_vit-s0/final.pt is missing")
    assert "shortened to the ci budget (1 epoch on 32 images, float32)" in tm.note and "NOT the recorded" in tm.note
    assert trained.remake_command("small_vit", 0) in tm.note
    run = tmp_path / "fallback" / "ci" / "fmnist-race-small_vit-s0"
    assert (run / "final.pt").is_file() and (run / "epochs" / "001.pt").is_file()
    assert tm.results["recipe"]["name"] == "fmnist-race-small_vit" and tm.results["budget"] == "ci"
    assert tm.results["model_config"]["depth"] == 6  # the race's ViT, not the preset's default depth
    shown = json.dumps(tm.describe())
    assert str(tmp_path) not in shown and not ABSOLUTE.search(tm.note), tm.note
    assert "--out ci/fmnist-race-small_vit-s0" in tm.describe()["train"]["provenance_command"]
    again = trained.load_trained("small_vit", 0, checkpoint="epoch:4", **kwargs)  # reused, not retrained
    assert len(logs) == 1 and same_weights(again.model, tm.model.state_dict())
    assert "(epoch 4 was asked for; the fallback has 1)" in again.note


def test_fashion_mnist_tensors_first_or_seeded_subset(tmp_path) -> None:
    make_idx_tree(tmp_path, n_train=30, n_test=20)
    first, labels = fashion_mnist_tensors("test", 5, root=tmp_path)
    raw, _ = fashion_mnist_tensors("test", None, normalise=False, root=tmp_path)
    (mean,), (std,) = MEAN_STD["fashion_mnist"]
    assert first.shape == (5, 1, 28, 28) and labels.tolist() == [0, 1, 2, 3, 4]
    torch.testing.assert_close(first, (raw[:5] - mean) / std)
    assert float(raw.min()) >= 0 and float(raw.max()) <= 1 and len(raw) == 20
    a, la = fashion_mnist_tensors("test", 6, normalise=False, seed=0, root=tmp_path)
    b, _ = fashion_mnist_tensors("test", 6, normalise=False, seed=0, root=tmp_path)
    assert torch.equal(a, b) and not torch.equal(la, torch.arange(6))  # the same random subset for the same seed


# ------------------------------------------------------------------------- recorded, else made here (was runs.py)


@pytest.fixture
def no_drive(monkeypatch, tmp_path):
    """No $SEQUENCER_CHECKPOINTS, no Drive, Colab's local disk and the cache in tmp_path, not a dry run."""
    for name in (trained.CHECKPOINTS_VAR, "SEQUENCER_DRY_RUN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(trained, "DRIVE", tmp_path / "drive" / "MyDrive")
    monkeypatch.setattr(trained, "COLAB_LOCAL", tmp_path / "content" / "sequencer_mini_runs")
    monkeypatch.setenv("SEQUENCER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(trained, "_warned", set())
    return tmp_path


def test_checkpoint_dir_locations(no_drive, monkeypatch, capsys):
    tmp = no_drive
    assert trained.checkpoint_dir("a") == tmp / "cache" / "runs" / "a"  # off Colab: the local cache
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    assert trained.checkpoint_dir("b") == tmp / "content" / "sequencer_mini_runs" / "b"
    message = capsys.readouterr().out
    assert "Google Drive is NOT mounted" in message and "drive.mount('/content/drive')" in message
    (tmp / "drive" / "MyDrive").mkdir(parents=True)  # Drive mounted
    assert trained.checkpoint_dir("b") == tmp / "drive" / "MyDrive" / "sequencer_mini" / "b"
    assert capsys.readouterr().out == ""
    monkeypatch.setenv("SEQUENCER_DRY_RUN", "1")
    assert trained.checkpoint_dir("b") == tmp / "drive" / "MyDrive" / "sequencer_mini" / "dry-run" / "b"
    monkeypatch.setenv(trained.CHECKPOINTS_VAR, str(tmp / "mine"))
    assert trained.checkpoint_dir("c").is_dir() and trained.checkpoint_dir("c") == tmp / "mine" / "dry-run" / "c"
    for bad in ("", "a/b", "..", "/abs"):
        with pytest.raises(ValueError, match="single folder name"):
            trained.checkpoint_dir(bad)


def test_recorded_run_is_read_not_trained(no_drive, monkeypatch):
    monkeypatch.setenv("SEQUENCER_BUDGET", "cpu")
    recorded = write_results(no_drive / "rec" / "results.json", {"complete": True, "best_test_acc": 0.9})
    run = trained.recorded_or_trained(recorded, "cmd", [], "x", train=lambda argv: pytest.fail("trained"))
    assert run["origin"].startswith("recorded by `cmd` on ") and run["origin"].endswith(", budget cpu")
    assert run["best_test_acc"] == 0.9 and not (no_drive / "cache" / "runs" / "x").exists()  # read, not made


ARGS = ["--dataset", "fashion_mnist", "--model", "sequencer2d_mini28", "--limit-train", "64", "--limit-test", "32",
        "--batch-size", "32", "--epochs", "2", "--aug", "none", "--threads", "1"]


def test_interrupted_run_resumes_on_rerun(no_drive, monkeypatch, capsys):
    """A disconnect after epoch 1 (--stop-after 1), then the same cell again: it resumes and ends equal to an
    uninterrupted run; a third call finds the finished run and does not train."""
    from sequencer_mini.train.cli import main as train_main

    monkeypatch.setenv("SEQUENCER_BUDGET", "cpu")
    monkeypatch.setenv("SEQUENCER_QUIET", "1")
    monkeypatch.setenv(trained.CHECKPOINTS_VAR, str(no_drive / "ckpt"))
    missing = no_drive / "not-recorded" / "results.json"
    folder = no_drive / "ckpt" / "fm"
    calls: list[list[str]] = []

    def train(argv):
        calls.append(argv)
        return train_main(argv)

    first = trained.recorded_or_trained(missing, "python -m ...", [*ARGS, "--stop-after", "1"], "fm", train)
    assert "is missing" in capsys.readouterr().out
    assert calls[0][calls[0].index("--out") + 1] == str(folder) and (folder / "last.pt").is_file()
    assert not first["complete"] and first["epochs_completed"] == 1 and "NOT complete" in first["origin"]
    second = trained.recorded_or_trained(missing, "python -m ...", [*ARGS, "--stop-after", "1"], "fm", train)
    assert second["origin"].startswith("resumed here") and second["complete"] and second["epochs_completed"] == 2
    assert second["history"]["train_loss"][0] == first["history"]["train_loss"][0]  # epoch 1 kept, not redone
    third = trained.recorded_or_trained(missing, "python -m ...", ARGS, "fm", train)
    assert len(calls) == 2 and third["origin"].startswith("trained here earlier")
    assert {**third, "origin": None} == {**second, "origin": None}  # the same run, read back
    assert str(no_drive) not in third["provenance"]["command"]  # shown without this machine's folders

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
        run = trained.recorded_or_trained(recorded, "cmd", [], "x", train=fake_train)
        assert run["origin"] == "trained here (ci budget)"
    assert len(set(seen)) == 2  # a new temporary folder each time: nothing is resumed at ci


def test_recorded_or_computed_reads_the_file_or_says_what_it_computed(no_drive, monkeypatch, capsys):
    """Chapter 10's shape: a results file at the cpu and gpu budgets, a small computation at ci or when missing."""
    recorded = write_results(no_drive / "findings-x.json", {"experiment": "x", "value": 1, "complete": False})
    tiny = lambda: {"value": 2}  # noqa: E731
    monkeypatch.setenv("SEQUENCER_BUDGET", "cpu")
    data = trained.recorded_or_computed(recorded, "python bench/x.py", tiny)
    assert data["value"] == 1 and data["origin"].startswith("recorded by `python bench/x.py` on ")
    assert "INCOMPLETE" in data["origin"]  # an interrupted run says so
    data = trained.recorded_or_computed(no_drive / "nothing.json", "python bench/x.py", tiny)
    assert data == {"value": 2, "origin": "computed in this run at the cpu budget (not the recorded results)"}
    assert "nothing.json is missing; it is made by: python bench/x.py" in capsys.readouterr().out
    monkeypatch.setenv("SEQUENCER_BUDGET", "ci")
    assert trained.recorded_or_computed(recorded, "python bench/x.py", tiny)["value"] == 2  # ci tests the code
    assert trained.recorded_or_computed(recorded, "c", tiny, recorded_at_ci=True)["value"] == 1
    assert capsys.readouterr().out == ""  # nothing reported missing at ci
