"""A forecaster rebooked for another book answers exactly as one built from scratch for it
(same history and ``now``): the reference is the full build."""

from __future__ import annotations

import pytest
from forecast_fixtures import DAY, NOW, forecaster, guaranteed

from backbeat.forecast.service import ForecastQuery

US = {"countries": ["US"]}
BOOK_A = [
    guaranteed(1, 4_000, US, days=7),
    guaranteed(2, 2_000, {"devices": ["mobile"]}, days=10, advertiser_id=2),
]
BOOK_B = [
    guaranteed(1, 6_000, US, days=7),  # its goal raised
    guaranteed(3, 3_000, {"countries": ["DE"]}, days=5, advertiser_id=3),  # booked
    guaranteed(4, 1_500, {"devices": ["desktop"]}, days=9, tier="sponsorship"),
]  # and item 2 ended
DRAFTS = [
    ForecastQuery(start_at=NOW, end_at=NOW + 7 * DAY, targeting=US),
    ForecastQuery(start_at=NOW + DAY, end_at=NOW + 4 * DAY, targeting={"devices": ["mobile"]}),
    ForecastQuery(start_at=NOW, end_at=NOW + 14 * DAY, targeting={"countries": ["DE"]}),
    ForecastQuery(start_at=NOW, end_at=NOW + 3 * DAY, targeting={}, goal_impressions=2_000),
]


@pytest.mark.parametrize("delivered", [None, {1: 500, 3: 100}])
def test_a_rebooked_forecaster_answers_as_a_fresh_build_for_that_book(delivered):
    fresh = forecaster(BOOK_B, delivered=delivered)
    rebooked = forecaster(BOOK_A).rebook(BOOK_B, delivered=delivered)
    assert sorted(rebooked.line_items) == sorted(fresh.line_items) == [1, 3, 4]
    for draft in DRAFTS:
        for bulk in (False, True):
            assert rebooked.forecast(draft, bulk=bulk).to_dict() == (
                fresh.forecast(draft, bulk=bulk).to_dict()
            ), (draft, bulk)
        assert rebooked.forecast(draft, advertiser_id=3).to_dict() == (
            fresh.forecast(draft, advertiser_id=3).to_dict()
        )
    many = [result.to_dict() for result in rebooked.forecast_many(DRAFTS)]
    assert many == [result.to_dict() for result in fresh.forecast_many(DRAFTS)]


def test_rebooking_leaves_the_original_answering_for_its_own_book():
    original = forecaster(BOOK_A)
    before = [original.forecast(draft).to_dict() for draft in DRAFTS]
    original.rebook(BOOK_B)
    assert [original.forecast(draft).to_dict() for draft in DRAFTS] == before
    assert before != [forecaster(BOOK_B).forecast(draft).to_dict() for draft in DRAFTS]
