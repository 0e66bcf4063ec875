"""sequencer_mini.train: learning, exact resume, atomic checkpoints, clear errors, the CLI."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from fixtures import make_idx_tree, single_thread  # noqa: F401 (fixture)

from sequencer_mini.models.sequencer2d import create_model
from sequencer_mini.train import data
from sequencer_mini.train.data import AugmentConfig, TensorImageDataset, TensorLoader, dataset_info
from sequencer_mini.train.loop import (
    TrainConfig,
    WarmupCosine,
    confusion_matrix,
    evaluate,
    fit,
    load_checkpoint,
    plot_history,
)

REPO = Path(__file__).resolve().parents[1]
TINY = dict(layers=(1, 1), embed_dims=(16, 32), hidden_sizes=(4, 8), drop_path_rate=0.1)


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.setenv("SEQUENCER_QUIET", "1")


def tiny_model(seed: int = 0, **overrides) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model("sequencer2d_mini28", **{**TINY, **overrides})


def toy_loaders(n: int = 96, aug: AugmentConfig | None = None):
    """Random images whose label is written into their brightness, so a model can learn it quickly."""
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % 10
    images = (torch.rand(n, 1, 28, 28, generator=g) * 60 + labels.view(-1, 1, 1, 1) * 19).to(torch.uint8)
    ds = TensorImageDataset(images, labels, dataset_info("fashion_mnist"))
    return (TensorLoader(ds, 32, shuffle=True, aug=aug or AugmentConfig.preset("paper"), seed=0),
            TensorLoader(ds.subset(48), 64))


def cfg_for(tmp_path: Path | None, **kw) -> TrainConfig:
    # device="cpu": the bitwise-resume guarantee is a CPU one (cuDNN kernels need not be deterministic)
    base = TrainConfig(epochs=3, lr=3e-3, warmup_epochs=0.5, aug=AugmentConfig.preset("paper"), device="cpu",
                       out_dir=str(tmp_path) if tmp_path else None, model_config={"name": "tiny", **TINY})
    return replace(base, **kw)


# ----------------------------------------------------------------------------- learning

def test_learns_real_fashion_mnist_subset():
    if not (data.FMNIST_SYSTEM_DIR / "train-images-idx3-ubyte.gz").exists() and not os.environ.get("SEQUENCER_DATA"):
        pytest.skip("Fashion-MNIST not installed: apt-get install dataset-fashion-mnist")
    train, test, info = data.make_loaders("fashion_mnist", 16, AugmentConfig(), limit_train=512, limit_test=256)
    model = tiny_model(drop_path_rate=0.0)  # 3 epochs of 32 steps reach ~45% test accuracy
    history = fit(model, train, test, TrainConfig(epochs=3, lr=1e-2, warmup_epochs=0.2, device="cpu"))
    assert history["train_loss"][-1] < history["train_loss"][0] - 0.3
    assert history["test_acc"][-1] > 0.3  # chance is 0.1
    result = evaluate(model, test)
    assert abs(result.accuracy - history["test_acc"][-1]) < 1e-9 and result.preds.shape == (256,)


# ----------------------------------------------------------------------------- checkpoints and resume

class Crash(Exception):
    pass


def crash_after(epoch: int):
    def callback(e: int, history: dict) -> None:
        if e == epoch:
            raise Crash(f"simulated disconnect after epoch {e}")
    return callback


def strip_times(history: dict) -> dict:
    return {k: v for k, v in history.items() if k not in ("images_per_s", "epoch_time_s")}


def test_resume_is_bitwise_identical(tmp_path):
    train, test = toy_loaders()
    straight = tiny_model()
    h_straight = fit(straight, train, test, cfg_for(tmp_path / "a"))

    train, test = toy_loaders()  # fresh loaders and model: as in a new process after the crash
    interrupted = tiny_model()
    with pytest.raises(Crash):
        fit(interrupted, train, test, cfg_for(tmp_path / "b"), callbacks=[crash_after(2)])
    torch.manual_seed(999)  # the new process starts with a different RNG state; the checkpoint restores it
    resumed = tiny_model(seed=5)
    h_resumed = fit(resumed, train, test, cfg_for(tmp_path / "b", resume=True))

    assert h_straight["test_acc"] and strip_times(h_resumed) == strip_times(h_straight)
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_resume_of_finished_run_is_a_no_op(tmp_path):
    train, test = toy_loaders()
    model = tiny_model()
    fit(model, train, test, cfg_for(tmp_path, epochs=1))
    again = tiny_model(seed=1)
    history = fit(again, train, test, cfg_for(tmp_path, epochs=1, resume=True))
    assert len(history["epoch"]) == 1 and torch.equal(again.stem.proj.weight, model.stem.proj.weight)


def test_crash_mid_write_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    train, test = toy_loaders(n=64)
    fit(tiny_model(), train, test, cfg_for(tmp_path, epochs=2, stop_after=1))
    last = tmp_path / "last.pt"
    good = last.read_bytes()
    real_save = torch.save

    def half_save(obj, f, *args, **kwargs):  # a disk-full / disconnect in the middle of the write
        import io
        buf = io.BytesIO()
        real_save(obj, buf)
        f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
        raise OSError("simulated crash mid-write")

    monkeypatch.setattr(torch, "save", half_save)
    with pytest.raises(OSError, match="mid-write"):
        fit(tiny_model(), train, test, cfg_for(tmp_path, epochs=2, resume=True))
    monkeypatch.setattr(torch, "save", real_save)
    assert last.read_bytes() == good and not (tmp_path / "last.pt.tmp").exists()
    ckpt = load_checkpoint(last, tiny_model())
    assert ckpt["epoch"] == 1


def test_corrupt_checkpoint_refuses_to_resume(tmp_path):
    train, test = toy_loaders(n=64)
    fit(tiny_model(), train, test, cfg_for(tmp_path, epochs=2, stop_after=1))
    last = tmp_path / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])
    truncated = last.read_bytes()
    with pytest.raises(RuntimeError, match=rf"checkpoint {last} is unreadable .*Refusing to resume"):
        fit(tiny_model(), train, test, cfg_for(tmp_path, epochs=2, resume=True))
    assert last.read_bytes() == truncated  # not overwritten by a fresh start


def test_mismatched_checkpoint(tmp_path):
    train, test = toy_loaders(n=64)
    fit(tiny_model(), train, test, cfg_for(tmp_path, epochs=2, stop_after=1))
    other = dict(TINY, embed_dims=(16, 48))
    with pytest.raises(RuntimeError, match=r"(?s)does not match this run.*model config embed_dims.*"
                                           r"parameter stages.1.*checkpoint \(32,\) vs model \(48,\)"):
        fit(tiny_model(embed_dims=(16, 48)), train, test,
            cfg_for(tmp_path, epochs=2, resume=True, model_config={"name": "tiny", **other}))
    with pytest.raises(RuntimeError, match="train config epochs: checkpoint 2 vs now 5"):
        fit(tiny_model(), train, test, cfg_for(tmp_path, epochs=5, resume=True))


def test_existing_checkpoint_needs_resume(tmp_path):
    train, test = toy_loaders(n=64)
    fit(tiny_model(), train, test, cfg_for(tmp_path, epochs=1))
    with pytest.raises(RuntimeError, match="exists; pass resume=True"):
        fit(tiny_model(), train, test, cfg_for(tmp_path, epochs=1))


def test_checkpoint_loads_with_weights_only(tmp_path):
    train, test = toy_loaders(n=64)
    fit(tiny_model(), train, test, cfg_for(tmp_path, epochs=1))
    ckpt = torch.load(tmp_path / "last.pt", weights_only=True)
    assert {"model", "optimizer", "scheduler", "scaler", "rng", "epoch", "history"} <= set(ckpt)
    assert set(ckpt["rng"]) >= {"python", "numpy", "torch"}
    assert torch.load(tmp_path / "final.pt", weights_only=True)["epoch"] == 1
    assert not (tmp_path / "best.pt").exists()  # a best epoch is chosen on a validation split only, never on test


# ----------------------------------------------------------------------------- small pieces

def test_warmup_cosine_schedule():
    f = WarmupCosine(warmup=10, total=110, start=0.01, end=0.1)
    assert f(0) == pytest.approx(0.01) and f(10) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.55) and f(110) == pytest.approx(0.1)
    assert all(f(t) >= f(t + 1) for t in range(10, 110))


def test_confusion_matrix():
    cm = confusion_matrix(torch.tensor([0, 1, 1, 2]), torch.tensor([0, 1, 2, 2]), 3)
    assert cm.tolist() == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]
    with pytest.raises(ValueError, match="same shape"):
        confusion_matrix(torch.zeros(3), torch.zeros(4), 3)


def test_train_config_validates():
    with pytest.raises(ValueError, match="amp must be"):
        TrainConfig(amp="fp8")


def test_plot_history():
    import matplotlib
    matplotlib.use("Agg")
    h = {"epoch": [1, 2], "train_loss": [2.0, 1.0], "test_loss": [2.1, 1.2], "train_acc": [0.2, 0.5],
         "test_acc": [0.2, 0.4], "lr": [1e-3, 1e-4], "images_per_s": [1, 1], "epoch_time_s": [1, 1]}
    fig = plot_history(h, title="t")
    assert len(fig.axes) == 3


# ----------------------------------------------------------------------------- command line

def run_cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sequencer_mini.train", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def test_cli_writes_results_json(tmp_path):
    make_idx_tree(tmp_path / "fm", n_train=64, n_test=32)
    env = {**os.environ, "SEQUENCER_DATA": str(tmp_path / "fm"), "SEQUENCER_OFFLINE": "1", "SEQUENCER_QUIET": "1",
           "OMP_NUM_THREADS": "1"}
    out = tmp_path / "run"
    proc = run_cli("--dataset", "fashion_mnist", "--model", "small_cnn", "--budget", "ci", "--limit-train", "48",
                   "--device", "cpu", "--out", str(out), env=env)
    assert proc.returncode == 0, proc.stderr
    res = json.loads((out / "results.json").read_text())
    assert res["complete"] and res["history"]["epoch"] == [1] and res["n_train"] == 48 and res["n_test"] == 32
    assert res["model"] == "small_cnn" and res["params"] > 0 and res["macs"] > 0 and res["images_per_s"] > 0
    assert 0 <= res["best_test_acc"] <= 1 and res["final_test_acc"] == res["history"]["test_acc"][-1]
    assert res["recipe"]["epochs"] == 1 and res["recipe"]["aug"]["label_smoothing"] == 0.1  # the ci defaults
    assert res["provenance"]["budget"] == "ci" and "--budget ci" in res["provenance"]["command"]
    assert (out / "last.pt").is_file() and (out / "final.pt").is_file() and not (out / "best.pt").exists()


def test_cli_stop_and_resume(tmp_path, monkeypatch):
    """--stop-after then --resume (as after a Colab disconnect), in-process to save a second interpreter start."""
    from sequencer_mini.train.cli import main
    make_idx_tree(tmp_path / "fm", n_train=64, n_test=32)
    monkeypatch.setenv("SEQUENCER_DATA", str(tmp_path / "fm"))
    monkeypatch.setenv("SEQUENCER_BUDGET", "ci")  # main() sets it from --budget; monkeypatch restores it
    common = ["--dataset", "fashion_mnist", "--model", "sequencer2d_mini28", "--budget", "ci", "--epochs", "2",
              "--device", "cpu", "--limit-train", "32", "--limit-test", "32", "--out", str(tmp_path / "run")]
    partial = main([*common, "--stop-after", "1"])
    assert partial["complete"] is False and partial["epochs_completed"] == 1
    done = main([*common, "--resume"])
    assert done["complete"] and done["history"]["epoch"] == [1, 2]
    assert json.loads((tmp_path / "run" / "results.json").read_text())["history"] == done["history"]


def test_cli_rejects_unknown_model(tmp_path):
    from sequencer_mini.train.recipes import build_model
    with pytest.raises(ValueError, match="unknown model 'resnet50'; expected one of"):
        build_model("resnet50", 1, 10, 28)
