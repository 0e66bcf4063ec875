"""analysis.stats: the hierarchical bootstrap and the verdicts read from its intervals."""
from __future__ import annotations

import pytest
import torch

from sequencer_mini.analysis.stats import bootstrap, mean_difference, verdict


def _correct(p: float, seeds: int, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(seeds, n, generator=g) < p).double()


def test_verdicts():
    assert verdict(0.1, 0.3, "positive") == "holds"
    assert verdict(0.1, 0.3, "negative") == "reversed"
    assert verdict(-0.1, 0.3, "positive") == "inconclusive"
    assert verdict(-0.3, -0.1, "negative") == "holds"
    assert verdict(1.1, 1.3, "positive", threshold=1.0) == "holds"
    with pytest.raises(ValueError, match="low <= high"):
        verdict(0.3, 0.1, "positive")
    with pytest.raises(ValueError, match="positive"):
        verdict(0.1, 0.3, "up")  # type: ignore[arg-type]


def test_a_clear_difference_holds_and_a_null_one_is_inconclusive():
    big = {"a": _correct(0.92, 3, 2000, 0), "b": _correct(0.80, 3, 2000, 1)}
    iv = bootstrap(big, mean_difference("a", "b"), n_boot=300)
    assert iv.low > 0.08 and iv.high < 0.16 and iv.verdict("positive") == "holds"
    assert iv.seeds == {"a": 3, "b": 3} and iv.n_images == 2000
    null = {"a": _correct(0.9, 3, 500, 2), "b": _correct(0.9, 3, 500, 3)}
    assert bootstrap(null, mean_difference("a", "b"), n_boot=300).verdict("positive") == "inconclusive"


def test_seed_spread_widens_the_interval():
    """Two seeds that disagree by 4 points: the interval must be wider than the images alone allow."""
    n = 4000
    steady = torch.stack([_correct(0.90, 1, n, 5)[0]] * 2)
    shaky = torch.stack([_correct(0.88, 1, n, 6)[0], _correct(0.92, 1, n, 7)[0]])
    ref = _correct(0.90, 2, n, 8)
    narrow = bootstrap({"m": steady, "r": ref}, mean_difference("m", "r"), n_boot=400)
    wide = bootstrap({"m": shaky, "r": ref}, mean_difference("m", "r"), n_boot=400)
    assert (wide.high - wide.low) > 1.5 * (narrow.high - narrow.low)


def test_the_estimate_uses_every_seed_and_image_and_the_draw_is_seeded():
    out = {"a": torch.tensor([[1.0, 0.0], [1.0, 1.0]]), "b": torch.tensor([[0.0, 0.0]])}
    iv = bootstrap(out, mean_difference("a", "b"), n_boot=50, seed=3)
    assert iv.estimate == pytest.approx(0.75)
    assert iv == bootstrap(out, mean_difference("a", "b"), n_boot=50, seed=3)


def test_bad_outcomes_are_refused_by_name():
    with pytest.raises(ValueError, match="same images"):
        bootstrap({"a": torch.ones(2, 10), "b": torch.ones(2, 11)}, mean_difference("a", "b"))
    with pytest.raises(ValueError, match="b: expected a tensor"):
        bootstrap({"a": torch.ones(2, 10), "b": torch.ones(10)}, mean_difference("a", "b"))
    with pytest.raises(ValueError, match="NaN"):
        bootstrap({"a": torch.full((1, 3), float("nan"))}, lambda d: 0.0)


def test_matched_snapshots_within_half_a_point():
    from sequencer_mini.analysis.stats import match_snapshots

    curves = {("seq", 0): {15000: 0.80, 30000: 0.85, 45000: 0.872, 60000: 0.88},
              ("cnn", 0): {15000: 0.84, 30000: 0.874, 45000: 0.90, 60000: 0.92},
              ("seq", 1): {15000: 0.79, 30000: 0.86, 45000: 0.875}}
    m = match_snapshots(curves)
    assert m.target == 0.875  # the smallest best: seq seed 1 reaches no higher
    assert m.chosen[("seq", 0)] == (45000, 0.872) and m.chosen[("cnn", 0)] == (30000, 0.874)
    assert m.within and max(abs(r) for r in m.residuals.values()) == pytest.approx(0.003)
    coarse = match_snapshots({("a", 0): {1: 0.80, 2: 0.90}, ("b", 0): {1: 0.85}})
    assert not coarse.within and coarse.residuals[("a", 0)] == pytest.approx(-0.05)  # 0.80 is the closer one
    with pytest.raises(ValueError, match="snapshot"):
        match_snapshots({("a", 0): {}})
