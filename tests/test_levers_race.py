"""Chapter 6's recipe levers (EMA, progressive resizing, late augmentation, validation split), the race reading
(sequencer_mini.analysis.race) and chapter 10's matched-accuracy checkpoints (sequencer_mini.analysis.robustness)."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from fixtures import single_thread  # noqa: F401 (fixture)

from sequencer_mini.analysis import race, robustness
from sequencer_mini.train.data import AugmentConfig, TensorImageDataset, TensorLoader, carve_validation, dataset_info
from sequencer_mini.train.loop import TrainConfig, fit, resize_batch
from sequencer_mini.train.recipes import (
    RACE_MODELS,
    RECIPE_TABLE,
    RECIPES,
    build_model,
    model_args,
    recipe_table_commands,
)

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

def test_race_recipes_are_within_15_percent_and_build():
    counts = {}
    for name, spec in RACE_MODELS.items():
        model, _ = build_model(name, 1, 10, 28, **model_args(spec["model_arg"]))
        counts[name] = sum(p.numel() for p in model.parameters())
        recipe = RECIPES[f"fmnist-race-{name}"]
        assert recipe["model"] == name and recipe["limit_train"] == 60000 and recipe["aug_from_epoch"] >= 1
    assert max(counts.values()) / min(counts.values()) <= 1.15 and max(counts.values()) < 1_000_000


def test_recipe_table_rows_parse_and_stay_under_a_million():
    """Every command of chapter 6's recipe table is a valid training command of a <= 1 M-parameter preset, and each
    row writes its own folder (the one the chapter reads)."""
    from sequencer_mini.train.cli import build_parser

    folders = [row.folder for row in RECIPE_TABLE.values()]
    assert len(set(folders)) == len(folders)
    commands = recipe_table_commands(threads=2)
    assert len(commands) == sum(row.flags is not None for row in RECIPE_TABLE.values()) >= 5
    for cmd in commands:
        args = build_parser().parse_args(cmd[3:])
        assert args.out.removeprefix("book/results/") in folders and args.threads == 2 and args.limit_train == 60000
        model, _ = build_model(args.model, 1, 10, 28, **model_args(args.model_arg))
        assert sum(p.numel() for p in model.parameters()) < 1_000_000


def test_recipe_levers_read_a_run_and_count_a_stopped_runs_parameters():
    run = fake_run([0.8, 0.9], [0.85, 0.92])
    run["recipe"].update(aug={"crop_padding": 2, "hflip": True, "label_smoothing": 0.1}, aug_from_epoch=1,
                         ema_decay=0.998)
    run["n_train"] = 60000
    v = race.recipe_levers(run)
    assert (v["params"], v["epochs"], v["images_seen"], v["final"], v["raw"]) == (100, 2, 120000, 0.9, 0.9)
    assert v["augmentation"] == "crop+flip from epoch 2" and v["smoothing"] == 0.1 and v["ema"] == 0.998
    assert v["wall_min"] == 2.0 and v["threads"] == 2 and v["complete"]
    from sequencer_mini.models.sequencer2d import preset_config

    config = {"name": "tiny", **preset_config("sequencer2d_mini28", **TINY).to_dict()}
    stopped = dict(run, params=None, complete=False, model_config=config)
    model, _ = build_model("sequencer2d_mini28", 1, 10, 28, **TINY)
    assert race.recipe_levers(stopped)["params"] == sum(p.numel() for p in model.parameters())


def fake_run(acc: list[float], train: list[float], threads: int = 2) -> dict:
    n = len(acc)
    return {"complete": True, "params": 100, "macs": 10, "final_test_acc": acc[-1], "epochs_completed": n,
            "images_seen": 60000 * n, "wall_time_s": 60.0 * n, "images_per_s": 500.0,
            "recipe": {"lr": 1e-3, "threads": threads},
            "history": {"test_acc": acc, "train_acc": train, "images_seen": [60000 * (k + 1) for k in range(n)],
                        "epoch_time_s": [60.0] * n, "test_acc_raw": [None] * (n - 1) + [acc[-1]]},
            "provenance": {"device": "cpu"}}


def write_race(root: Path, runs: dict[tuple[str, int], dict]) -> None:
    for (model, seed), r in runs.items():
        folder = root / f"fmnist-race-{model}-s{seed}"
        folder.mkdir(parents=True)
        (folder / "results.json").write_text(json.dumps(r))


def test_read_race_rows_and_verdicts(tmp_path):
    write_race(tmp_path, {("small_cnn", 0): fake_run([0.8, 0.9], [0.85, 0.92]),
                          ("sequencer2d_fast28", 0): fake_run([0.7, 0.85], [0.75, 0.86])})
    dry = fake_run([0.99], [0.99])
    dry["provenance"]["dry_run"] = True
    write_race(tmp_path, {("small_vit", 0): dry})  # a dry run is never read as a result
    runs = race.read_race(tmp_path)
    assert set(runs) == {"small_cnn", "sequencer2d_fast28"}
    rows = race.race_rows(runs)
    assert [r.label for r in rows] == ["CNN", "Sequencer2D"]
    assert "one seed each" in race.race_verdict(rows)
    gaps = race.gap_by_images(runs, "sequencer2d_fast28", "small_cnn")
    assert [n for n, _ in gaps] == [60000, 120000]
    assert [g for _, g in gaps] == pytest.approx([0.10, 0.06])
    write_race(tmp_path, {("small_cnn", 1): fake_run([0.8, 0.91], [0.8, 0.9]),
                          ("sequencer2d_fast28", 1): fake_run([0.7, 0.86], [0.7, 0.86])})
    rows = race.race_rows(race.read_race(tmp_path))
    assert rows[0].accs == [0.9, 0.91] and rows[0].spread == pytest.approx(0.005)
    assert "every seed of the winner beats" in race.race_verdict(rows)
    write_race(tmp_path, {("sequencer2d_fast28", 2): fake_run([0.7, 0.95], [0.7, 0.9])})
    assert "within the seed-to-seed spread" in race.race_verdict(race.race_rows(race.read_race(tmp_path)))


# ----------------------------------------------------------------------------- matched clean accuracy

def test_test_halves_are_disjoint_and_fixed():
    x, y = torch.arange(10).float().view(10, 1, 1, 1), torch.arange(10)
    (sx, sy), (ex, ey) = robustness.test_halves(x, y, seed=0)
    assert len(sx) == len(ex) == 5 and not set(sy.tolist()) & set(ey.tolist())
    assert torch.equal(robustness.test_halves(x, y, seed=0)[0][1], sy)
    with pytest.raises(ValueError, match="at least 2 images"):
        robustness.test_halves(x[:1], y[:1])


def test_matched_checkpoints_pick_the_common_accuracy(tmp_path, monkeypatch):
    """Two recorded runs with epoch checkpoints; the target is the weaker run's best, and each run's epoch closest
    to it is chosen (accuracies measured here, on the selection images)."""
    from sequencer_mini.analysis import trained

    images, labels = torch.rand(8, 1, 28, 28), torch.arange(8) % 10
    accs = {("small_cnn", 1): 0.5, ("small_cnn", 2): 0.9, ("sequencer2d_fast28", 1): 0.3,
            ("sequencer2d_fast28", 2): 0.6}
    for model in ("small_cnn", "sequencer2d_fast28"):
        run = tmp_path / f"fmnist-race-{model}-s0"
        (run / "epochs").mkdir(parents=True)
        net = trained.build(model)
        for epoch in (1, 2):
            torch.save({"model": net.state_dict(), "epoch": epoch}, run / "epochs" / f"{epoch:03d}.pt")
        (run / "results.json").write_text(json.dumps({"history": {"epoch": [1, 2]}, "model_config": {}}))
    current = {}

    def fake_accuracy(model, *_, **__):
        return accs[current["key"]]

    real_load = trained.load_trained

    def tagged_load(model, seed=0, *, checkpoint="final", **kw):
        current["key"] = (model, int(checkpoint.split(":")[1]))
        return real_load(model, seed, checkpoint=checkpoint, **kw)

    monkeypatch.setattr(robustness, "accuracy", fake_accuracy)
    monkeypatch.setattr(robustness, "load_trained", tagged_load)  # the name robustness imported and calls
    models, selection = robustness.matched_checkpoints(["small_cnn", "sequencer2d_fast28"], images, labels,
                                                       results_dir=tmp_path)
    assert selection["target"] == pytest.approx(0.6)  # the smaller of the two best accuracies
    assert selection["chosen"]["sequencer2d_fast28"]["epoch"] == 2
    assert selection["chosen"]["small_cnn"]["epoch"] == 1  # |0.5 - 0.6| < |0.9 - 0.6|
    assert models["small_cnn"].checkpoint == "epoch:1"
