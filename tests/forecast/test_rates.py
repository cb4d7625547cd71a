"""Click and conversion rates: beta shrinkage worked by hand, empirical-Bayes strength,
per-request rates that follow the measured differences and add up to what was measured."""

from __future__ import annotations

import numpy as np
import pytest
from forecast_fixtures import small_table

from backbeat.forecast.rates import MAX_STRENGTH, fit_rates, prior_strength, shrink


def test_shrinkage_by_hand():
    # 2 clicks in 10 impressions, prior mean 10% worth 10 impressions: (2 + 1) / (10 + 10).
    assert shrink(np.array([2]), np.array([10]), 0.1, 10.0)[0] == pytest.approx(0.15)
    # No data: the prior mean. Much data: close to the data.
    assert shrink(np.array([0]), np.array([0]), 0.02, 50.0)[0] == pytest.approx(0.02)
    assert shrink(np.array([300]), np.array([10_000]), 0.02, 50.0)[0] == pytest.approx(
        (300 + 1) / 10_050
    )


def test_prior_strength_by_the_method_of_moments():
    # Two cells of 1,000 impressions at 1% and 3%: mean 2%, observed variance 1e-4,
    # binomial noise 0.02 * 0.98 / 1000 = 1.96e-5, so the prior variance is 8.04e-5 and
    # strength = 0.02 * 0.98 / 8.04e-5 - 1.
    strength = prior_strength(np.array([10, 30]), np.array([1000, 1000]))
    assert strength == pytest.approx(0.0196 / 8.04e-5 - 1, rel=1e-6)
    # Cells that differ only by noise pool completely.
    assert prior_strength(np.array([20, 20]), np.array([1000, 1000])) == MAX_STRENGTH


def test_rates_follow_devices_and_add_up_to_the_measured_clicks():
    table = small_table()
    model = fit_rates(table, table, "click")
    shown = table.outcomes["impression"]
    clicks = table.outcomes["click"] & shown
    assert model.outcomes == int(clicks.sum())
    assert model.rate[shown].sum() == pytest.approx(clicks.sum(), rel=1e-6)
    devices = table.single["devices"]
    mobile = devices == table.vocab["devices"].codes["mobile"]
    speaker = devices == table.vocab["devices"].codes["smart_speaker"]
    # The synthetic log clicks ten times less on smart speakers; with a few clicks there,
    # the speaker rate is shrunk toward the overall rate but stays well below mobile.
    assert model.rate[mobile].mean() > 2.5 * model.rate[speaker].mean()
    raw = clicks[speaker].sum() / shown[speaker].sum()
    overall = clicks.sum() / shown.sum()
    assert raw < model.rate[speaker & shown].mean() < overall
    # Thin cells are pulled toward the overall rate, never to an extreme.
    assert model.rate.max() < 10 * model.overall


def test_no_measured_impressions_means_zero_rates():
    table = small_table()
    empty = table.take(np.arange(100))
    empty.outcomes = {}
    model = fit_rates(empty, empty, "click")
    assert model.impressions == 0 and not model.rate.any()
