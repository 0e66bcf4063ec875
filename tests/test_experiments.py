"""Chapter 6's controlled experiments: watching EMAs, quarter-pass snapshots, the bracketing search, and remake
commands that run from the repository root."""
from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fixtures import load_script, single_thread  # noqa: F401 (fixture)

from sequencer_mini.models.sequencer2d import create_model
from sequencer_mini.train.cli import remake_command
from sequencer_mini.train.data import AugmentConfig, TensorImageDataset, TensorLoader, dataset_info
from sequencer_mini.train.loop import TrainConfig, fit

REPO = Path(__file__).resolve().parents[1]
TINY = dict(layers=(1, 1), embed_dims=(16, 32), hidden_sizes=(4, 8))

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.setenv("SEQUENCER_QUIET", "1")


def _loaders(n: int = 64):
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % 10
    images = (torch.rand(n, 1, 28, 28, generator=g) * 60 + labels.view(-1, 1, 1, 1) * 19).to(torch.uint8)
    ds = TensorImageDataset(images, labels, dataset_info("fashion_mnist"))
    train = TensorLoader(ds, 16, shuffle=True, aug=AugmentConfig.preset("light"), seed=0)
    return train, TensorLoader(ds.subset(32), 32)


def _fit(out: Path, **kw):
    torch.manual_seed(0)
    model = create_model("sequencer2d_mini28", **TINY)
    cfg = TrainConfig(epochs=2, lr=3e-3, warmup_epochs=0.5, device="cpu", out_dir=str(out), ema_probes=(0.9, 0.99),
                      snapshots_per_epoch=2, model_config={"name": "tiny", **TINY}, **kw)
    train, test = _loaders()
    return model, fit(model, train, test, cfg)


def test_probes_watch_without_changing_training_and_snapshots_name_images(tmp_path):
    torch.manual_seed(0)
    plain = create_model("sequencer2d_mini28", **TINY)
    train, test = _loaders()
    h_plain = fit(plain, train, test, TrainConfig(epochs=2, lr=3e-3, warmup_epochs=0.5, device="cpu"))
    watched, h = _fit(tmp_path / "a")
    # the probes only watch: the reported model and its history are those of the run without them
    assert h["test_acc"] == h_plain["test_acc"]
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), watched.state_dict().values(),
                                                 strict=True))
    assert h["probe_test_acc"][0] is None and sorted(h["probe_test_acc"][1]) == ["0.9", "0.99"]  # at the end
    snaps = sorted(p.name for p in (tmp_path / "a" / "snapshots").iterdir())
    assert snaps == ["0000032.pt", "0000064.pt", "0000096.pt", "0000128.pt"]  # 64 images a pass, 2 per pass
    last = torch.load(tmp_path / "a" / "snapshots" / "0000128.pt", weights_only=True)
    final = torch.load(tmp_path / "a" / "final.pt", weights_only=True)
    assert last["images_seen"] == 128 and last["epoch"] == 2.0
    for key in ("model",):
        assert all(torch.equal(last[key][k], final[key][k]) for k in final[key])
    assert all(torch.equal(last["ema_probes"]["0.99"][k], final["ema_probes"]["0.99"][k]) for k in final["model"])


def test_probes_and_snapshots_resume_bitwise(tmp_path):
    _, h_straight = _fit(tmp_path / "a")
    _fit(tmp_path / "b", stop_after=1)
    _, h_resumed = _fit(tmp_path / "b", resume=True)
    assert h_resumed["probe_test_acc"] == h_straight["probe_test_acc"]
    for name in ("0000064.pt", "0000128.pt"):
        a = torch.load(tmp_path / "a" / "snapshots" / name, weights_only=True)
        b = torch.load(tmp_path / "b" / "snapshots" / name, weights_only=True)
        for part in ("model", "ema_probes"):
            flat_a = a[part] if part == "model" else a[part]["0.9"]
            flat_b = b[part] if part == "model" else b[part]["0.9"]
            assert all(torch.equal(flat_a[k], flat_b[k]) for k in flat_a), (name, part)


def test_train_config_refuses_bad_probes_and_snapshots():
    with pytest.raises(ValueError, match="ema_probes"):
        TrainConfig(ema_probes=(0.9, 0.9))
    with pytest.raises(ValueError, match="ema_probes"):
        TrainConfig(ema_probes=(1.5,))
    with pytest.raises(ValueError, match="snapshots_per_epoch"):
        TrainConfig(snapshots_per_epoch=-1)


def test_cli_refuses_bad_probe_list(tmp_path):
    out = subprocess.run([sys.executable, "-m", "sequencer_mini.train", "--ema-probe", "0.9,x", "--snapshots", "-2",
                          "--out", str(tmp_path / "r")], capture_output=True, text=True)
    assert out.returncode == 2
    assert "--ema-probe" in out.stderr and "--snapshots" in out.stderr


# ----------------------------------------------------------------------------- the bracketing search

def _experiments(tmp_path, monkeypatch):
    """The protocol, reading and writing results under ``tmp_path`` instead of the repository."""
    from sequencer_mini.train import protocol

    class Bound:
        START, GRID, PROBES, RACE_MODELS = protocol.START, protocol.GRID, protocol.PROBES, protocol.RACE_MODELS
        tune_run = staticmethod(protocol.tune_run)

        @staticmethod
        def tuning(model):
            return protocol.tuning(model, tmp_path)

        @staticmethod
        def ema_choice(chosen):
            return protocol.ema_choice(chosen, tmp_path)
    return Bound


def _finish(mod, tmp_path, model, lr, val, probes=None):
    run = mod.tune_run(model, lr)
    folder = tmp_path / run.out
    folder.mkdir(parents=True, exist_ok=True)
    probes = probes or {f"{d:g}": val - 0.01 for d in mod.PROBES}
    (folder / "results.json").write_text(json.dumps({"complete": True, "final_val_acc": val, "history": {
        "val_acc": [val], "probe_val_acc": [probes]}}))


def test_tuning_grows_the_grid_until_the_choice_is_interior(tmp_path, monkeypatch):
    mod = _experiments(tmp_path, monkeypatch)
    needed, lr, _ = mod.tuning("small_cnn")
    assert lr is None and [r.out for r in needed] == [mod.tune_run("small_cnn", x).out for x in mod.START]
    for x, acc in zip(mod.START, (0.90, 0.89, 0.88), strict=True):  # the lowest rate wins: one step below
        _finish(mod, tmp_path, "small_cnn", x, acc)
    needed, lr, _ = mod.tuning("small_cnn")
    assert lr is None and [r.out for r in needed] == [mod.tune_run("small_cnn", 1e-3).out]
    _finish(mod, tmp_path, "small_cnn", 1e-3, 0.905)  # still the edge: one more
    needed, lr, _ = mod.tuning("small_cnn")
    assert [r.out for r in needed] == [mod.tune_run("small_cnn", 5e-4).out]
    _finish(mod, tmp_path, "small_cnn", 5e-4, 0.85)
    needed, lr, tried = mod.tuning("small_cnn")
    assert needed == [] and lr == 1e-3 and min(tried) < lr < max(tried)


def test_a_diverged_rate_counts_as_worst(tmp_path, monkeypatch):
    mod = _experiments(tmp_path, monkeypatch)
    for x, acc in zip(mod.START, (0.80, 0.85, 0.88), strict=True):
        _finish(mod, tmp_path, "small_vit", x, acc)
    (tmp_path / mod.tune_run("small_vit", 1.6e-2).out).mkdir(parents=True)
    (tmp_path / mod.tune_run("small_vit", 1.6e-2).out / "diverged.json").write_text("{}")
    needed, lr, tried = mod.tuning("small_vit")
    assert needed == [] and lr == 8e-3


def test_ema_choice_is_one_setting_for_all_models(tmp_path, monkeypatch):
    mod = _experiments(tmp_path, monkeypatch)
    chosen = {}
    for i, model in enumerate(mod.RACE_MODELS):
        _finish(mod, tmp_path, model, 4e-3, 0.9, probes={"0.99": 0.9, "0.998": 0.91 - 0.03 * (i == 2),
                                                             "0.9995": 0.85})
        chosen[model] = 4e-3
    choice = mod.ema_choice(chosen)
    assert choice["ema"] == "off"  # 0.998 wins two models but loses the mean
    assert set(choice["mean_val_acc"]) == {"off", "0.99", "0.998", "0.9995"}


def _finish_long(tmp_path, run, acc):
    folder = tmp_path / run.out
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps({"complete": True, "final_test_acc": acc}))


def test_screening_combines_the_levers_that_helped_then_reruns_the_kept_recipe(tmp_path):
    from sequencer_mini.train import protocol

    lr, ema = 4e-3, "off"
    search = protocol.screening(lr, ema, tmp_path)
    assert search.kept is None and [r.out for r in search.needed] == [r.out for r in search.runs.values()]
    accs = {"race": 0.920, "random-erasing": 0.925, "trivialaugment": 0.927, "drop-path": 0.915,
            "mixup-cutmix": 0.919, "long-warmup": 0.921, "randaugment": 0.926, "no-crop-flip": 0.918}
    for recipe, acc in accs.items():
        _finish_long(tmp_path, search.runs[recipe], acc)
    search = protocol.screening(lr, ema, tmp_path)
    # three helped; of the two auto-augment policies only the better one joins the combination
    assert search.helped == ["trivialaugment", "randaugment", "random-erasing", "long-warmup"]
    assert search.combo == ["trivialaugment", "random-erasing", "long-warmup"]
    (combined,) = search.needed
    flags = list(combined.flags)
    assert flags.count("--auto-augment") == 1 and "--random-erasing" in flags
    assert flags[len(flags) - 1 - flags[::-1].index("--warmup-epochs") + 1] == "4"  # the lever's warmup wins
    _finish_long(tmp_path, combined, 0.931)
    search = protocol.screening(lr, ema, tmp_path)
    assert search.kept == "combined" and [r.out for r in search.needed] == [search.kept_runs[1].out]
    assert search.kept_runs[0].out == combined.out and search.kept_runs[1].out.endswith("-combined-s1")
    _finish_long(tmp_path, search.kept_runs[1], 0.929)
    assert protocol.screening(lr, ema, tmp_path).needed == []


def test_a_combination_that_only_ties_its_best_lever_is_not_kept(tmp_path):
    """The kept recipe on a tie: the simpler one (a single lever over the combination, the race over a lever)."""
    from sequencer_mini.train import protocol

    search = protocol.screening(4e-3, "off", tmp_path)
    for recipe, run in search.runs.items():
        _finish_long(tmp_path, run, {"long-warmup": 0.9193, "no-crop-flip": 0.9169}.get(recipe, 0.9161))
    search = protocol.screening(4e-3, "off", tmp_path)
    assert search.combo == ["long-warmup", "no-crop-flip"]
    _finish_long(tmp_path, search.needed[0], 0.9193)  # the combination: the same 9,193 test images right
    search = protocol.screening(4e-3, "off", tmp_path)
    assert search.kept == "long-warmup" and search.needed[0].out.endswith("-long-warmup-s1")


def test_screening_keeps_the_best_single_lever_when_at_most_one_helped(tmp_path):
    from sequencer_mini.train import protocol

    search = protocol.screening(4e-3, "off", tmp_path)
    for recipe, run in search.runs.items():
        _finish_long(tmp_path, run, 0.93 if recipe == "drop-path" else 0.92)
    search = protocol.screening(4e-3, "off", tmp_path)
    assert search.combo == [] and search.kept == "drop-path"
    assert [r.out for r in search.needed] == [protocol.long_run("sequencer2d_fast28", "drop-path", 4e-3, "off", 1).out]
    run = protocol.long_run("sequencer2d_fast28", "long-warmup", 4e-3, "off", 1)
    assert run.value("--warmup-epochs") == "4" and run.value("--seed") == "1" and run.value("--val") is None
    with pytest.raises(ValueError, match="cannot be combined"):
        protocol.lever_flags("combined", ["trivialaugment", "randaugment"])
    with pytest.raises(ValueError, match="unknown 16-pass recipe"):
        protocol.lever_flags("cutout")


# ----------------------------------------------------------------------------- remake commands

def test_remake_command_writes_out_relative_to_the_repository():
    inside = str(REPO / "book" / "results" / "x")
    assert remake_command(["--epochs", "1", "--out", inside], inside).endswith("--out book/results/x")
    assert remake_command([f"--out={inside}"], inside).endswith("--out=book/results/x")
    assert remake_command(["--out", "/tmp/elsewhere"], "/tmp/elsewhere").endswith("--out /tmp/elsewhere")


def _committed_results() -> list[Path]:
    files = subprocess.run(["git", "ls-files", "book/results", "bench/results"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.split()
    return [REPO / f for f in files if f.endswith(".json")]


def test_every_committed_remake_command_runs_from_the_repository_root():
    """Item 10 of issue 20: no remake command points outside the repository; a training run's ``--out`` is its
    own folder, relative to the repository root."""
    problems = []
    for path in _committed_results():
        data = json.loads(path.read_text())
        command = data.get("provenance", {}).get("command") if isinstance(data, dict) else None
        if not command:
            continue
        argv = shlex.split(command)
        absolute = [a for a in argv if a.startswith(("/", "~")) or "=/" in a]
        if absolute:
            problems.append(f"{path.relative_to(REPO)}: absolute path(s) {absolute}")
        if "sequencer_mini.train" in argv and "--out" in argv:
            out = argv[argv.index("--out") + 1]
            if out != path.parent.relative_to(REPO).as_posix():
                problems.append(f"{path.relative_to(REPO)}: --out {out} is not its own folder")
    assert not problems, "\n".join(problems)


def test_cli_levers_of_the_16_pass_screening(tmp_path):
    """Each lever of the paper's recipe that the screening switches has its own flag, overriding the preset."""
    from sequencer_mini.train.cli import UsageError, resolve_settings

    s = resolve_settings(["--aug", "light", "--random-erasing", "0.25", "--mixup", "0.8", "--cutmix", "1",
                          "--auto-augment", "trivialaugment", "--drop-path", "0.1", "--out", str(tmp_path / "r")])
    aug = s.cfg.aug
    assert (aug.random_erasing, aug.mixup_alpha, aug.cutmix_alpha, aug.trivialaugment, aug.randaugment) == (
        0.25, 0.8, 1.0, True, False)
    assert aug.crop_padding == 2 and aug.label_smoothing == 0.1 and s.drop_path == 0.1  # the preset's own stay
    with pytest.raises(UsageError) as e:
        resolve_settings(["--random-erasing", "2", "--mixup", "-1", "--auto-augment", "autoaugment",
                          "--out", str(tmp_path / "r")])
    assert all(flag in str(e.value) for flag in ("--random-erasing", "--mixup", "--auto-augment"))


def test_trivialaugment_runs_per_image_and_is_seeded():
    ds = TensorImageDataset(torch.randint(0, 255, (8, 1, 28, 28), dtype=torch.uint8), torch.arange(8) % 10,
                            dataset_info("fashion_mnist"))
    aug = AugmentConfig(trivialaugment=True)
    a = [x for x, _ in TensorLoader(ds, 4, shuffle=True, aug=aug, seed=3)]
    b = [x for x, _ in TensorLoader(ds, 4, shuffle=True, aug=aug, seed=3)]
    plain = [x for x, _ in TensorLoader(ds, 4, shuffle=True, aug=AugmentConfig(), seed=3)]
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a, plain, strict=True))


def test_a_replay_is_the_race_run_with_denser_snapshots_stopped_after_one_pass():
    from sequencer_mini.train.protocol import REPLAY_SNAPSHOTS, race_run, replay_run

    race, replay = race_run("small_cnn", 0.008, 1), replay_run("small_cnn", 0.008, 1)
    assert replay.out == race.out + "-pass1" and not Path(replay.out).is_absolute()
    assert replay.value("--snapshots") == str(REPLAY_SNAPSHOTS) and replay.value("--stop-after") == "1"
    assert REPLAY_SNAPSHOTS % int(race.value("--snapshots")) == 0  # every race snapshot of pass 1 is among them
    changed = {"--snapshots", "--stop-after"}
    strip = [(f, v) for f, v in zip(race.flags[::2], race.flags[1::2], strict=True) if f not in changed]
    assert strip == [(f, v) for f, v in zip(replay.flags[::2], replay.flags[1::2], strict=True) if f not in changed]


def test_denser_snapshots_of_one_pass_hold_the_same_weights_where_they_coincide(tmp_path):
    """What a replay relies on: the snapshots only save, so a run with 4 a pass stopped after one pass holds, at
    the images it shares with a run of 2 a pass, the same weights and watching EMAs, tensor for tensor."""
    _fit(tmp_path / "race")
    torch.manual_seed(0)
    model = create_model("sequencer2d_mini28", **TINY)
    cfg = TrainConfig(epochs=2, lr=3e-3, warmup_epochs=0.5, device="cpu", out_dir=str(tmp_path / "replay"),
                      ema_probes=(0.9, 0.99), snapshots_per_epoch=4, stop_after=1,
                      model_config={"name": "tiny", **TINY})
    train, test = _loaders()
    fit(model, train, test, cfg)
    names = sorted(p.name for p in (tmp_path / "replay" / "snapshots").iterdir())
    assert names == ["0000016.pt", "0000032.pt", "0000048.pt", "0000064.pt"]
    for name in ("0000032.pt", "0000064.pt"):
        a = torch.load(tmp_path / "race" / "snapshots" / name, weights_only=True)
        b = torch.load(tmp_path / "replay" / "snapshots" / name, weights_only=True)
        assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"]), name
        assert all(torch.equal(a["ema_probes"]["0.9"][k], b["ema_probes"]["0.9"][k]) for k in a["model"]), name


def test_helping_levers_wait_for_every_ablation_then_pick_gains_beyond_the_noise_band(tmp_path):
    """Race seeds 0.88/0.89/0.90 (sd 0.01, band 2*sqrt(2)*0.01 = 0.028): a lever gaining 0.03 on both seeds helps,
    one gaining 0.02 does not; the CNN's control runs are its own race recipe with that lever."""
    from sequencer_mini.train import protocol

    chosen = {"sequencer2d_fast28": 4e-3, "small_cnn": 8e-3, "small_vit": 2e-3}

    def write(run, acc):
        folder = tmp_path / run.out
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "results.json").write_text(json.dumps({"complete": True, "final_test_acc": acc}))

    race = {0: 0.88, 1: 0.89, 2: 0.90}
    for seed, acc in race.items():
        write(protocol.race_run(protocol.ABLATED, 4e-3, seed), acc)
    gains = {"no-crop-flip": 0.03, "lr-down": 0.02}
    levers = list(protocol.ABLATIONS)
    for lever in levers[:-1]:
        for seed in protocol.ABLATION_SEEDS:
            write(protocol.ablation_run(lever, 4e-3, "off", seed), race[seed] + gains.get(lever, -0.01))
    assert protocol.helping_levers(chosen, "off", tmp_path) is None  # the last lever has not run
    for seed in protocol.ABLATION_SEEDS:
        write(protocol.ablation_run(levers[-1], 4e-3, "off", seed), race[seed] + gains.get(levers[-1], -0.01))
    assert protocol.helping_levers(chosen, "off", tmp_path) == ["no-crop-flip"]
    control = protocol.ablation_run("no-crop-flip", 8e-3, "off", 1, protocol.CONTROL)
    assert control.out == "book/results/fmnist-ablate240k-small_cnn-no-crop-flip-s1"
    assert control.value("--model") == "small_cnn" and control.value("--aug") == "none"
    assert control.value("--lr") == "0.008"




def test_a_parked_checkpoint_outlives_a_work_tree_laid_without_ignored_files(tmp_path):
    """The runner copies a training run's newer last.pt to parked.pt (not git-ignored) and restores it before
    resuming a run whose last.pt is gone, as in a new session's work tree; a surviving last.pt wins."""
    exp = load_script("bench/experiments.py")
    run = tmp_path / "run"
    run.mkdir()
    assert not exp.park(run) and not exp.unpark(run)  # nothing to park or restore yet
    (run / "last.pt").write_bytes(b"state after pass 3")
    assert exp.park(run) and (run / "parked.pt").read_bytes() == b"state after pass 3"
    assert not exp.park(run)  # unchanged: not copied again
    (run / "last.pt").unlink()  # the work tree is laid anew
    assert exp.unpark(run) and (run / "last.pt").read_bytes() == b"state after pass 3"
    (run / "last.pt").write_bytes(b"state after pass 4")
    assert not exp.unpark(run) and (run / "last.pt").read_bytes() == b"state after pass 4"
    assert not list(run.glob("*.tmp"))


def test_a_copy_killed_before_its_rename_leaves_the_old_file_whole(tmp_path):
    """atomic_copy (park and unpark): kill -9 between writing the copy and renaming it leaves the destination's
    old bytes untouched (the half-done copy is a .tmp beside it), and the next copy completes over the leftover."""
    import os
    import signal

    from sequencer_mini.core import fsutil

    src, dst = tmp_path / "last.pt", tmp_path / "parked.pt"
    src.write_bytes(b"new state" * 1000)
    dst.write_bytes(b"old state")
    pid = os.fork()
    if pid == 0:  # the child: killed at its first write point (the copy written, not yet renamed)
        os.environ["SEQUENCER_TEST_FAULT"] = "kill@1"
        fsutil._points.clear()
        try:
            fsutil.atomic_copy(src, dst)
        finally:
            os._exit(3)
    status = os.waitpid(pid, 0)[1]
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status
    assert dst.read_bytes() == b"old state"
    fsutil._points.clear()
    fsutil.atomic_copy(src, dst)
    assert dst.read_bytes() == src.read_bytes() and not list(tmp_path.glob("*.tmp"))
    assert fsutil.fault_points() == ["before replace parked.pt", "after replace parked.pt"]


@pytest.mark.parametrize("complete", [True, False])
def test_the_runner_keeps_the_parked_state_of_an_adopted_run_that_ended_unfinished(tmp_path, monkeypatch, complete):
    """A run that another process trains (left to it, 'adopted') and that then ends: its parked.pt is deleted only
    when the run finished (results.json complete); a partial results.json (a run stopped after some passes) keeps
    it, so that the next session resumes from it."""
    from sequencer_mini.train.protocol import Run

    exp = load_script("bench/experiments.py")
    run = Run("book/results/x-s0", ("--epochs", "16"))
    folder = tmp_path / run.out
    folder.mkdir(parents=True)
    (folder / "last.pt").write_bytes(b"state after pass 3")
    alive = iter([True, False])  # trained by another process at the first look, gone at the second

    def owner(path):
        return {"pid": 1} if Path(path) == folder and next(alive) else None

    def plan():  # the run stays in the plan until it finished
        return ([] if (folder / "results.json").exists() and complete else [run]), []

    monkeypatch.setattr(exp, "ROOT", tmp_path)
    monkeypatch.setattr(exp, "live_owner", owner)
    monkeypatch.setattr(exp, "plan", plan)
    monkeypatch.setattr(exp.time, "sleep", lambda s: (folder / "results.json").write_text(json.dumps(
        {"complete": complete, "final_test_acc": 0.9, "provenance": {}})))
    monkeypatch.setattr(exp.subprocess, "Popen", lambda *a, **k: pytest.fail("started"))
    if complete:
        assert exp.run_all(jobs=1, threads=1, poll_s=0) == 0
        assert not (folder / "parked.pt").exists()  # finished: the parked state is of no more use
    else:  # not finished: the runner would start it again (resuming); stop it there
        with pytest.raises(pytest.fail.Exception, match="started"):
            exp.run_all(jobs=1, threads=1, poll_s=0)
        assert (folder / "parked.pt").read_bytes() == b"state after pass 3"


def test_parked_checkpoints_are_not_ignored_and_never_committed():
    """parked.pt must travel with an uncommitted work tree (so git must not ignore it) yet stay out of commits."""
    probe = "book/results/fmnist-16pass-sequencer2d_fast28-race-s0/parked.pt"
    ignored = subprocess.run(["git", "check-ignore", "-q", probe], cwd=REPO)
    assert ignored.returncode == 1, f"{probe} is git-ignored: a new session's work tree would lose it"
    tracked = subprocess.run(["git", "ls-files", "*parked.pt"], cwd=REPO, capture_output=True, text=True)
    assert tracked.stdout == "", f"parked checkpoints are committed: {tracked.stdout.split()}; git rm --cached them"
