"""analysis.experiments: the tuning, race and ablation tables read from results folders (synthetic ones here)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from sequencer_mini.analysis.experiments import (
    ablation_table,
    final_acc,
    noise_band,
    race_table,
    read_tuning,
)
from sequencer_mini.train.protocol import START, ablation_run, race_run, tune_run


def _write(root: Path, out: str, **fields) -> None:
    folder = root / out
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps({"complete": True, **fields}))


def _run(acc: float, probes: dict[str, float] | None = None, **extra) -> dict:
    return {"final_test_acc": acc, "final_val_acc": acc, "params": 800_000, "macs": 40_000_000,
            "images_seen": 240_000, "wall_time_s": 1200.0, "train_time_s": 960.0, "images_per_s": 250.0,
            "history": {"val_acc": [acc], "probe_val_acc": [probes], "probe_test_acc": [probes]}, **extra}


def test_tuning_curves_say_whether_the_choice_is_interior(tmp_path):
    for lr, acc in zip(START, (0.88, 0.90, 0.89), strict=True):
        _write(tmp_path, tune_run("sequencer2d_fast28", lr).out, **_run(acc, {"0.998": acc + 0.001}))
    curves = {c.model: c for c in read_tuning(tmp_path)}
    seq = curves["sequencer2d_fast28"]
    assert seq.chosen == 4e-3 and seq.interior and seq.probes["0.998"][4e-3] == pytest.approx(0.901)
    assert curves["small_cnn"].chosen is None and not curves["small_cnn"].interior


def test_race_table_mean_sd_and_arithmetic(tmp_path):
    chosen = {"sequencer2d_fast28": 4e-3, "small_cnn": 2e-3}
    for seed, acc in enumerate((0.90, 0.91, 0.92)):
        _write(tmp_path, race_run("sequencer2d_fast28", 4e-3, seed).out, **_run(acc, {"0.998": acc - 0.002}))
    _write(tmp_path, race_run("small_cnn", 2e-3, 0).out, **_run(0.93, {"0.998": 0.931}))
    rows = race_table(chosen, root=tmp_path)
    assert [r.model for r in rows] == ["small_cnn", "sequencer2d_fast28"]
    seq = rows[1]
    assert seq.mean == pytest.approx(0.91) and seq.sd == pytest.approx(0.01) and rows[0].sd == 0.0
    assert seq.gmacs_per_s == pytest.approx(3 * 40e6 * 250 / 1e9)
    ema_rows = race_table(chosen, ema="0.998", root=tmp_path)
    assert ema_rows[1].accs == {0: pytest.approx(0.898), 1: pytest.approx(0.908), 2: pytest.approx(0.918)}
    assert noise_band(seq) == pytest.approx(2 * math.sqrt(2) * 0.01)


def test_ablations_are_paired_by_seed_and_the_ema_comes_from_the_race_runs(tmp_path):
    for seed, acc in enumerate((0.90, 0.91, 0.92)):
        _write(tmp_path, race_run("sequencer2d_fast28", 4e-3, seed).out, **_run(acc, {"0.998": acc + 0.003}))
    for seed, acc in ((0, 0.89), (1, 0.905)):
        _write(tmp_path, ablation_run("no-smoothing", 4e-3, "off", seed).out, **_run(acc))
    rows = {r.lever: r for r in ablation_table(4e-3, root=tmp_path)}
    assert rows["no-smoothing"].deltas == {0: pytest.approx(-0.01), 1: pytest.approx(-0.005)}
    assert rows["ema 0.998"].mean_delta == pytest.approx(0.003)
    assert "lr-up" not in rows  # not run yet: no row


def test_the_control_model_gets_its_own_paired_table_of_the_chosen_levers_only(tmp_path):
    for seed, acc in enumerate((0.93, 0.932)):
        _write(tmp_path, race_run("small_cnn", 8e-3, seed).out, **_run(acc, {"0.998": acc + 0.003}))
        _write(tmp_path, ablation_run("no-crop-flip", 8e-3, "off", seed, "small_cnn").out, **_run(acc - 0.004))
    _write(tmp_path, ablation_run("no-crop-flip", 4e-3, "off", 0).out, **_run(0.99))  # the Sequencer's: not read
    rows = ablation_table(8e-3, root=tmp_path, model="small_cnn", levers=["no-crop-flip"])
    assert [r.lever for r in rows] == ["no-crop-flip"]  # no EMA row: only the levers asked for
    assert rows[0].deltas == {0: pytest.approx(-0.004), 1: pytest.approx(-0.004)}


def test_final_acc_names_a_missing_ema():
    with pytest.raises(ValueError, match="--ema-probe 0.99"):
        final_acc(_run(0.9, {"0.998": 0.9}), "0.99")


def test_predictions_as_digits_and_back_to_correctness():
    import torch
    from torch import nn

    from sequencer_mini.analysis.experiments import correctness, predict, weight_sets

    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 10))
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].bias.copy_(torch.arange(10.0))  # always class 9
    text = predict(model, torch.zeros(7, 1, 2, 2), batch_size=3)
    assert text == "9" * 7
    right = correctness({0: text, 1: "0" * 7}, torch.tensor([9, 9, 0, 0, 0, 0, 9]))
    assert right.tolist() == [[1, 1, 0, 0, 0, 0, 1], [0, 0, 1, 1, 1, 1, 0]]
    with pytest.raises(ValueError, match="6 predictions for 7"):
        correctness({0: "9" * 6}, torch.zeros(7))
    sets = weight_sets({"model": {"w": 1}, "raw": {"w": 0}, "ema_probes": {"0.998": {"w": 2}}})
    assert sets == {"off": {"w": 0}, "0.998": {"w": 2}}  # the trained weights are "off", wherever they are kept


def test_figures_draw(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from sequencer_mini.analysis.experiments import AblationRow, TuningCurve, plot_ablations, plot_tuning

    curve = TuningCurve("small_cnn", "CNN", 2e-3, {1e-3: 0.90, 2e-3: 0.91, 4e-3: float("-inf")}, {})
    assert curve.interior
    fig = plot_tuning([curve])
    assert fig.axes[0].get_xscale() == "log"
    fig = plot_ablations([AblationRow("no-smoothing", {0: 0.9, 1: 0.91}, {0: -0.01, 1: 0.002})], band=0.004)
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["no-smoothing"]


def _predictions(root: Path, out: str, test: dict[str, str], snapshots: dict[str, str] | None = None) -> None:
    (root / out / "predictions.json").write_text(json.dumps({"test": test, "snapshots": snapshots or {},
                                                             "ema": "off"}))


def test_ablation_intervals_and_race_outcomes_from_predictions(tmp_path):
    import torch

    from sequencer_mini.analysis.experiments import ablation_intervals, race_outcomes, snapshot_curve

    labels = torch.tensor([0, 1] * 200)
    truth = "".join(map(str, labels.tolist()))
    worse = "".join("9" if i % 4 == 0 else c for i, c in enumerate(truth))  # a quarter of the images wrong
    for seed in (0, 1):
        race = race_run("sequencer2d_fast28", 4e-3, seed).out
        _write(tmp_path, race, **_run(1.0))
        _predictions(tmp_path, race, {"off": truth, "0.998": truth}, {"15000": worse, "30000": truth})
        _write(tmp_path, ablation_run("no-crop-flip", 4e-3, "off", seed).out, **_run(0.75))
        _predictions(tmp_path, ablation_run("no-crop-flip", 4e-3, "off", seed).out, {"off": worse})
        _write(tmp_path, ablation_run("lr-up", 4e-3, "off", seed).out, **_run(1.0))
        _predictions(tmp_path, ablation_run("lr-up", 4e-3, "off", seed).out, {"off": truth})
    out = race_outcomes({"sequencer2d_fast28": 4e-3, "small_cnn": 8e-3}, labels, root=tmp_path)
    assert set(out) == {"sequencer2d_fast28"} and out["sequencer2d_fast28"].shape == (2, 400)
    iv = ablation_intervals(4e-3, labels, root=tmp_path, n_boot=200)
    assert iv["no-crop-flip"].estimate == pytest.approx(-0.25) and iv["no-crop-flip"].verdict("positive") == "reversed"
    assert iv["lr-up"].verdict("positive") == "inconclusive"  # identical predictions: a zero-width interval at 0
    assert iv["ema 0.998"].estimate == 0.0 and "no-smoothing" not in iv  # not run: left out
    preds = json.loads((tmp_path / race_run("sequencer2d_fast28", 4e-3, 0).out / "predictions.json").read_text())
    assert snapshot_curve(preds, labels) == {15000: pytest.approx(0.75), 30000: 1.0}


def test_long_table_follows_the_screening(tmp_path):
    from sequencer_mini.analysis.experiments import long_table
    from sequencer_mini.train.protocol import LEVERS, long_run

    chosen = {"sequencer2d_fast28": 4e-3, "small_cnn": 8e-3}
    hist = {"images_seen": [60_000, 120_000], "test_acc": [0.8, 0.9]}
    for recipe in LEVERS:
        acc = 0.93 if recipe == "drop-path" else 0.92
        _write(tmp_path, long_run("sequencer2d_fast28", recipe, 4e-3, "off", 0).out,
               **_run(acc, history=hist, provenance={"device": "cpu X"}))
    search, rows, cnn = long_table(chosen, root=tmp_path)
    assert search.kept == "drop-path" and set(rows) == set(LEVERS) and cnn is None
    assert rows["drop-path"].flags == ("--drop-path", "0.1") and rows["race"].flags == ()
    assert rows["race"].curves == {0: {60_000: 0.8, 120_000: 0.9}}
    _write(tmp_path, long_run("sequencer2d_fast28", "drop-path", 4e-3, "off", 1).out,
           **_run(0.94, history=hist, provenance={"device": "cpu X"}))
    _write(tmp_path, long_run("small_cnn", "race", 8e-3, "off", 0).out,
           **_run(0.935, history=hist, provenance={"device": "cpu X"}))
    search, rows, cnn = long_table(chosen, root=tmp_path)
    assert rows["drop-path"].accs == {0: 0.93, 1: 0.94} and rows["drop-path"].mean == pytest.approx(0.935)
    assert cnn is not None and cnn.accs == {0: 0.935} and search.needed == []


def test_race_and_long_figures_draw():
    import matplotlib

    matplotlib.use("Agg")
    from sequencer_mini.analysis.experiments import LongRow, plot_long, plot_race_curves

    fig = plot_race_curves({"CNN": {0: {1: 0.5, 2: 0.8}, 1: {1: 0.6, 2: 0.9}}})
    assert "mean of 2 seeds" in fig.axes[0].get_legend().get_texts()[0].get_text()
    row = LongRow("race", (), {0: 0.9}, {0: {1: 0.5, 2: 0.9}}, 1, 2, {0: 1.0}, {0: 1.0}, "cpu")
    fig = plot_long([row], goal=0.93)
    assert any("goal 93.0 %" in t.get_text() for t in fig.axes[0].get_legend().get_texts())
    row = LongRow("race", (), {0: 0.9}, {0: {60_000 * k: 0.5 + k / 40 for k in range(1, 17)}}, 1, 960_000,
                  {0: 1.0}, {0: 1.0}, "cpu")
    fig = plot_long([row])
    fig.canvas.draw()
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_xticklabels() if 0 <= t.get_position()[0] <= 960_000]
    assert "200k" in labels and "800k" in labels, labels  # images in words, no "1e6" to multiply back
    assert ax.xaxis.get_offset_text().get_text() == ""


def test_benchmark_speed_and_arithmetic_follow_the_race_settings():
    from sequencer_mini.analysis.experiments import benchmark_images_per_s, ema_lever, training_gmacs_per_s

    speed = {"rows": [{"model": "small_vit", "variant": "bf16", "img_per_s": 70.0, "reference_img_per_s": 100.0},
                      {"model": "small_cnn", "variant": "bf16", "img_per_s": 150.0, "reference_img_per_s": 90.0}]}
    assert benchmark_images_per_s(speed, "small_vit") == 100.0  # the ViT races in float32: the reference
    assert benchmark_images_per_s(speed, "small_cnn") == 150.0  # the CNN races with bfloat16
    with pytest.raises(ValueError, match="no 'bf16' row for sequencer2d_fast28.*cpu_recipe_speed.py"):
        benchmark_images_per_s(speed, "sequencer2d_fast28")
    assert training_gmacs_per_s(40_000_000, 250.0) == pytest.approx(30.0)
    assert ema_lever("off") == ("0.998", "ema 0.998") and ema_lever("0.998") == ("off", "no ema")
