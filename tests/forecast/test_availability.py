"""Availability: matched against a brute-force sum, the booked allocation's effect on a
competing draft, priorities, contention and advertiser isolation."""

from __future__ import annotations

import numpy as np
import pytest
from forecast_fixtures import DAY, NOW, forecaster, guaranteed

from backbeat.forecast.sample import HOUR, WEEK_HOURS
from backbeat.forecast.service import ForecastQuery
from backbeat.serving.targeting_index import compile_predicate

US = {"countries": ["US"]}


def brute_force_matched(f, targeting, start, end):
    """Each sample row, tested with the ad server's predicate, times the supply it stands
    for in every future hour of its hour of week inside [start, end)."""
    projection, sample = f.projection, f.sample
    predicate = compile_predicate(targeting)
    how0 = int(np.argmin(projection.hfirst))  # hour of week of future hour 0
    total = 0.0
    for row in range(sample.size):
        if not predicate(sample.table.attributes(row)):
            continue
        stratum, how = int(sample.stratum[row]), int(sample.how[row])
        for hour in range(projection.hours):
            if (how0 + hour) % WEEK_HOURS != how:
                continue
            lo = max((projection.hour0 + hour) * HOUR, start, NOW)
            hi = min((projection.hour0 + hour + 1) * HOUR, end)
            if hi > lo:
                total += sample.weight[row] * projection.scale[stratum, hour] * (hi - lo) / HOUR
    return total


@pytest.fixture(scope="module")
def empty_book():
    return forecaster(max_rows=6_000, min_rows=300, horizon_weeks=2)


def test_matched_equals_a_brute_force_weighted_count_over_the_sample(empty_book):
    targeting = {"countries": ["US", "GB"], "not": {"devices": ["car"]}}
    start, end = NOW + 0.3 * DAY, NOW + 9.7 * DAY
    result = empty_book.forecast(ForecastQuery(start_at=start, end_at=end, targeting=targeting))
    expected = brute_force_matched(empty_book, targeting, start, end)
    assert result.matched.value == pytest.approx(expected, rel=1e-6)
    # With nothing booked, everything matched is available.
    assert result.available.value == pytest.approx(expected, rel=1e-6)
    assert result.matched.low < expected < result.matched.high


def test_booking_a_guaranteed_item_lowers_a_competing_drafts_available_by_about_its_goal():
    draft = ForecastQuery(start_at=NOW, end_at=NOW + 7 * DAY, targeting=US)
    before = forecaster().forecast(draft)
    goal = int(before.available.value * 0.3)
    item = guaranteed(1, goal, {"countries": ["US"], "devices": ["mobile"]}, days=7)
    after = forecaster([item]).forecast(draft)
    assert after.matched.value == pytest.approx(before.matched.value)
    assert before.available.value - after.available.value == pytest.approx(goal, rel=0.05)
    # ... and it is listed as contending with about its goal.
    (entry,) = after.contending
    assert entry[0] == 1
    assert entry[1] == pytest.approx(goal, rel=0.15)


def test_a_non_overlapping_booking_takes_nothing_from_the_draft():
    draft = ForecastQuery(start_at=NOW, end_at=NOW + 7 * DAY, targeting=US)
    elsewhere = guaranteed(1, 5_000, {"countries": ["DE"]}, days=7)
    later = guaranteed(2, 5_000, US, start=NOW + 8 * DAY, days=5)
    before = forecaster().forecast(draft)
    after = forecaster([elsewhere, later]).forecast(draft)
    assert after.available.value == pytest.approx(before.available.value, rel=1e-9)
    assert after.contending == []


def test_possible_counts_supply_only_higher_tiers_keep():
    flight = {"start_at": NOW, "end_at": NOW + 7 * DAY, "targeting": US}
    goal = int(forecaster().forecast(ForecastQuery(**flight)).matched.value * 0.3)
    sponsorship = guaranteed(1, goal, US, tier="sponsorship")
    booked = guaranteed(2, goal, US)
    f = forecaster([sponsorship, booked])
    by_tier = {
        tier: f.forecast(ForecastQuery(tier=tier, **flight))
        for tier in ("sponsorship", "guaranteed", "non_guaranteed")
    }
    matched = by_tier["sponsorship"].matched.value
    assert by_tier["sponsorship"].possible.value == pytest.approx(matched)
    assert by_tier["guaranteed"].possible.value == pytest.approx(matched - goal, rel=0.02)
    assert by_tier["non_guaranteed"].possible.value == pytest.approx(matched - 2 * goal, rel=0.02)
    for result in by_tier.values():
        assert result.available.value == pytest.approx(matched - 2 * goal, rel=0.02)


def test_an_advertiser_sees_contention_only_as_a_total():
    items = [guaranteed(1, 15_000, US, advertiser_id=7), guaranteed(2, 10_000, US, advertiser_id=8)]
    f = forecaster(items)
    draft = ForecastQuery(start_at=NOW, end_at=NOW + 7 * DAY, targeting=US)
    admin = f.forecast(draft)
    assert {item for item, _ in admin.contending} == {1, 2}
    advertiser = f.forecast(draft, advertiser_id=7)
    assert [item for item, _ in advertiser.contending] == [None]
    assert advertiser.contending[0][1] == pytest.approx(sum(v for _, v in admin.contending))
    assert "line_item_id" in advertiser.to_dict()["contending"][0]
    assert advertiser.to_dict()["contending"][0]["line_item_id"] is None


def test_frequency_caps_lower_possible_and_available_but_not_matched():
    f = forecaster()
    flight = {"start_at": NOW, "end_at": NOW + 7 * DAY, "targeting": US}
    free = f.forecast(ForecastQuery(**flight))
    capped = f.forecast(ForecastQuery(frequency_caps=[{"count": 2, "period": "day"}], **flight))
    assert capped.matched.value == pytest.approx(free.matched.value)
    assert capped.available.value < free.available.value
    assert capped.possible.value <= capped.matched.value
    assert capped.average_frequency.value <= 2 * 7 + 1e-9


def test_flights_in_the_past_or_beyond_the_horizon_are_refused():
    from backbeat.errors import InvalidInput

    f = forecaster()
    with pytest.raises(InvalidInput) as past:
        f.forecast(ForecastQuery(start_at=NOW - 3 * DAY, end_at=NOW - DAY))
    assert past.value.reason == "flight-in-past"
    with pytest.raises(InvalidInput) as far:
        f.forecast(ForecastQuery(start_at=NOW, end_at=NOW + 400 * DAY))
    assert far.value.reason == "beyond-forecast-horizon"
    with pytest.raises(InvalidInput) as order:
        f.forecast(ForecastQuery(start_at=NOW + DAY, end_at=NOW))
    assert order.value.reason == "end-before-start"
