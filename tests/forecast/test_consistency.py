"""Forecasts agree with each other: partitions add up, available <= possible <= matched,
breakdowns sum to the total, bookings only ever take supply away."""

from __future__ import annotations

from functools import cache

import pytest
from forecast_fixtures import DAY, NOW, forecaster, guaranteed
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backbeat.forecast.service import ForecastQuery
from backbeat.forecast.synthetic import COUNTRIES, DEVICES, GENRES, SEGMENTS

COUNTRY = st.lists(st.sampled_from([c for c, _ in COUNTRIES]), min_size=1, max_size=3, unique=True)
TARGETING = st.fixed_dictionaries(
    {"countries": COUNTRY},
    optional={
        "genres": st.lists(st.sampled_from(GENRES), min_size=1, max_size=4, unique=True),
        "segments": st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=2, unique=True),
        "dayparts": st.lists(st.integers(0, 23), min_size=1, max_size=8, unique=True),
    },
)
SPLIT = st.one_of(
    st.builds(
        lambda v: {"devices": v},
        st.lists(st.sampled_from([d for d, _ in DEVICES]), min_size=1, max_size=2, unique=True),
    ),
    st.builds(
        lambda v: {"segments": v},
        st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=2, unique=True),
    ),
    st.builds(
        lambda v: {"genres": v},
        st.lists(st.sampled_from(GENRES), min_size=1, max_size=4, unique=True),
    ),
)
FLIGHT = st.tuples(st.floats(0, 20), st.floats(0.2, 30))
TIER = st.sampled_from(["sponsorship", "guaranteed", "non_guaranteed", "house"])
FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@cache
def empty():
    return forecaster()


@cache
def booked():
    items = [
        guaranteed(1, 8_000, {"countries": ["US"]}, days=10),
        guaranteed(2, 6_000, {"devices": ["mobile"]}, start=NOW + 2 * DAY, days=6),
        guaranteed(3, 3_000, {"genres": ["news", "comedy"]}, tier="sponsorship", days=14),
        guaranteed(4, 9_000, {"countries": ["GB", "DE"], "segments": ["fitness"]}, days=21),
    ]
    return forecaster(items)


def query(targeting, flight, tier="guaranteed", **extra):
    offset, length = flight
    return ForecastQuery(
        start_at=NOW + offset * DAY,
        end_at=NOW + (offset + length) * DAY,
        targeting=targeting,
        tier=tier,
        **extra,
    )


@FAST
@given(TARGETING, SPLIT, FLIGHT, TIER)
def test_a_targeting_is_the_sum_of_any_partition_of_it(targeting, split, flight, tier):
    f = booked()
    whole = f.forecast(query(targeting, flight, tier))
    inside = f.forecast(query({"all": [targeting, split]}, flight, tier))
    outside = f.forecast(query({"all": [targeting, {"not": split}]}, flight, tier))
    for figure in ("matched", "possible", "available"):
        parts = getattr(inside, figure).value + getattr(outside, figure).value
        assert parts == pytest.approx(getattr(whole, figure).value, rel=1e-9, abs=1e-6), figure


@FAST
@given(TARGETING, FLIGHT, TIER, st.one_of(st.none(), st.integers(1, 10**6)))
def test_available_never_exceeds_possible_nor_possible_matched(targeting, flight, tier, goal):
    result = booked().forecast(query(targeting, flight, tier, goal_impressions=goal))
    assert 0 <= result.available.value <= result.possible.value + 1e-6
    assert result.possible.value <= result.matched.value + 1e-6
    for figure in ("matched", "possible", "available", "reach", "clicks", "conversions"):
        estimate = getattr(result, figure)
        assert estimate.low <= estimate.value <= estimate.high, figure
    assert result.reach.value <= result.delivered + 1e-6


@FAST
@given(TARGETING, FLIGHT)
def test_breakdowns_add_up_to_the_total(targeting, flight):
    result = booked().forecast(
        query(targeting, flight, group_by=["countries", "day", "hour", "devices"])
    )
    for key in ("countries", "day", "hour", "devices"):
        rows = result.breakdown[key]
        assert sum(row["matched"] for row in rows) == pytest.approx(
            result.matched.value, rel=1e-6, abs=0.05
        ), key
        assert sum(row["available"] for row in rows) == pytest.approx(
            result.available.value, rel=1e-6, abs=0.05
        ), key


@FAST
@given(TARGETING, FLIGHT)
def test_adding_a_booking_never_adds_supply(targeting, flight):
    draft = query(targeting, flight)
    before = empty().forecast(draft)
    after = booked().forecast(draft)
    assert after.matched.value == pytest.approx(before.matched.value, rel=1e-9)
    assert after.available.value <= before.available.value + 1e-6
