"""Future supply: seasonality and trend recovered, intervals that cover, and the sample
projected so its rows add up to the forecast of every cell and hour."""

from __future__ import annotations

import numpy as np
import pytest
from forecast_fixtures import DAY, NOW, forecaster

from backbeat.forecast.sample import HOUR, WEEK_HOURS, hour_of_week
from backbeat.forecast.service import ForecastQuery
from backbeat.forecast.supply import forecast_supply


def seasonal_series(hours: int, first_hour: int, *, trend: float, noise: float, seed: int):
    """Daily and weekly shape, a linear trend, Gaussian noise: the truth and a noisy draw."""
    t = np.arange(hours)
    epoch_hours = first_hour + t
    daily = 1 + 0.5 * np.sin(2 * np.pi * (epoch_hours % 24) / 24)
    weekend = np.where(hour_of_week(epoch_hours * float(HOUR)) >= 5 * 24, 0.7, 1.0)
    truth = 1000 * daily * weekend * (1 + trend * t / hours)
    rng = np.random.default_rng(seed)
    return truth, truth + rng.normal(0, noise, hours)


def test_profile_model_repeats_the_week_scaled_to_the_last_one():
    first = int(NOW // HOUR) - 3 * WEEK_HOURS
    truth, _ = seasonal_series(4 * WEEK_HOURS, first, trend=0.0, noise=0.0, seed=1)
    history = truth[None, : 3 * WEEK_HOURS]
    result = forecast_supply(
        history, first, hour0=first + 3 * WEEK_HOURS, horizon_hours=WEEK_HOURS, model="profile"
    )
    assert result.model == "profile"
    assert np.allclose(result.mean[0], truth[3 * WEEK_HOURS :])


@pytest.mark.slow
def test_mstl_recovers_trend_and_seasonality_and_its_interval_covers():
    first = int(NOW // HOUR) - 4 * WEEK_HOURS
    total = 5 * WEEK_HOURS
    covered, errors = [], []
    for seed in range(3):
        truth, noisy = seasonal_series(total, first, trend=0.2, noise=40.0, seed=seed)
        result = forecast_supply(
            noisy[None, : 4 * WEEK_HOURS],
            first,
            hour0=first + 4 * WEEK_HOURS,
            horizon_hours=WEEK_HOURS,
            model="mstl",
        )
        assert result.model == "mstl"
        future = noisy[4 * WEEK_HOURS :]
        errors.append(
            abs(result.mean[0].sum() - truth[4 * WEEK_HOURS :].sum())
            / truth[4 * WEEK_HOURS :].sum()
        )
        low = result.mean[0] - 1.2816 * result.sigma[0]
        high = result.mean[0] + 1.2816 * result.sigma[0]
        covered.append(np.mean((future >= low) & (future <= high)))
    assert max(errors) < 0.03  # weekly total within 3% with a trend of +20% over the history
    assert 0.65 < np.mean(covered) < 0.95  # hourly 80% intervals


def test_the_projected_sample_adds_up_to_the_supply_forecast():
    f = forecaster()
    start, end = NOW + 0.5 * DAY, NOW + 15 * DAY
    result = f.forecast(ForecastQuery(start_at=start, end_at=end))
    fractions = f.projection.window(start, end)
    has_rows = f.projection.cell_weight > 0
    future_how = hour_of_week((f.projection.hour0 + np.arange(f.projection.hours)) * float(HOUR))
    expected = (f.supply.mean[:, : f.projection.hours] * fractions * has_rows[:, future_how]).sum()
    assert result.matched.value == pytest.approx(expected, rel=1e-9)
    # About the history's rate: 40,000 logged rows at 10% over 21 days.
    per_day = 40_000 / 0.1 / 21
    assert result.matched.value / (fractions.sum() / 24) == pytest.approx(per_day, rel=0.1)


@pytest.mark.slow
def test_daily_model_recovers_the_weekly_total_and_its_interval_holds_it():
    first = int(NOW // HOUR) - 4 * WEEK_HOURS
    held, errors = [], []
    for seed in range(4):
        truth, noisy = seasonal_series(5 * WEEK_HOURS, first, trend=0.2, noise=40.0, seed=seed)
        result = forecast_supply(
            noisy[None, : 4 * WEEK_HOURS],
            first,
            hour0=first + 4 * WEEK_HOURS,
            horizon_hours=WEEK_HOURS,
            model="auto",
        )
        assert result.model == "daily"
        actual = noisy[4 * WEEK_HOURS :].sum()
        errors.append(abs(result.mean[0].sum() - truth[4 * WEEK_HOURS :].sum()) / actual)
        half = 1.2816 * result.sigma[0].sum()  # hours of a stratum taken as fully correlated
        held.append(abs(result.mean[0].sum() - actual) <= half)
        # The hourly shape follows the weekday's: the weekend is quieter.
        saturday = (
            hour_of_week((first + 4 * WEEK_HOURS + np.arange(WEEK_HOURS)) * float(HOUR)) // 24
        ) == 5
        assert result.mean[0][saturday].mean() < 0.8 * result.mean[0][~saturday].mean()
    assert np.mean(errors) < 0.03
    assert sum(held) >= 2
