"""The trainer's levers (EMA, progressive resizing, late augmentation, validation split), the race's three models
(sequencer_mini.train.recipes.RACE_MODELS) and chapter 10's test halves (sequencer_mini.analysis.robustness)."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from fixtures import single_thread  # noqa: F401 (fixture)

from sequencer_mini.analysis import robustness
from sequencer_mini.train.data import AugmentConfig, TensorImageDataset, TensorLoader, carve_validation, dataset_info
from sequencer_mini.train.loop import TrainConfig, fit, resize_batch
from sequencer_mini.train.recipes import RACE_MODELS, build_model, model_args

pytestmark = pytest.mark.usefixtures("single_thread")
TINY = dict(layers=(1, 1), embed_dims=(16, 32), hidden_sizes=(4, 8))


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.setenv("SEQUENCER_QUIET", "1")


def toy(n: int = 96) -> TensorImageDataset:
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % 10
    images = (torch.rand(n, 1, 28, 28, generator=g) * 60 + labels.view(-1, 1, 1, 1) * 19).to(torch.uint8)
    return TensorImageDataset(images, labels, dataset_info("fashion_mnist"))


def tiny(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("sequencer2d_mini28", 1, 10, 28, **TINY)[0]


def cfg(tmp_path: Path, **kw) -> TrainConfig:
    return replace(TrainConfig(epochs=2, lr=3e-3, warmup_epochs=0.5, device="cpu", out_dir=str(tmp_path),
                               aug=AugmentConfig.preset("light"), model_config={"name": "tiny", **TINY}), **kw)


# ----------------------------------------------------------------------------- levers

def test_config_rejects_bad_levers():
    with pytest.raises(ValueError, match="ema_decay"):
        TrainConfig(ema_decay=1.0)
    with pytest.raises(ValueError, match="img_sizes"):
        TrainConfig(img_sizes=(0, 28))
    with pytest.raises(ValueError, match="aug_from_epoch"):
        TrainConfig(aug_from_epoch=-1)
    assert TrainConfig(img_sizes=(20, 24)).train_size(0) == 20
    assert TrainConfig(img_sizes=(20, 24)).train_size(5) == 24  # the last one repeats
    assert TrainConfig().train_size(3) is None


def test_resize_batch_shapes():
    x = torch.rand(3, 1, 28, 28)
    assert resize_batch(x, None) is x and resize_batch(x, 28) is x
    assert resize_batch(x, 20).shape == (3, 1, 20, 20)


def test_ema_progressive_late_aug_and_files(tmp_path):
    """One run with every lever: EMA weights reported (raw scored at the end), sides per epoch recorded, final.pt and
    per-epoch weights written, no best.pt without a validation split (never chosen on the test set)."""
    ds = toy()
    train, test = TensorLoader(ds, 32, shuffle=True, aug=AugmentConfig.preset("light"), seed=0), TensorLoader(ds, 64)
    model = tiny()
    h = fit(model, train, test, cfg(tmp_path, ema_decay=0.9, img_sizes=(20, 28), aug_from_epoch=1, keep_epochs=True))
    assert h["img_size"] == [20, 28]
    assert h["images_seen"] == [96, 192]
    assert h["test_acc_raw"][0] is None and h["test_acc_raw"][-1] is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epochs", "final.pt", "last.pt"]
    final = torch.load(tmp_path / "final.pt", weights_only=True)
    assert final["epoch"] == 2 and final["test_acc"] == h["test_acc"][-1]
    # fit hands back the EMA weights, the ones the history reports
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), final["model"].values(), strict=True))
    assert sorted(p.name for p in (tmp_path / "epochs").iterdir()) == ["001.pt", "002.pt"]


def test_late_augmentation_switches_the_loader(tmp_path):
    seen = {}

    class Recorder(TensorLoader):
        def __iter__(self):  # (tqdm.auto may call iter twice per epoch; the generator is lazy)
            seen[self.epoch] = self.augment
            return super().__iter__()

    ds = toy(64)
    fit(tiny(), Recorder(ds, 32, shuffle=True, aug=AugmentConfig.preset("light")), TensorLoader(ds, 64),
        cfg(None, epochs=3, aug_from_epoch=2, out_dir=None))
    assert seen == {0: False, 1: False, 2: True}


def test_validation_split_chooses_best(tmp_path):
    ds = toy()
    train, val = carve_validation(TensorLoader(ds, 32, shuffle=True, seed=3), 16)
    assert len(train.dataset) == 80 and len(val.dataset) == 16 and train.seed == 3
    h = fit(tiny(), train, TensorLoader(ds, 64), cfg(tmp_path), val_loader=val)
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    assert best["val_acc"] == max(h["val_acc"])
    with pytest.raises(ValueError, match="validation size"):
        carve_validation(TensorLoader(ds, 32), 96)


# ----------------------------------------------------------------------------- recipes and the race

def test_race_models_are_within_15_percent_and_build():
    counts = {}
    for name, spec in RACE_MODELS.items():
        model, _ = build_model(name, 1, 10, 28, **model_args(spec["model_arg"]))
        counts[name] = sum(p.numel() for p in model.parameters())
    assert max(counts.values()) / min(counts.values()) <= 1.15 and max(counts.values()) < 1_000_000


# ----------------------------------------------------------------------------- matched clean accuracy

def test_test_halves_are_disjoint_and_fixed():
    x, y = torch.arange(10).float().view(10, 1, 1, 1), torch.arange(10)
    (sx, sy), (ex, ey) = robustness.test_halves(x, y, seed=0)
    assert len(sx) == len(ex) == 5 and not set(sy.tolist()) & set(ey.tolist())
    assert torch.equal(robustness.test_halves(x, y, seed=0)[0][1], sy)
    with pytest.raises(ValueError, match="at least 2 images"):
        robustness.test_halves(x[:1], y[:1])
