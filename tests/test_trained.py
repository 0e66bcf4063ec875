"""Chapters 6, 9, 10: sequencer_mini.analysis.trained, the one loader of the race's models and its fallback policy,
and the book's one "recorded, else made here" rule (recorded_or_computed, train_here, recorded_or_trained) with
checkpoint folders that survive a Colab disconnect.

The race's real weights are not needed: each test writes a results folder in the layout that the race
(``sequencer_mini.train.protocol.race_run``) writes (``results.json``, ``final.pt``) from tiny random models, in
``tmp_path``. The folder names come from
the committed ``book/results/fmnist-tune/choice.json``.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
import types
from pathlib import Path

import pytest
import torch
from fixtures import make_idx_tree, single_thread  # noqa: F401 (fixture)

from sequencer_mini.analysis import trained
from sequencer_mini.core.provenance import write_results
from sequencer_mini.train import protocol
from sequencer_mini.train.data import MEAN_STD, fashion_mnist_tensors

pytestmark = pytest.mark.usefixtures("single_thread")

ABSOLUTE = re.compile(r"(^|[\s'\"(=:])/[^\s]")  # a path that starts at the file system's root
CHOSEN = protocol.read_json(trained.paths.REPO_ROOT / protocol.TUNE_DIR / "choice.json")["chosen_lr"]


def fake_run(root: Path, model: str = "small_cnn", seed: int = 0, epochs: int = 2, model_config: dict | None = None,
             complete: bool = True, probes: bool = True) -> dict[int, dict]:
    """A recorded run of ``model`` under ``root``: one random model per epoch, the last as ``final.pt`` (with the
    first race runs' ``ema_probes`` when ``probes``)."""
    run = root / trained.run_name(model, seed)
    run.mkdir(parents=True)
    from sequencer_mini.train.recipes import build_model, model_args

    config = build_model(model, 1, 10, 28, **model_args(trained.RACE_MODELS[model]["model_arg"]))[1]
    states, history = {}, {"epoch": [], "test_acc": [], "val_acc": [], "images_seen": [], "img_size": []}
    for epoch in range(1, epochs + 1):
        states[epoch] = trained.build(model, seed=100 + epoch).state_dict()
        acc, seen = 0.8 + 0.05 * epoch + 0.0012, 60_000 * epoch
        weights = {"model": states[epoch], "epoch": epoch, "val_acc": None, "test_acc": acc, "images_seen": seen,
                   "model_config": model_config or config}
        if epoch == epochs:
            probe = {"0.99": {k: v + 1 for k, v in states[epoch].items()}} if probes else None
            torch.save({**weights, "ema_probes": probe} if probes else weights, run / "final.pt")
        for key, value in (("epoch", epoch), ("test_acc", acc), ("val_acc", None), ("images_seen", seen),
                           ("img_size", 28)):
            history[key].append(value)
    (run / "results.json").write_text(json.dumps({
        "dataset": "fashion_mnist", "model": model, "model_config": config, "complete": complete,
        "epochs_completed": epochs, "final_test_acc": history["test_acc"][-1], "n_test": 10_000,
        "images_seen": history["images_seen"][-1], "train_time_s": 613.0, "wall_time_s": 680.9,
        "recipe": {"epochs": epochs, "lr": 0.004},
        "history": history}))
    return states


def same_weights(model: torch.nn.Module, state: dict) -> bool:
    return all(torch.equal(a, state[k]) for k, a in model.state_dict().items())


def test_the_race_is_the_protocols() -> None:
    """One source of truth: folder and command are protocol.race_run's at the rate choice.json chose."""
    for model in trained.LABELS:
        for seed in protocol.RACE_SEEDS:
            run = protocol.race_run(model, CHOSEN[model], seed)
            assert f"book/results/{trained.run_name(model, seed)}" == run.out
            words = run.command(4)
            at = words.index("--threads")
            assert shlex.split(trained.remake_command(model, seed)) == words[:at] + words[at + 2:]
    assert trained.run_name("small_vit", 1) == "fmnist-race240k-small_vit-s1"
    command = trained.remake_command("small_vit", 1)
    assert "--threads" not in command and f"--lr {CHOSEN['small_vit']:g} " in command, command
    assert command.endswith("--seed 1 --resume --out book/results/fmnist-race240k-small_vit-s1"), command


def test_a_recorded_run_loads_with_its_facts(tmp_path) -> None:
    for probes, model in ((True, "small_cnn"), (False, "small_vit")):  # final.pt with and without ema_probes
        states = fake_run(tmp_path / "results", model=model, probes=probes)
        tm = trained.load_trained(model, 0, results_dir=tmp_path / "results", fallback="error")
        assert tm.source == "recorded" and tm.seed == 0 and not tm.model.training
        assert same_weights(tm.model, states[2])  # the raw weights, not a probe's
    assert tm.label == "ViT" and tm.weights == "results/fmnist-race240k-small_vit-s0/final.pt"
    assert "epoch 2 of 2" in tm.note and "test accuracy 90.12% on 10,000 test images" in tm.note
    assert "120,000 images seen, 613 s in training steps" in tm.note and not ABSOLUTE.search(tm.note), tm.note
    described = tm.describe()["train"]
    assert described["final_test_acc"] == pytest.approx(0.9012) and described["train_time_s"] == 613.0
    assert described["recipe_lr"] == 0.004 and "recipe_name" not in described
    fresh = tm.untrained(seed=3)  # the same architecture, random weights
    assert not fresh.training and not same_weights(fresh, states[2])
    assert [p.shape for p in fresh.parameters()] == [p.shape for p in tm.model.parameters()]


def test_read_weights_returns_the_file_as_it_is(tmp_path) -> None:
    fake_run(tmp_path / "results")
    final = tmp_path / "results" / trained.run_name("small_cnn", 0) / "final.pt"
    info = trained.read_weights(final)
    assert info["epoch"] == 2 and set(info["ema_probes"]) == {"0.99"} and "model" in info
    assert trained.load_weights(final).keys() == info["model"].keys()
    with pytest.raises(FileNotFoundError):
        trained.read_weights(tmp_path / "nothing.pt")


def test_race_seeds_are_the_finished_ones_topped_up(tmp_path) -> None:
    root = tmp_path / "results"
    assert trained.race_seeds("small_cnn", results_dir=root) == ((0,), ())  # nothing finished: seed 0, a fallback
    fake_run(root, seed=1)
    fake_run(root, seed=2, complete=False)  # still running: not finished
    assert trained.race_seeds("small_cnn", results_dir=root) == ((1,), (1,))
    assert trained.race_seeds("small_cnn", at_least=2, results_dir=root) == ((0, 1), (1,))
    fake_run(root, seed=0)
    (root / trained.run_name("small_cnn", 0) / "final.pt").unlink()  # results without weights: not usable
    assert trained.race_seeds("small_cnn", at_least=1, results_dir=root) == ((1,), (1,))
    fake_run(root / "all", seed=0), fake_run(root / "all", seed=1), fake_run(root / "all", seed=2)
    assert trained.race_seeds("small_cnn", at_least=2, results_dir=root / "all") == ((0, 1, 2), (0, 1, 2))
    assert trained.race_seeds("small_cnn", at_least=2, at_most=2, results_dir=root / "all") == ((0, 1), (0, 1))
    for bad in (dict(at_least=0), dict(at_least=4), dict(at_least=True), dict(at_least=2, at_most=1)):
        with pytest.raises(ValueError, match="must be"):
            trained.race_seeds("small_cnn", results_dir=root, **bad)
    with pytest.raises(ValueError, match="unknown race model 'resnet'"):
        trained.race_seeds("resnet", results_dir=root)


def test_a_bad_choice_file_is_refused_with_the_file_and_what_to_do(tmp_path, monkeypatch) -> None:
    choice = tmp_path / "choice.json"
    monkeypatch.setattr(trained, "_choice_file", lambda: choice)
    with pytest.raises(FileNotFoundError, match=r"choice.json is missing: the learning rate .*python bench/exp"):
        trained.run_name("small_cnn", 0)
    for text, message in (('{"chosen_lr": {"small_cnn": -1, "small_vit": 0.002, "sequencer2d_fast28": 0.004}}',
                           r"none for \['small_cnn'\]; restore it"),
                          ('{"chosen_lr": [0.002]}', r"none for \['sequencer2d_fast28', 'small_cnn', 'small_vit'\]"),
                          ('{"chosen_lr": {"small_cnn": 0.008, "small_vit": 0.002, "sequencer2d_fast28": 0.004}, '
                           '"ema": "0.998"}', r"chose EMA '0.998', but the race's final.pt holds the raw weights")):
        choice.write_text(text)
        with pytest.raises(ValueError, match=message):
            trained.load_trained("small_cnn", 0, results_dir=tmp_path, fallback="error")


def test_missing_weights_with_fallback_error_name_the_file_and_the_command(tmp_path) -> None:
    with pytest.raises(FileNotFoundError) as err:
        trained.load_trained("small_vit", 1, results_dir=tmp_path / "results", fallback="error")
    assert "results/fmnist-race240k-small_vit-s1/final.pt is missing" in str(err.value)
    assert trained.remake_command("small_vit", 1) in str(err.value)
    assert not ABSOLUTE.search(str(err.value)), str(err.value)


def test_bad_arguments_say_what_was_expected(tmp_path) -> None:
    with pytest.raises(ValueError, match="unknown race model 'sequencer2d_s'; expected one of"):
        trained.load_trained("sequencer2d_s", results_dir=tmp_path)
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
    assert tm.note.startswith("ViT (small_vit, seed 0): FALLBACK, results/fmnist-race240k-small_vit-s0/final.pt is "
                              "missing"), tm.note
    assert "shortened to the ci budget (1 pass over 32 images, float32)" in tm.note and "NOT the recorded" in tm.note
    assert trained.remake_command("small_vit", 0) in tm.note
    run = tmp_path / "fallback" / "ci" / "fmnist-race240k-small_vit-s0"
    assert (run / "final.pt").is_file() and not (run / "snapshots").exists()
    assert tm.results["budget"] == "ci" and tm.results["recipe"]["lr"] == CHOSEN["small_vit"]
    assert tm.results["model_config"]["depth"] == 6  # the race's ViT, not the preset's default depth
    shown = json.dumps(tm.describe())
    assert str(tmp_path) not in shown and not ABSOLUTE.search(tm.note), tm.note
    command = tm.describe()["train"]["provenance_command"]
    assert "--out ci/fmnist-race240k-small_vit-s0" in command and "--smoothing 0.1" in command, command
    assert "--ema-probe" not in command and "--snapshots" not in command and "--warmup-epochs 0.125" in command
    again = trained.load_trained("small_vit", 0, **kwargs)  # reused, not retrained
    assert len(logs) == 1 and same_weights(again.model, tm.model.state_dict())


def test_the_fallback_at_cpu_is_the_protocols_recipe(monkeypatch) -> None:
    monkeypatch.setenv("SEQUENCER_BUDGET", "cpu")
    argv = trained._fallback_argv("sequencer2d_fast28", 2, "cpu")
    flags = list(protocol.race_run("sequencer2d_fast28", CHOSEN["sequencer2d_fast28"], 2).flags)
    at = flags.index("--budget")  # train_here gives the budget
    assert argv == [*flags[:at], *flags[at + 2:], "--device", "cpu"]


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
