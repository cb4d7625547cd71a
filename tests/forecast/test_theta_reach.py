"""Theta-sketch reach: against exact distinct counts (Python sets), set algebra, and caps."""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest
from forecast_fixtures import DAY
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backbeat.forecast.history import OpportunityTable, table_from_records
from backbeat.forecast.service import Forecaster, ForecastQuery
from backbeat.forecast.sketches import AudienceSketches
from backbeat.forecast.synthetic import synthetic_table

NOW = float(int(1_790_000_000 // DAY) * DAY)  # a UTC midnight: cap days align with the slice


@cache
def generated_log() -> OpportunityTable:
    return synthetic_table(40_000, days=14, end=NOW, seed=11)


@cache
def log_sketches() -> AudienceSketches:
    sketches = AudienceSketches.build(generated_log(), now=NOW)
    assert sketches is not None
    return sketches


@cache
def log_rows() -> list[tuple[int, float, dict]]:
    table = generated_log()
    return [
        (int(table.listener[row]), float(table.ts[row]), table.attributes(row))
        for row in range(table.size)
    ]


def exact_listeners(days: int, keep) -> set[int]:
    """Brute force: listeners with a request in the last ``days`` days that ``keep`` admits."""
    since = NOW - days * DAY
    return {who for who, ts, attributes in log_rows() if ts >= since and keep(attributes)}


CASES = [
    ({}, lambda a: True),
    ({"countries": ["US"]}, lambda a: a["countries"] == "US"),
    (
        {"countries": ["GB", "DE"], "devices": ["mobile"]},
        lambda a: a["countries"] in ("GB", "DE") and a["devices"] == "mobile",
    ),
    (
        {"genres": ["news", "comedy"], "segments": ["fitness"]},
        lambda a: a["genres"] in ("news", "comedy") and "fitness" in a["segments"],
    ),
    (
        {"devices": ["car", "desktop"], "not": {"countries": ["US"]}},
        lambda a: a["devices"] in ("car", "desktop") and a["countries"] != "US",
    ),
    (
        {"countries": ["SE"], "not": {"genres": ["pop"]}},
        lambda a: a["countries"] == "SE" and a["genres"] != "pop",
    ),
]


@pytest.mark.parametrize(("targeting", "keep"), CASES)
@pytest.mark.parametrize("days", [1, 7])
def test_sketch_audience_holds_the_exact_distinct_count_within_its_error(targeting, keep, days):
    exact = len(exact_listeners(days, keep))
    audience = log_sketches().audience(targeting, days=days)
    assert audience is not None
    # Three standard errors of the sketch's own bounds (exact below 4,096 listeners).
    assert abs(audience.estimate - exact) <= 3 * audience.sigma + 1e-9, (audience, exact)


def test_what_the_algebra_cannot_express_falls_back():
    sketches = log_sketches()
    # Two request-level keys: a listener with a news request and a morning request need
    # not have a news request in the morning.
    assert sketches.audience({"genres": ["news"], "dayparts": [7, 8]}, days=7) is None
    assert sketches.audience({"any": [{"countries": ["US"]}, {"genres": ["news"]}]}, days=7) is None
    assert sketches.audience({"countries": ["US"]}, days=sketches.days + 1) is None
    assert {"countries", "devices", "segments"} <= sketches.listener_level
    assert "genres" not in sketches.listener_level


def _table(rows: list[tuple[int, str, str, str, int]]) -> OpportunityTable:
    """(listener, country, device, genre, day before NOW) per request."""
    return table_from_records(
        {
            "ts": NOW - (day + 0.5) * DAY,
            "listener": f"l{who}",
            "attrs": {"countries": country, "devices": device, "genres": genre},
        }
        for who, country, device, genre, day in rows
    )


COUNTRIES, DEVICES, GENRES = ["US", "GB", "SE"], ["mobile", "car"], ["news", "pop", "jazz"]


@st.composite
def logs_and_expressions(draw, listeners: int):
    profile = {
        who: (draw(st.sampled_from(COUNTRIES)), draw(st.sampled_from(DEVICES)))
        for who in range(listeners)
    }
    requests = draw(
        st.lists(
            st.tuples(st.integers(0, listeners - 1), st.sampled_from(GENRES), st.integers(0, 3)),
            min_size=1,
            max_size=4 * listeners,
        )
    )
    rows = [(who, *profile[who], genre, day) for who, genre, day in requests]
    expression = {}
    for key, values in (("countries", COUNTRIES), ("devices", DEVICES), ("genres", GENRES)):
        if draw(st.booleans()):
            expression[key] = draw(st.lists(st.sampled_from(values), min_size=1, unique=True))
    if draw(st.booleans()):
        expression["not"] = {"countries": [draw(st.sampled_from(COUNTRIES))]}
    return rows, expression, draw(st.integers(1, 4))


def _admits(expression, country, device, genre) -> bool:
    return (
        country in expression.get("countries", COUNTRIES)
        and device in expression.get("devices", DEVICES)
        and genre in expression.get("genres", GENRES)
        and country not in expression.get("not", {}).get("countries", ())
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(logs_and_expressions(listeners=40))
def test_unions_intersections_and_differences_equal_set_algebra(case):
    rows, expression, days = case
    sketches = AudienceSketches.build(_table(rows), now=NOW)
    expected = {
        who
        for who, country, device, genre, day in rows
        if day < days and _admits(expression, country, device, genre)
    }
    audience = sketches.audience(expression, days=min(days, sketches.days))
    if days > sketches.days:  # the log spans fewer days: every request is in the slice
        expected = {w for w, c, d, g, _ in rows if _admits(expression, c, d, g)}
    assert audience is not None
    assert audience.estimate == len(expected)  # under 2^lg_k listeners: exact
    assert audience.sigma == 0.0


def test_in_estimation_mode_the_stated_error_holds_the_set_algebra():
    """32 hashes per sketch (``lg_k`` 5) over 600 listeners: every count is estimated. A
    fixed draw of 120 logs and expressions; about 95% should fall within two of the stated
    standard errors (a Gaussian reading of the sketch's bounds: tails are not asserted)."""
    rng = np.random.default_rng(5)
    held = 0
    cases = 120
    for _ in range(cases):
        profile = [(rng.choice(COUNTRIES), rng.choice(DEVICES)) for _ in range(600)]
        rows = [
            (int(who), *profile[who], str(rng.choice(GENRES)), int(rng.integers(0, 4)))
            for who in rng.integers(0, 600, size=1800)
        ]
        expression = {
            key: sorted({str(v) for v in rng.choice(values, size=rng.integers(1, 3))})
            for key, values in (("countries", COUNTRIES), ("devices", DEVICES), ("genres", GENRES))
            if rng.random() < 0.5
        }
        if rng.random() < 0.5:
            expression["not"] = {"countries": [str(rng.choice(COUNTRIES))]}
        days = int(rng.integers(1, 5))
        sketches = AudienceSketches.build(_table(rows), now=NOW, lg_k=5)
        days = min(days, sketches.days)
        expected = {
            who
            for who, country, device, genre, day in rows
            if day < days and _admits(expression, country, device, genre)
        }
        audience = sketches.audience(expression, days=days)
        held += abs(audience.estimate - len(expected)) <= 2 * audience.sigma + 1e-9
    assert held >= 0.88 * cases, held


def test_a_cap_lowers_impressions_and_frequency_as_worked_by_hand():
    # Eight identical days: listener A hears 10 requests a day, B 2 (UTC days, cap windows).
    day_rows = [(0, 10), (1, 2)]
    records = []
    for day in range(8):
        for who, count in day_rows:
            for n in range(count):
                records.append(
                    {
                        "ts": NOW - (day + 1) * DAY + (n + 0.5) * 3600,
                        "listener": f"l{who}",
                        "attrs": {"countries": "US"},
                    }
                )
    table = table_from_records(records)
    forecaster = Forecaster.from_table(table, [], now=NOW, supply_model="profile")
    assert forecaster.sketches is not None
    flight = {"start_at": NOW, "end_at": NOW + DAY, "tier": "non_guaranteed"}
    free = forecaster.forecast(ForecastQuery(**flight))
    capped = forecaster.forecast(
        ForecastQuery(**flight, frequency_caps=[{"count": 3, "period": "day"}])
    )
    # By hand: 12 requests a day; capped at 3 a day, A gives 3 and B 2: 5 of 12.
    assert free.available.value == pytest.approx(12.0)
    assert capped.available.value == pytest.approx(5.0)
    # Delivering everything it may, each still reaches both listeners: frequency 6 -> 2.5.
    assert free.reach.value == pytest.approx(2.0)
    assert capped.reach.value == pytest.approx(2.0)
    assert free.average_frequency.value == pytest.approx(6.0)
    assert capped.average_frequency.value == pytest.approx(2.5)
    # A goal of 4: a share q of each listener's requests, reached with 1 - (1 - q)^n.
    goal_free = forecaster.forecast(ForecastQuery(**flight, goal_impressions=4))
    goal_capped = forecaster.forecast(
        ForecastQuery(**flight, goal_impressions=4, frequency_caps=[{"count": 3, "period": "day"}])
    )
    q, q_capped = 4 / 12, 4 / 5
    by_hand = (1 - (1 - q) ** 10) + (1 - (1 - q) ** 2)
    by_hand_capped = (1 - (1 - q_capped) ** 3) + (1 - (1 - q_capped) ** 2)
    assert goal_free.reach.value == pytest.approx(by_hand, rel=1e-6)
    assert goal_capped.reach.value == pytest.approx(by_hand_capped, rel=1e-6)


def test_a_log_kept_by_listener_scales_the_count_and_a_mixed_one_is_not_sketched():
    def records(sample_by: str, listeners: range):
        return [
            {
                "ts": NOW - 0.5 * DAY,
                "listener": f"l{who}",
                "attrs": {"countries": "US", "sample": 0.25, "sample_by": sample_by},
            }
            for who in listeners
        ]

    kept = AudienceSketches.build(table_from_records(records("listener", range(50))), now=NOW)
    audience = kept.audience({"countries": ["US"]}, days=1)
    # 50 logged listeners kept with probability 1/4 stand for 200, with a binomial error.
    assert audience.estimate == pytest.approx(200.0)
    assert audience.sigma == pytest.approx((50 * 0.75 * 16) ** 0.5)
    mixed = records("listener", range(50)) + records("request", range(50, 60))
    assert AudienceSketches.build(table_from_records(mixed), now=NOW) is None


def test_the_two_counts_combine_by_inverse_variance_worked_by_hand():
    from backbeat.forecast.reach import combined_audience
    from backbeat.forecast.sketches import Audience

    # Sample 100 (variance 4), sketch 110 (sigma 2, variance 4): equal weights.
    assert combined_audience(100.0, 4.0, Audience(110.0, 2.0)) == pytest.approx((105.0, 2.0))
    # Sample variance 1, sketch variance 9: weights 0.9 and 0.1.
    assert combined_audience(100.0, 1.0, Audience(110.0, 3.0)) == pytest.approx((101.0, 0.9))
    # An exact count wins outright: the whole population sampled, or a sketch not estimating.
    assert combined_audience(100.0, 0.0, Audience(110.0, 3.0)) == (100.0, 0.0)
    assert combined_audience(100.0, 4.0, Audience(110.0, 0.0)) == (110.0, 0.0)
