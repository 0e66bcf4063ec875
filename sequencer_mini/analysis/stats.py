"""Chapters 6, 9 and 10: intervals over seeds and test images, and the verdicts they support.

A difference between two trained models has two sources of chance: which test images were drawn (a few hundred
images give a binomial error of a point or more) and which seed trained the model (two seeds of the same recipe
differed by 1.2 points in chapter 10's first version). One seed hides the second source entirely. So every
comparison here is a **hierarchical bootstrap**: each replicate draws the test images with replacement (the same
draw for every model: the comparison is paired on images) and, for each model, its seeds with replacement, and
recomputes the statistic. The percentile interval of the replicates is the interval, and a claim is judged by it:

* ``holds``: the whole interval lies on the side the claim predicts;
* ``reversed``: the whole interval lies on the other side;
* ``inconclusive``: the interval contains zero (or the claim's threshold).

With one seed the seed draw is constant, so the interval covers only the images: :class:`Interval` records how
many seeds went in, and the book prints it beside every verdict.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Literal

import torch
from torch import Tensor

__all__ = ["Interval", "bootstrap", "mean_difference", "verdict", "Verdict", "Match", "match_snapshots"]

Verdict = Literal["holds", "reversed", "inconclusive"]


@dataclass(frozen=True)
class Interval:
    """A statistic's value on all the data and its bootstrap percentile interval."""

    estimate: float
    low: float
    high: float
    level: float       # e.g. 0.95
    n_boot: int
    seeds: dict[str, int]  # model -> seeds that went in
    n_images: int

    def verdict(self, expected: Literal["positive", "negative"], threshold: float = 0.0) -> Verdict:
        """Judge the claim "the statistic is above ``threshold``" (``positive``) or below it (``negative``)."""
        return verdict(self.low, self.high, expected, threshold)

    def to_dict(self) -> dict:
        return asdict(self)


def verdict(low: float, high: float, expected: Literal["positive", "negative"], threshold: float = 0.0) -> Verdict:
    """``holds`` / ``reversed`` / ``inconclusive`` for an interval ``[low, high]`` and a claimed side."""
    if expected not in ("positive", "negative"):
        raise ValueError(f"expected must be 'positive' or 'negative', got {expected!r}")
    if not low <= high:
        raise ValueError(f"need low <= high, got [{low}, {high}]")
    above, below = low > threshold, high < threshold
    if not (above or below):
        return "inconclusive"
    return "holds" if above == (expected == "positive") else "reversed"


def _check(outcomes: Mapping[str, Tensor]) -> int:
    """The number of test images, after checking that every model has (seeds, images, ...) on the same images."""
    if not outcomes:
        raise ValueError("expected outcomes for at least one model, got none")
    n = None
    for name, t in outcomes.items():
        if not isinstance(t, Tensor) or t.ndim < 2 or t.shape[0] < 1 or t.shape[1] < 1:
            shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"{name}: expected a tensor (seeds, images, ...) with at least one seed and one image, "
                             f"got {shape}")
        if not bool(torch.isfinite(t.double()).all()):
            raise ValueError(f"{name}: outcomes hold NaN or infinity")
        if n is not None and t.shape[1] != n:
            raise ValueError(f"{name}: {t.shape[1]} test images, the others {n}: a paired comparison needs the same "
                             f"images for every model")
        n = t.shape[1]
    assert n is not None
    return n


def bootstrap(outcomes: Mapping[str, Tensor], statistic: Callable[[Mapping[str, Tensor]], float], *,
              n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> Interval:
    """Hierarchical bootstrap of ``statistic`` over test images (paired across models) and each model's seeds.

    ``outcomes[model]``: ``(seeds, images, ...)``, e.g. 1.0/0.0 for right/wrong per seed and test image, or
    ``(seeds, images, corruptions, severities)``. ``statistic`` receives, per model, the mean over the drawn seeds,
    ``(images, ...)``, and returns a number (e.g. the difference of two models' accuracies)."""
    n = _check(outcomes)
    if n_boot < 1 or not 0 < level < 1:
        raise ValueError(f"need n_boot >= 1 and level in (0, 1), got n_boot={n_boot}, level={level}")
    data = {k: v.double() for k, v in outcomes.items()}
    estimate = float(statistic({k: v.mean(0) for k, v in data.items()}))
    g = torch.Generator().manual_seed(seed)
    values = torch.empty(n_boot, dtype=torch.float64)
    for b in range(n_boot):
        images = torch.randint(0, n, (n,), generator=g)
        drawn = {}
        for k, v in data.items():
            seeds = torch.randint(0, v.shape[0], (v.shape[0],), generator=g)
            drawn[k] = v[seeds][:, images].mean(0)
        values[b] = float(statistic(drawn))
    alpha = (1 - level) / 2
    low, high = torch.quantile(values, torch.tensor([alpha, 1 - alpha], dtype=torch.float64)).tolist()
    return Interval(estimate, low, high, level, n_boot, {k: int(v.shape[0]) for k, v in data.items()}, n)


def mean_difference(a: str, b: str) -> Callable[[Mapping[str, Tensor]], float]:
    """The statistic "mean outcome of ``a`` minus mean outcome of ``b``" (e.g. an accuracy difference)."""
    def stat(drawn: Mapping[str, Tensor]) -> float:
        return float(drawn[a].mean() - drawn[b].mean())
    stat.__name__ = f"mean({a}) - mean({b})"
    return stat


@dataclass(frozen=True)
class Match:
    """Chapter 10's matched checkpoints: per (model, seed), the snapshot whose selection-half accuracy is closest
    to a common target, and how far it is from it."""

    target: float
    tolerance: float
    chosen: dict[tuple[str, int], tuple[int, float]]  # (model, seed) -> (images seen, selection accuracy)

    @property
    def residuals(self) -> dict[tuple[str, int], float]:
        """Selection accuracy minus the target, per (model, seed)."""
        return {k: acc - self.target for k, (_, acc) in self.chosen.items()}

    @property
    def within(self) -> bool:
        """Every chosen snapshot lies within the tolerance of the target."""
        return all(abs(r) <= self.tolerance + 1e-12 for r in self.residuals.values())


def match_snapshots(curves: Mapping[tuple[str, int], Mapping[int, float]], tolerance: float = 0.005) -> Match:
    """Pick, for each run, the snapshot (images seen -> selection-half accuracy) closest to a common target.

    The target is the **highest** accuracy, among those the snapshots reached and at most the smallest of the runs'
    best (a level every run attains), at which every run has a snapshot within ``tolerance`` (0.5 points by
    default). A run that jumps past a level between two snapshots cannot match it, so the target moves down until
    all can; when no level works, the target is the one with the smallest largest residual (ties: the higher).
    Ties between snapshots go to the earlier one. The chapter prints the residuals either way."""
    if not curves or any(not c for c in curves.values()):
        empty = [k for k, c in curves.items() if not c]
        raise ValueError(f"every run needs at least one snapshot accuracy; none for {empty or 'any run'}")
    ceiling = min(max(c.values()) for c in curves.values())

    def picks(target: float) -> dict[tuple[str, int], tuple[int, float]]:
        out = {}
        for key, curve in curves.items():
            images = min(curve, key=lambda n: (abs(curve[n] - target), n))
            out[key] = (images, curve[images])
        return out

    def worst(target: float) -> float:
        return max(abs(acc - target) for _, acc in picks(target).values())

    levels = sorted({a for c in curves.values() for a in c.values() if a <= ceiling}, reverse=True)
    feasible = [t for t in levels if worst(t) <= tolerance + 1e-12]
    target = feasible[0] if feasible else min(levels, key=lambda t: (worst(t), -t))
    return Match(target, tolerance, picks(target))
