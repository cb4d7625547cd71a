"""The demo's history step: weeks of simulated opportunities the forecaster can read right away."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from backbeat.config import Settings
from backbeat.demo.history import demo_slot_ids, write_demo_history
from backbeat.forecast.history import read_history
from backbeat.forecast.service import Forecaster, ForecastQuery

SLOTS = [  # as the demo books them: ids in booking order, not the simulator's order
    {"id": 11, "surface": "podcast", "position": "pre_roll"},
    {"id": 12, "surface": "music_free", "position": "interstitial"},
    {"id": 13, "surface": "podcast", "position": "mid_roll"},
    {"id": 14, "surface": "podcast", "position": "post_roll"},
]


def test_slot_ids_follow_surface_and_position():
    assert demo_slot_ids(SLOTS) == (12, 11, 13, 14)


@pytest.mark.slow
def test_history_ends_before_the_replayed_day_and_forecasts_from_it(tmp_path):
    settings = Settings(var_dir=tmp_path / "var", log_level="WARNING")
    replayed = datetime(2026, 11, 29, tzinfo=UTC)
    stats = write_demo_history(
        settings, SLOTS, until=replayed, weeks=2, daily_requests=600, listeners=900, seed=2
    )
    assert stats.until == replayed.timestamp()
    assert stats.since == (replayed - timedelta(days=14)).timestamp()
    table = read_history(settings.resolved_event_log_dir, until=replayed.timestamp() + 86400)
    assert table.size == stats.opportunities and abs(stats.opportunities - 600 * 14) < 600
    assert table.ts.min() >= stats.since and table.ts.max() < stats.until
    slots = {int(v) for v in table.vocab["slots"].values}
    assert slots == {11, 12, 13, 14}
    forecaster = Forecaster.build(settings.resolved_event_log_dir, [], now=replayed.timestamp())
    week = forecaster.forecast(
        ForecastQuery(
            start_at=replayed,
            end_at=replayed + timedelta(days=7),
            tier="non_guaranteed",
            targeting={"countries": ["US"]},
        )  # fmt: skip
    )
    # About half the listening is in the US: a real number near 600 x 7 x 0.48.
    assert 0.6 * 600 * 7 * 0.48 < week.matched.value < 1.4 * 600 * 7 * 0.48
    assert 0 < week.reach.value <= week.matched.value
