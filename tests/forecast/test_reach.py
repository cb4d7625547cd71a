"""Reach: the listener-hash sample's distinct count against the exact one, and caps."""

from __future__ import annotations

import numpy as np
import pytest
from forecast_fixtures import DAY, NOW, forecaster, small_table

from backbeat.forecast.reach import Cap, distinct_listeners, estimate_reach, reach_basis
from backbeat.forecast.service import ForecastQuery


def test_distinct_listeners_of_the_sample_estimate_the_exact_count():
    table = small_table()
    f = forecaster(max_rows=8_000, min_rows=200)
    rows = f.rows
    assert rows.size < table.size / 2  # a real sample, not everything
    for targeting in ({}, {"countries": ["US"]}, {"devices": ["mobile"], "segments": ["fitness"]}):
        exact = len(
            set(
                table.listener[
                    f.sample.matcher.match(targeting) if False else _mask(table, targeting)
                ].tolist()
            )
        )
        matched = np.flatnonzero(rows.matcher.match(targeting))
        estimate = distinct_listeners(rows, matched)
        keep = rows.listener_keep[rows.listener[matched]]
        found = len(set(rows.listener[matched].tolist()))
        # Horvitz-Thompson standard error sqrt(sum (1-p)/p^2) over the listeners found.
        error = np.sqrt(found * float(np.mean((1 - keep) / keep**2)))
        assert abs(estimate - exact) < 4 * error + 1, (targeting, estimate, exact)


def _mask(table, targeting):
    from backbeat.forecast.matching import Matcher

    return Matcher(table).match(targeting)


def test_reach_of_a_window_like_the_history_is_its_distinct_listeners():
    f = forecaster()  # the whole table is the sample: the estimate is exact
    rows = f.rows
    matched = np.flatnonzero(rows.matcher.match({"countries": ["US"]}))
    week = 7 * DAY
    basis = reach_basis(rows, matched, now=NOW, window_seconds=week)
    recent = matched[rows.ts[matched] >= NOW - week]
    volume = float((1.0 / rows.rate[recent]).sum())
    result = estimate_reach(rows, basis, forecast_impressions=volume, delivered=volume)
    distinct = len(set(rows.listener[recent].tolist()))
    # Everyone heard at least one of their ~10+ requests (each logged row stands for 10).
    assert result.reach == pytest.approx(distinct, rel=0.01)


def test_a_flight_cap_bounds_each_listeners_impressions_worked_by_hand():
    f = forecaster()
    rows = f.rows
    matched = np.flatnonzero(rows.matcher.match({"countries": ["SE"]}))
    week = 7 * DAY
    basis = reach_basis(rows, matched, now=NOW, window_seconds=week)
    volume = float((basis.per_listener / basis.keep).sum())
    capped = estimate_reach(
        rows, basis, forecast_impressions=volume, delivered=None, caps=[Cap(5, None)]
    )
    expected = np.minimum(basis.per_listener, 5).sum() / basis.per_listener.sum()
    assert capped.cap_factor == pytest.approx(expected)


def test_forecast_reach_is_at_most_the_impressions_and_grows_with_the_flight():
    f = forecaster()
    short = f.forecast(
        ForecastQuery(start_at=NOW, end_at=NOW + 2 * DAY, targeting={"countries": ["US"]})
    )
    long = f.forecast(
        ForecastQuery(start_at=NOW, end_at=NOW + 28 * DAY, targeting={"countries": ["US"]})
    )
    assert 0 < short.reach.value < long.reach.value
    assert long.reach.value <= long.delivered
    assert short.average_frequency.value < long.average_frequency.value
