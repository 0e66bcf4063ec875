"""Chapter 10: sequencer_mini.measure.cost, .robustness, .ablations, and bench/findings.py at the ci budget."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import sequencer_mini as sm
from sequencer_mini.analysis import ablations, robustness, trained
from sequencer_mini.core.provenance import read_results
from sequencer_mini.measure import cost
from sequencer_mini.models.baselines import small_vit
from fixtures import load_script

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def one_thread():
    """These tests run tiny models, where a second thread buys nothing and, on a busy shared machine,
    oversubscription can make every operator many times slower; one thread keeps them fast everywhere."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_sequencer() -> sm.Sequencer2D:
    return sm.Sequencer2D(layers=(1,), patch_sizes=(2,), embed_dims=(8,), hidden_sizes=(2,), mlp_ratios=(1.0,),
                          in_chans=1, num_classes=3)


# ----------------------------------------------------------------------------------------------- cost


def test_params_and_macs_of_a_tiny_sequencer_match_the_formula():
    model = tiny_sequencer()
    C, h, tokens = 8, 2, 2 * 2  # a 4×4 input, 2-pixel stem: a 2×2 grid
    stem = tokens * (2 * 2 * 1) * C
    lstm = tokens * 2 * 2 * 4 * h * (C + h)  # 2 branches × 2 directions × 4 gates
    fc, mlp, head = tokens * 4 * h * C, tokens * 2 * C * C, C * 3
    assert sm.count_macs(model, (1, 4, 4)) == stem + lstm + fc + mlp + head
    # FlopCounterMode alone does not see nn.LSTM's fused kernel: exactly the LSTM part is missing
    assert sm.count_macs(model, (1, 4, 4), fused_rnns=False) == stem + fc + mlp + head
    lstm_params = 2 * 2 * (4 * h * (C + h) + 2 * 4 * h)
    expected = (4 * C + C) + 4 * C + lstm_params + (4 * h * C + C) + 2 * (C * C + C) + 2 * C + (3 * C + 3)
    assert cost.param_count(model) == expected == sum(p.numel() for p in model.parameters())


def test_vit_macs_count_attention_products():
    vit = small_vit()  # patch 4, D = 128, 7 blocks, MLP ratio 2
    D, depth = 128, 7
    for side in (28, 56):
        patches = (side // 4) ** 2
        n = patches + 1  # class token
        expected = patches * 16 * D + depth * (n * (3 * D * D + D * D + 2 * 2 * D * D) + 2 * n * n * D) + D * 10
        assert sm.count_macs(vit, (1, side, side)) == expected
        # the ViT has no fused RNN: the count without the RNN hooks is the same (attention included)
        assert sm.count_macs(vit, (1, side, side), fused_rnns=False) == expected


def test_images_per_second_is_positive():
    model = tiny_sequencer()
    for train in (False, True):
        ips = cost.images_per_second(model, (1, 8, 8), 4, train=train, warmup=0, repeats=1)
        assert ips > 0 and math.isfinite(ips)
    assert all(p.grad is None for p in model.parameters())  # no gradient left behind


def test_peak_memory_in_a_fresh_subprocess_is_positive():
    spec = cost.ModelSpec("seq", "sequencer_mini.models.sequencer2d:sequencer2d_mini28")
    result = cost.peak_memory(spec, 32, 2, modes=("train",))
    assert set(result) == {"train"}
    assert result["train"].mib is not None and result["train"].mib > 0 and not result["train"].oom
    assert result["train"].method.startswith("cpu: fresh subprocess")


def test_profile_sweep_rows():
    specs = [cost.ModelSpec("seq", "sequencer_mini.models.sequencer2d:sequencer2d_mini28"),
             cost.ModelSpec("vit", "sequencer_mini.models.baselines:small_vit", sized=True, attention="math")]
    rows = cost.profile_sweep(specs, [8, 16], batch_size=1, repeats=1, warmup=0, memory_modes=())
    assert [(r["model"], r["side"]) for r in rows] == [("seq", 8), ("seq", 16), ("vit", 8), ("vit", 16)]
    for r in rows:
        assert r["macs"] > 0 and r["images_per_s_infer"] > 0 and r["params"] > 0
    seq8, seq16 = rows[0]["macs"], rows[1]["macs"]
    head = 128 * 10  # all but the head is per token: 4× the tokens, 4× the MACs
    assert seq16 - head == 4 * (seq8 - head)


# ----------------------------------------------------------------------------------------------- corruptions


def blobs(n: int = 16, side: int = 28, seed: int = 0) -> torch.Tensor:
    """Synthetic images in [0, 1]: a few bright rectangles on black, as Fashion-MNIST objects."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, 1, side, side)
    for i in range(n):
        for _ in range(3):
            y0, x0 = torch.randint(2, side // 2, (2,), generator=g).tolist()
            hh, ww = torch.randint(4, side // 2, (2,), generator=g).tolist()
            x[i, 0, y0:y0 + hh, x0:x0 + ww] = 0.3 + 0.7 * torch.rand((), generator=g)
    return x


@pytest.mark.parametrize("name", robustness.CORRUPTIONS)
def test_corruptions_are_seeded_and_keep_the_range(name):
    x = blobs()
    a, b = robustness.corrupt(x, name, 3, seed=0), robustness.corrupt(x, name, 3, seed=0)
    assert torch.equal(a, b)
    assert a.shape == x.shape and a.dtype == x.dtype and float(a.min()) >= 0 and float(a.max()) <= 1
    if name in ("gaussian_noise", "elastic", "shift"):  # the random ones
        assert not torch.equal(a, robustness.corrupt(x, name, 3, seed=1))
    assert torch.equal(x, blobs())  # the input is not modified


@pytest.mark.parametrize("name", robustness.CORRUPTIONS)
def test_severity_increases_the_distortion(name):
    x = blobs(32)
    rms = [robustness.distortion(x, robustness.corrupt(x, name, s)) for s in robustness.SEVERITIES]
    assert all(a < b for a, b in itertools.pairwise(rms)), f"{name}: RMS distortion by severity {rms}"
    assert rms[0] > 0


def test_corrupt_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown corruption"):
        robustness.corrupt(blobs(2), "fog", 1)
    with pytest.raises(ValueError, match="severity"):
        robustness.corrupt(blobs(2), "contrast", 6)


def test_corruption_error_is_normalised_by_the_reference():
    ref = {"a": {1: 0.2, 2: 0.4}, "b": {1: 0.1, 2: 0.1}}
    ours = {"a": {1: 0.1, 2: 0.2}, "b": {1: 0.2, 2: 0.2}}
    # Different clean errors (ours 0.02, the reference 0.05), so that swapping the two models' clean errors, or
    # subtracting one model's from both, changes every relative CE.
    out = robustness.corruption_error(ours, ref, clean=0.02, reference_clean=0.05)
    assert out["ce"] == pytest.approx({"a": 0.5, "b": 2.0})
    assert out["mce"] == pytest.approx(1.25)
    relative = {"a": (0.08 + 0.18) / (0.15 + 0.35), "b": (0.18 + 0.18) / (0.05 + 0.05)}  # 0.52 and 3.6
    assert out["relative_ce"] == pytest.approx(relative)
    assert out["relative_mce"] == pytest.approx((relative["a"] + relative["b"]) / 2)
    assert robustness.corruption_error(ref, ref)["mce"] == pytest.approx(1.0)
    assert robustness.corruption_error(ref, ref)["relative_mce"] is None  # no clean errors given


def test_resize_keeps_the_whole_image_and_nearest_valid_size():
    x = torch.rand(2, 1, 28, 28)
    y = robustness.resize_images(x, 56)
    assert y.shape == (2, 1, 56, 56)
    assert torch.allclose(F.avg_pool2d(y, 2).mean(), x.mean(), atol=1e-2)  # same content, nothing cropped
    assert robustness.nearest_valid_size(42, 4) == 44 and robustness.nearest_valid_size(28 * 1.5, 4) == 44
    assert robustness.nearest_valid_size(2, 4) == 4


# ----------------------------------------------------------------------------------------------- ablations


def test_ablation_variants_build_and_have_similar_size():
    base = cost.param_count(ablations.ablation_model("baseline"))
    x = torch.randn(1, 1, 8, 8)
    for name in ablations.ABLATIONS:
        model = ablations.ablation_model(name)
        with torch.no_grad():
            assert model(x).shape == (1, 10)
        assert 0.7 * base < cost.param_count(model) < 1.05 * base, name
    assert (cost.param_count(ablations.ablation_model("vertical_only"))
            == cost.param_count(ablations.ablation_model("vanilla")))


def test_summarize_ablation_pairs_by_seed():
    runs = [{"variant": v, "seed": s, "test_acc": acc, "params": 1, "macs": 1, "wall_s": 1.0}
            for v, accs in {"baseline": (0.80, 0.82, 0.84), "add": (0.79, 0.81, 0.83)}.items()
            for s, acc in enumerate(accs)]
    summary = ablations.summarize_ablation(runs)
    assert summary["baseline"]["mean"] == pytest.approx(0.82)
    assert summary["baseline"]["std"] == pytest.approx(0.02)
    assert summary["add"]["delta_mean"] == pytest.approx(-0.01)
    assert summary["add"]["delta_std"] == pytest.approx(0.0, abs=1e-12)
    assert summary["add"]["within_noise"] is False  # a constant paired difference is not noise


# ----------------------------------------------------------------------------------------------- findings script


def _load_findings():
    return load_script("bench/findings.py")


def test_findings_script_at_ci_writes_valid_results(tmp_path, monkeypatch):
    monkeypatch.setenv("SEQUENCER_BUDGET", "ci")
    monkeypatch.setenv("SEQUENCER_QUIET", "1")
    findings = _load_findings()
    # no race runs under --runs-root: the ci fallback evaluates untrained models (the race's training is chapter 6's
    # test; here the code path that matches snapshots, stores outcomes and computes verdicts)
    written = findings.main(["--budget", "ci", "--out-dir", str(tmp_path), "--variants", "baseline", "gru",
                             "--runs-root", str(tmp_path / "no-runs"), "--cache-dir", str(tmp_path / "cache"),
                             "--quiet"])
    assert set(written) == {"resolution", "corruption", "ablation"}
    for path in written.values():
        data = read_results(path)
        assert data["complete"] is True and data["provenance"]["budget"] == "ci"
        assert {"command", "git_commit", "device", "date"} <= set(data["provenance"])
    res = read_results(written["resolution"])
    assert res["sides"] == [28, 44, 56] and res["conditions"] == ["28", "44", "56"]
    assert set(res["runs"]) == set(trained.LABELS) and res["source"].startswith("FALLBACK")
    for kind in ("matched", "final"):
        for model, by_seed in res["outcomes"][kind].items():
            assert sorted(by_seed) == ["0", "1"], model  # two seeds per model, even in the fallback
            assert all(set(v) <= {"0", "1"} and len(v) == res["n_eval"] == 64 for v in by_seed["0"].values())
    match = res["match"]
    for model, by_seed in match["chosen"].items():
        for seed, ch in by_seed.items():
            assert ch["residual"] == pytest.approx(ch["selection_acc"] - match["target"])
            assert str(ch["images_seen"]) in match["curves"][model][seed]
    assert [c["key"] for c in res["claims"]["matched"]] == ["res_vs_vit", "res_vs_cnn"]
    assert all(c["verdict"] in ("holds", "reversed", "inconclusive") for c in res["claims"]["final"])
    cor = read_results(written["corruption"])
    assert cor["conditions"][0] == "clean" and "contrast/5" in cor["conditions"] and cor["n_eval"] == 16
    assert [c["key"] for c in cor["claims"]["matched"]] == ["mce_vs_vit", "mce_vs_cnn", "rmce_vs_vit"]
    # the claims stored are the claims recomputed from the stored outcomes
    again_claims = [c.to_dict() for c in robustness.claims(cor, "matched")]
    assert again_claims == cor["claims"]["matched"]
    abl = read_results(written["ablation"])
    assert [(r["variant"], r["seed"]) for r in abl["runs"]] == [("baseline", 0), ("gru", 0)]
    assert "delta_mean" in abl["summary"]["gru"]
    # a second call skips the finished parts instead of recomputing them
    again = findings.main(["--budget", "ci", "--out-dir", str(tmp_path), "--part", "ablation", "--quiet"])
    assert read_results(again["ablation"])["provenance"]["date"] == abl["provenance"]["date"]


def test_undefined_corruption_ratios_are_null_not_nan():
    """A reference with no error (a few test images) leaves a ratio undefined: null in JSON, left out of the mean."""
    from sequencer_mini.analysis import robustness

    out = robustness.corruption_error({"a": {1: 0.2}, "b": {1: 0.3}}, {"a": {1: 0.0}, "b": {1: 0.6}},
                                      clean=0.1, reference_clean=0.1)
    assert out["ce"] == {"a": None, "b": pytest.approx(0.5)} and out["mce"] == pytest.approx(0.5)
    assert out["relative_ce"]["a"] is None and out["relative_mce"] == pytest.approx(0.4)
