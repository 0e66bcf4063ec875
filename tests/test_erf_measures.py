"""The continuous ERF spread measures of chapter 9 and the cross share's uniform baseline."""
from __future__ import annotations

import math

import pytest
import torch

from sequencer_mini.analysis.erf import (
    area_ratios,
    cross_share,
    effective_area,
    mass_radius,
    uniform_cross_share,
)


def test_mass_radius_of_a_point_and_of_a_ring():
    point = torch.zeros(9, 9)
    point[4, 4] = 1.0
    assert mass_radius(point, (4, 4)) == 0.0
    line = torch.zeros(1, 7)  # half the mass at the centre, a quarter at each end (distance 3)
    line[0, 3], line[0, 0], line[0, 6] = 0.5, 0.25, 0.25
    assert mass_radius(line, (0, 3), 0.5) == 0.0
    assert mass_radius(line, (0, 3), 0.75) == pytest.approx(2.5)  # the curve rises from 0.5 at 2 to 1.0 at 3
    assert mass_radius(line, (0, 3), 1.0) == pytest.approx(3.0)


def test_mass_radius_separates_maps_that_share_an_a50():
    """A_50 moves in odd-square steps; the radius does not."""
    yy, xx = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    r2 = (yy - 14) ** 2 + (xx - 14) ** 2
    narrow, wide = torch.exp(-r2 / (2 * 3.0 ** 2)), torch.exp(-r2 / (2 * 3.3 ** 2))
    assert area_ratios(narrow, (14, 14), (0.5,)) == area_ratios(wide, (14, 14), (0.5,))
    assert mass_radius(narrow, (14, 14)) < mass_radius(wide, (14, 14))
    # a 2-D Gaussian holds half its mass within sigma * sqrt(2 ln 2)
    assert mass_radius(narrow, (14, 14)) == pytest.approx(3.0 * math.sqrt(2 * math.log(2)), rel=0.08)


def test_effective_area_bounds():
    point = torch.zeros(6, 6)
    point[2, 3] = 5.0
    assert effective_area(point) == pytest.approx(1 / 36)
    assert effective_area(torch.ones(6, 6)) == pytest.approx(1.0)
    half = torch.zeros(6, 6)
    half[:3] = 1.0
    assert effective_area(half) == pytest.approx(0.5)
    assert math.isnan(effective_area(torch.zeros(3, 3)))


def test_uniform_cross_share_is_the_cross_pixel_fraction():
    rows, cols = (12, 16), (12, 16)  # a 4-pixel band each way on 28 px: (2*4*28 - 16) / 784
    assert uniform_cross_share((28, 28), rows, cols) == pytest.approx((2 * 4 * 28 - 16) / 784)
    assert cross_share(torch.ones(28, 28), rows, cols) == uniform_cross_share((28, 28), rows, cols)


def test_measures_refuse_bad_maps():
    with pytest.raises(ValueError, match="finite"):
        mass_radius(torch.full((3, 3), math.nan), (1, 1))
    with pytest.raises(ValueError, match="share"):
        mass_radius(torch.ones(3, 3), (1, 1), share=0.0)
    with pytest.raises(ValueError, match="empty"):
        effective_area(torch.zeros(0, 3))


def test_erf_objects_carry_the_spread_measures():
    from sequencer_mini import Sequencer2D
    from sequencer_mini.analysis.erf import effective_receptive_field

    torch.manual_seed(0)
    model = Sequencer2D(layers=(1,), patch_sizes=(1,), embed_dims=(8,), hidden_sizes=(2,), mlp_ratios=(2.0,),
                        in_chans=1, num_classes=3)
    erf = effective_receptive_field(model, torch.randn(2, 1, 9, 9), "stages.0.blocks.0", centre="exact")
    assert erf.cross_share == pytest.approx(1.0)  # one BiLSTM2D layer: an exact cross
    assert erf.uniform_cross_share == pytest.approx(17 / 81)  # one row + one column of a 9 x 9 image
    assert 0 <= erf.radius50 < 9 and 0 < erf.effective_area <= 17 / 81 + 1e-9  # all mass on the 17 cross pixels
