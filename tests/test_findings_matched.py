"""Chapter 10, matched for real: snapshot matching, per-image outcomes, intervals over seeds and images, verdicts."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sequencer_mini.analysis import robustness
from sequencer_mini.analysis.stats import match_snapshots
from fixtures import load_script

ROOT = Path(__file__).resolve().parent.parent
SEQ, CNN, VIT = "sequencer2d_fast28", "small_cnn", "small_vit"


@pytest.fixture(autouse=True)
def one_thread():
    """Small tensors: a second thread buys nothing and, on a busy machine, oversubscription slows every operator."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def bits(p: float, n: int, seed: int) -> str:
    """n outcomes of which exactly round(p n) are right, in a seeded random order."""
    g = torch.Generator().manual_seed(seed)
    right = torch.zeros(n, dtype=torch.bool)
    right[torch.randperm(n, generator=g)[:round(p * n)]] = True
    return "".join("1" if v else "0" for v in right.tolist())


def resolution_data(acc: dict[str, tuple[float, float]], seeds: int = 2, n: int = 2000) -> dict:
    """Stored outcomes of a resolution experiment: per model, accuracy at 28 and 56 px, for every seed."""
    outcomes = {m: {str(s): {"28": bits(a28, n, 10 * s + i), "56": bits(a56, n, 100 + 10 * s + i)}
                    for s in range(seeds)} for i, (m, (a28, a56)) in enumerate(acc.items())}
    return {"experiment": "resolution", "conditions": ["28", "56"], "outcomes": {"matched": outcomes}}


def verdicts(data: dict) -> dict[str, str]:
    return {c.key: c.verdict for c in robustness.claims(data, "matched", n_boot=300)}


def test_a_resolution_claim_that_holds_one_reversed_and_one_inconclusive():
    # the Sequencer loses 10 points, the ViT 30 (holds); the CNN loses nothing (reversed)
    v = verdicts(resolution_data({SEQ: (0.9, 0.8), VIT: (0.9, 0.6), CNN: (0.9, 0.9)}))
    assert v == {"res_vs_vit": "holds", "res_vs_cnn": "reversed"}
    # the same drop for all three: the interval contains zero
    v = verdicts(resolution_data({SEQ: (0.9, 0.8), VIT: (0.9, 0.8), CNN: (0.9, 0.8)}))
    assert v == {"res_vs_vit": "inconclusive", "res_vs_cnn": "inconclusive"}


def test_the_interval_reflects_the_stored_drops_and_counts_seeds_and_images():
    data = resolution_data({SEQ: (0.9, 0.85), VIT: (0.9, 0.7), CNN: (0.9, 0.8)}, seeds=3, n=3000)
    res = {c.key: c for c in robustness.claims(data, "matched", n_boot=300)}["res_vs_vit"]
    assert res.interval.estimate == pytest.approx(-15, abs=2)  # 5 points lost minus 20, in points
    assert res.interval.low < res.interval.estimate < res.interval.high
    assert res.interval.seeds == {SEQ: 3, VIT: 3, CNN: 3} and res.interval.n_images == 3000


def corruption_data(errors: dict[str, tuple[float, float]], n: int = 1500) -> dict:
    """Per model (clean error, corrupted error) for one corruption at severity 1, two seeds."""
    conds = ["clean", "contrast/1"]
    outcomes = {m: {str(s): {"clean": bits(1 - e0, n, 10 * s + i), "contrast/1": bits(1 - e1, n, 50 + 10 * s + i)}
                    for s in range(2)} for i, (m, (e0, e1)) in enumerate(errors.items())}
    return {"experiment": "corruption", "conditions": conds, "outcomes": {"matched": outcomes}}


def test_corruption_claims_holds_reversed_inconclusive():
    # the Sequencer errs 20 % corrupted, the CNN 40 %, the ViT 60 %: mCE 50 % (holds against both)
    v = verdicts(corruption_data({SEQ: (0.1, 0.2), CNN: (0.1, 0.4), VIT: (0.1, 0.6)}))
    assert v == {"mce_vs_vit": "holds", "mce_vs_cnn": "holds", "rmce_vs_vit": "holds"}
    v = verdicts(corruption_data({SEQ: (0.1, 0.6), CNN: (0.1, 0.4), VIT: (0.1, 0.2)}))
    assert v == {"mce_vs_vit": "reversed", "mce_vs_cnn": "reversed", "rmce_vs_vit": "reversed"}
    v = verdicts(corruption_data({SEQ: (0.1, 0.4), CNN: (0.1, 0.4), VIT: (0.1, 0.4)}))
    assert v == {"mce_vs_vit": "inconclusive", "mce_vs_cnn": "inconclusive", "rmce_vs_vit": "inconclusive"}


def test_mce_statistic_matches_corruption_error():
    data = corruption_data({SEQ: (0.1, 0.3), CNN: (0.2, 0.5), VIT: (0.1, 0.6)}, n=400)
    tensors = robustness.outcome_tensors(data["outcomes"]["matched"], data["conditions"])
    means = {m: t.mean(0) for m, t in tensors.items()}
    err = {m: 1 - means[m].mean(0) for m in means}  # (conditions,)
    ref = robustness.corruption_error({"contrast": {1: float(err[SEQ][1])}}, {"contrast": {1: float(err[CNN][1])}},
                                      float(err[SEQ][0]), float(err[CNN][0]))
    stat = robustness.mce_statistic(SEQ, CNN, data["conditions"])
    assert stat(means) == pytest.approx(100 * ref["mce"])
    rel = robustness.mce_statistic(SEQ, CNN, data["conditions"], relative=True)
    assert rel(means) == pytest.approx(100 * ref["relative_mce"])


def test_outcome_strings_round_trip_and_accuracies():
    out = {SEQ: {"0": {"28": "1101", "56": "0001"}, "1": {"28": "1111", "56": "0000"}}}
    t = robustness.outcome_tensors(out, ["28", "56"])[SEQ]
    assert t.shape == (2, 4, 2) and t[0, :, 0].tolist() == [1, 1, 0, 1] and t[1, :, 1].sum() == 0
    assert robustness.accuracies(out)[SEQ]["0"] == {"28": 0.75, "56": 0.25}
    with pytest.raises(ValueError, match="conditions"):
        robustness.outcome_tensors(out, ["28", "44"])


def test_the_match_residual_is_the_distance_to_the_common_target():
    curves = {(SEQ, 0): {14976: 0.80, 29952: 0.852, 45056: 0.88}, (VIT, 0): {14976: 0.70, 29952: 0.855},
              (CNN, 0): {14976: 0.849, 29952: 0.91}}
    m = match_snapshots(curves)
    # 0.855 (the ViT's best) would leave the CNN 0.6 points away: the highest level all match within 0.5 is 0.852
    assert m.target == pytest.approx(0.852) and m.within
    assert m.chosen[(SEQ, 0)] == (29952, 0.852) and m.chosen[(CNN, 0)] == (14976, 0.849)
    assert m.residuals[(CNN, 0)] == pytest.approx(-0.003) and m.residuals[(VIT, 0)] == pytest.approx(0.003)


def test_a_run_that_jumps_past_the_target_moves_it_down():
    """As the CNN's seed 1 did (79.4 % then 89.8 % one quarter pass later): the level every run can match."""
    curves = {(CNN, 1): {14976: 0.794, 29952: 0.898}, (VIT, 1): {14976: 0.70, 29952: 0.79, 45056: 0.835},
              (SEQ, 1): {14976: 0.797, 29952: 0.84}}
    m = match_snapshots(curves)
    assert m.target == pytest.approx(0.794) and m.within  # at 0.797 the ViT (0.79) would be 0.7 points off
    assert max(abs(r) for r in m.residuals.values()) <= 0.005
    none = match_snapshots({(CNN, 1): {1: 0.70, 2: 0.90}, (VIT, 1): {1: 0.80}})
    assert not none.within and none.target == pytest.approx(0.80)  # nothing fits: the smallest worst residual


def test_fewer_than_two_seeds_are_refused_naming_the_missing_runs_and_the_command():
    missing = {VIT: ["book/results/fmnist-race240k-small_vit-s1 (not finished)"]}
    with pytest.raises(ValueError) as err:
        robustness.require_seeds({SEQ: [0, 1], VIT: [0]}, 2, missing)
    text = str(err.value)
    assert "small_vit: 1 finished seed(s) [0]" in text and "fmnist-race240k-small_vit-s1" in text
    assert "python bench/experiments.py run" in text and "sequencer2d_fast28" not in text
    data = resolution_data({SEQ: (0.9, 0.8), VIT: (0.9, 0.8), CNN: (0.9, 0.8)}, seeds=1, n=50)
    with pytest.raises(ValueError, match="at least 2 seeds"):
        robustness.claims(data, "matched", n_boot=10, minimum_seeds=2)


def _load_findings():
    return load_script("bench/findings.py")


def test_race_checkpoints_find_finished_runs_with_snapshots(tmp_path):
    """A fake results tree: the ViT has one finished seed with its snapshots; everything else is missing."""
    from sequencer_mini.train.protocol import TUNE_DIR, race_run

    lrs = {VIT: 0.002, SEQ: 0.004, CNN: 0.008}
    (tmp_path / TUNE_DIR).mkdir(parents=True)
    (tmp_path / TUNE_DIR / "choice.json").write_text(json.dumps({"chosen_lr": lrs, "ema": "off"}))
    run = tmp_path / race_run(VIT, 0.002, 0).out
    (run / "snapshots").mkdir(parents=True)
    for n in (14976, 29952):
        (run / "snapshots" / f"{n:07d}.pt").write_bytes(b"")
    (run / "final.pt").write_bytes(b"")
    (run / "results.json").write_text(json.dumps({"complete": True, "images_seen": 240000}))
    findings = _load_findings()
    runs, missing, got_lrs = findings.race_checkpoints(tmp_path, None)
    assert got_lrs == lrs and [(r.model, r.seed, sorted(r.snapshots)) for r in runs] == [(VIT, 0, [14976, 29952])]
    assert missing[VIT] == [f"{race_run(VIT, 0.002, s).out} (not finished)" for s in (1, 2)]
    with pytest.raises(ValueError, match="python bench/experiments.py run"):
        findings.main(["--budget", "ci", "--part", "resolution", "--runs-root", str(tmp_path), "--fallback",
                       "error", "--out-dir", str(tmp_path / "out"), "--quiet"])


def _fake_race(tmp_path, model, seed, snaps: dict[int, float], replay: dict[int, float] | None = None):
    """A finished race run of ``model`` (and its replayed first pass) whose snapshot files hold one weight each."""
    from sequencer_mini.train.protocol import TUNE_DIR, race_run, replay_run

    lrs = {VIT: 0.002, SEQ: 0.004, CNN: 0.008}
    (tmp_path / TUNE_DIR).mkdir(parents=True, exist_ok=True)
    (tmp_path / TUNE_DIR / "choice.json").write_text(json.dumps({"chosen_lr": lrs, "ema": "off"}))
    for run, values, results in ((race_run(model, lrs[model], seed), snaps, {"complete": True, "images_seen": 240000}),
                                 (replay_run(model, lrs[model], seed), replay, {"complete": False,
                                                                                "epochs_completed": 1})):
        if values is None:
            continue
        folder = tmp_path / run.out
        (folder / "snapshots").mkdir(parents=True)
        for n, w in values.items():
            torch.save({"model": {"w": torch.tensor([w])}}, folder / "snapshots" / f"{n:07d}.pt")
        if results["complete"]:
            torch.save({"model": {"w": torch.tensor([9.0])}}, folder / "final.pt")
        (folder / "results.json").write_text(json.dumps(results))


def test_a_replayed_first_pass_adds_its_denser_snapshots_after_a_check(tmp_path):
    """The replay's snapshots join the race run's where the two hold the same weights at the images they share;
    a replay that differs there is another computation and is refused, naming both files."""
    from sequencer_mini.train.protocol import replay_run

    findings = _load_findings()
    _fake_race(tmp_path, CNN, 0, {100: 1.0, 200: 2.0, 300: 3.0}, replay={50: 0.5, 100: 1.0, 150: 1.5, 200: 2.0})
    runs, _, _ = findings.race_checkpoints(tmp_path, [0])
    (cnn,) = [r for r in runs if r.model == CNN]
    assert sorted(cnn.snapshots) == [50, 100, 150, 200, 300] and cnn.replay == replay_run(CNN, 0.008, 0).out
    assert cnn.snapshots[100].parent.parent.name == Path(cnn.run).name  # shared images: the race's own file
    assert cnn.snapshots[50].parent.parent.name == Path(cnn.replay).name
    torch.save({"model": {"w": torch.tensor([1.25])}}, tmp_path / cnn.replay / "snapshots" / "0000100.pt")
    with pytest.raises(ValueError, match=r"0000100\.pt differs from the race run's snapshot at 100 images"):
        findings.race_checkpoints(tmp_path, [0])


def test_a_replay_is_used_only_for_the_models_it_is_planned_for_and_once_its_pass_is_done(tmp_path):
    from sequencer_mini.train.protocol import replay_run

    findings = _load_findings()
    _fake_race(tmp_path, SEQ, 0, {100: 1.0, 200: 2.0}, replay={50: 0.5, 100: 1.0})
    results = tmp_path / replay_run(SEQ, 0.004, 0).out / "results.json"
    results.write_text(json.dumps({"complete": False, "epochs_completed": 0}))  # killed before its pass ended
    (seq,) = findings.race_checkpoints(tmp_path, [0])[0]
    assert sorted(seq.snapshots) == [100, 200] and seq.replay is None
    _fake_race(tmp_path, VIT, 0, {100: 1.0, 200: 2.0}, replay={50: 0.5, 100: 1.0})  # no replay is planned for it
    (vit,) = [r for r in findings.race_checkpoints(tmp_path, [0])[0] if r.model == VIT]
    assert sorted(vit.snapshots) == [100, 200] and vit.replay is None
