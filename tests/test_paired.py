"""Paired differences over seeds: the interval arithmetic against values computed by hand."""

from __future__ import annotations

import math

import pytest

from seg.analysis.paired import paired_difference, t95


def test_four_seeds_one_ahead_by_hand():
    # differences 0.02, 0.03, 0.04, 0.05: mean 0.035; sd = sqrt(0.0005 / 3) = 0.0129099; se = sd / 2 = 0.0064550;
    # t(0.975, 3) = 3.182, so the half-width is 0.0205397 and the interval [0.0144603, 0.0555397]
    a = {"1": 0.52, "2": 0.53, "3": 0.54, "4": 0.55, "5": 0.9}  # seed 5 has no partner: left out
    b = {"1": 0.50, "2": 0.50, "3": 0.50, "4": 0.50}
    d = paired_difference(a, b)
    assert d.n == 4 and d.mean == pytest.approx(0.035)
    assert (d.low, d.high) == (pytest.approx(0.0144603, abs=1e-7), pytest.approx(0.0555397, abs=1e-7))
    assert (d.positive, d.negative, d.shown, d.reading) == (4, 0, True, "A ahead")
    assert paired_difference(b, a).reading == "B ahead"


def test_two_seeds_of_the_camvid_study_show_nothing():
    # docs/results.md: OS 16 beat OS 32 by +0.012 and +0.030. mean 0.021, sd 0.0127279, se 0.009, t(1) 12.706:
    # half-width 0.114354, interval [-0.093354, 0.135354]: it spans zero
    d = paired_difference({"1": 0.435, "2": 0.401}, {"1": 0.423, "2": 0.371})
    assert d.mean == pytest.approx(0.021) and d.low == pytest.approx(-0.093354, abs=1e-6)
    assert d.high == pytest.approx(0.135354, abs=1e-6) and (d.positive, d.negative) == (2, 0)
    assert not d.shown and d.reading == "not shown"


def test_one_pair_no_pair_and_failed_runs():
    one = paired_difference({"1": 0.6, "2": math.nan}, {"1": 0.5, "2": 0.4})  # seed 2 of A failed (NaN)
    assert one.n == 1 and one.mean == pytest.approx(0.1) and math.isnan(one.low) and not one.shown
    none = paired_difference({"1": 0.6}, {"2": 0.5})
    assert none.n == 0 and none.reading == "no pairs"


def test_t_critical_values():
    assert t95(1) == 12.706 and t95(4) == 2.776 and t95(30) == 2.042
    assert t95(40) == pytest.approx(2.021, abs=0.002) and t95(120) == pytest.approx(1.980, abs=0.002)
    with pytest.raises(ValueError, match="degrees of freedom must be >= 1"):
        t95(0)
