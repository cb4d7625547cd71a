"""The traffic simulator: seeded, the volume asked for, and the shapes real listening has."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backbeat.errors import InvalidInput
from backbeat.serving.request import AdRequest, request_attributes
from backbeat.simulation import TrafficConfig, make_audience, simulate_traffic
from backbeat.simulation.audience import DEVICE_CLASSES, ZONES
from backbeat.simulation.profiles import DEVICES, PODCAST_GENRES, SHOWS_PER_GENRE, SLOTS

MONDAY = datetime(2026, 3, 2, tzinfo=UTC)  # no public holiday in any market for weeks


def _traffic(**options):
    values = {"days": 14, "daily_requests": 6000, "listeners": 8000, "seed": 5, **options}
    return simulate_traffic(TrafficConfig.starting(MONDAY, **values))


@pytest.fixture(scope="module")
def fortnight():
    return _traffic()


def test_same_seed_same_traffic_other_seed_other_traffic(fortnight):
    again = _traffic()
    for column in ("ts", "listener", "slot", "genre", "show", "connection", "local_hour"):
        assert np.array_equal(getattr(fortnight, column), getattr(again, column)), column
    other = _traffic(seed=6)
    assert len(other) != len(fortnight) or not np.array_equal(other.listener, fortnight.listener)


def test_total_matches_requested_volume_and_is_time_ordered(fortnight):
    asked = 6000 * 14
    assert abs(len(fortnight) - asked) / asked < 0.04
    assert np.all(np.diff(fortnight.ts) >= 0)
    assert fortnight.ts[0] >= MONDAY.timestamp()
    assert fortnight.ts[-1] < (MONDAY + timedelta(days=14)).timestamp()


def test_local_time_is_the_listeners_zone_clock(fortnight):
    """Hour and weekday per break agree with zoneinfo on the break's own timestamp."""
    rng = np.random.default_rng(0)
    for row in rng.choice(len(fortnight), size=300, replace=False).tolist():
        tz = ZONES[int(fortnight.audience.zone[fortnight.listener[row]])][0]
        local = datetime.fromtimestamp(float(fortnight.ts[row]), ZoneInfo(tz))
        assert fortnight.local_hour[row] == local.hour
        assert fortnight.weekday[row] == local.weekday()


def test_attributes_are_what_the_ad_server_derives(fortnight):
    """The simulator's attributes equal ``request_attributes`` of the same request."""
    audience = fortnight.audience
    for row in range(0, len(fortnight), 997):
        attributes = fortnight.attributes(row)
        who = int(fortnight.listener[row])
        request = AdRequest(
            slot_id=attributes["slots"],
            listener=audience.ids[who],
            country=attributes["countries"],
            region=attributes["regions"],
            device=attributes["devices"],
            platform=attributes["platforms"],
            genre=attributes["genres"],
            show=attributes["shows"],
            episode=attributes["episodes"],
            connection=attributes["connections"],
            timezone=attributes["tz"],
            segments=attributes["segments"],
        )
        surface, position = SLOTS[int(fortnight.slot[row])]
        expected = request_attributes(
            request, surface, position, float(fortnight.ts[row]), frozenset({"dayparts"})
        )
        for key, value in expected.items():
            assert attributes[key] == value, key


def test_daily_curve_quiet_nights_commute_peaks(fortnight):
    weekday = fortnight.weekday < 5
    by_hour = np.bincount(fortnight.local_hour[weekday], minlength=24)
    night = by_hour[2:5].mean()
    morning_commute = by_hour[7:9].mean()
    evening_commute = by_hour[17:19].mean()
    midday = by_hour[11:15].mean()
    assert night < 0.15 * morning_commute
    assert morning_commute > midday and evening_commute > midday


def test_weekend_is_lower_and_starts_later(fortnight):
    weekend = fortnight.weekday >= 5
    days = np.bincount(fortnight.weekday, minlength=7) / 2  # two weeks
    assert days[5:].mean() < 0.95 * days[:5].mean()
    early = fortnight.local_hour < 9
    assert early[weekend].mean() < 0.7 * early[~weekend].mean()
    # Desktops are work machines, smart speakers home devices: their weekend shares differ.
    desktop = fortnight.device_class == DEVICE_CLASSES.index("desktop")
    speaker = fortnight.device_class == DEVICE_CLASSES.index("smart_speaker")
    assert weekend[desktop].mean() < weekend[speaker].mean()


def test_market_and_device_mix():
    audience = make_audience(40_000, seed=2)
    shares = {country: float((audience.country == country).mean()) for country in ("US", "GB")}
    assert abs(shares["US"] - 0.48) < 0.02 and abs(shares["GB"] - 0.16) < 0.02
    ios = [n for n, (device, platform, _, _) in enumerate(DEVICES) if platform == "ios"]
    assert abs(float(np.isin(audience.device, ios).mean()) - 0.38) < 0.02


def test_heavy_and_light_listeners_with_stable_ids(fortnight):
    per_listener = np.bincount(fortnight.listener, minlength=len(fortnight.audience))
    active = np.sort(per_listener[per_listener > 0])[::-1]
    top_tenth = active[: max(1, active.size // 10)].sum() / active.sum()
    assert top_tenth > 0.3  # loyal listeners hear a large share of the ads
    assert np.median(active) <= 0.6 * active.mean()  # the typical listener is light
    first = set(fortnight.between(MONDAY.timestamp(), MONDAY.timestamp() + 7 * 86400).listener)
    second = set(fortnight.between(MONDAY.timestamp() + 7 * 86400, float("inf")).listener)
    assert len(first & second) > 0.5 * len(first)  # the same people come back


@pytest.mark.slow
def test_overdispersed_hours():
    """The same hour of the week varies more across weeks than Poisson noise would."""

    start = datetime(2026, 1, 12, tzinfo=UTC)  # six weeks without a clock change

    def dispersion(**options):
        config = TrafficConfig.starting(
            start, days=42, daily_requests=20_000, listeners=8000, weekly_growth=0.0,
            holidays=False, **options,
        )  # fmt: skip
        traffic = simulate_traffic(config)
        hours = ((traffic.ts - start.timestamp()) // 3600).astype(int)
        counts = np.bincount(hours, minlength=42 * 24).reshape(6, 168).astype(float)
        busy = counts.mean(axis=0) > 200
        return float((counts.var(axis=0, ddof=1)[busy] / counts.mean(axis=0)[busy]).mean())

    assert dispersion() > 3.0
    quiet = dispersion(day_sigma=0.0, hour_shape=1e9, cell_shape=1e9)
    assert 0.6 < quiet < 1.5  # the same machinery without the shocks is Poisson


def test_trend_grows_weekly_volume():
    traffic = _traffic(days=28, daily_requests=20_000, weekly_growth=0.05)
    weeks = np.bincount(((traffic.ts - MONDAY.timestamp()) // (7 * 86400)).astype(int))
    assert 1.05**3 * 0.96 < weeks[3] / weeks[0] < 1.05**3 * 1.04


def test_holiday_changes_the_markets_day():
    """US Thanksgiving 2026 (Thursday 26 November) is quieter in the US than the Thursday before."""
    start = datetime(2026, 11, 16, tzinfo=UTC)
    traffic = simulate_traffic(
        TrafficConfig.starting(start, days=14, daily_requests=20_000, listeners=20_000, seed=1)
    )
    assert ("2026-11-26", "US", "Thanksgiving Day") in traffic.holidays
    us = traffic.audience.country[traffic.listener] == "US"
    eastern = ZoneInfo("America/New_York")
    day = np.array(
        [datetime.fromtimestamp(ts, eastern).date().toordinal() for ts in traffic.ts[us].tolist()]
    )
    before = (day == datetime(2026, 11, 19).toordinal()).sum()
    thanksgiving = (day == datetime(2026, 11, 26).toordinal()).sum()
    assert thanksgiving < 0.88 * before
    gb = traffic.audience.country[traffic.listener] == "GB"
    london = np.array(
        [datetime.fromtimestamp(ts, UTC).date().toordinal() for ts in traffic.ts[gb].tolist()]
    )
    gb_ratio = (london == datetime(2026, 11, 26).toordinal()).sum() / max(
        1, (london == datetime(2026, 11, 19).toordinal()).sum()
    )
    assert gb_ratio > 0.9  # not a holiday in Britain


def test_bad_configs_are_refused():
    with pytest.raises(InvalidInput):
        TrafficConfig(start=0.0, days=0)
    with pytest.raises(InvalidInput):
        TrafficConfig(start=0.0, slot_ids=(1, 2))
    with pytest.raises(InvalidInput):
        make_audience(0, seed=1)


@settings(max_examples=15, deadline=None)
@given(
    start_day=st.integers(0, 3 * 365),
    days=st.integers(1, 3),
    daily=st.integers(20, 3000),
    listeners=st.integers(1, 500),
    seed=st.integers(0, 2**31),
)
def test_any_config_gives_consistent_breaks(start_day, days, daily, listeners, seed):
    """Whatever the config: breaks in the span and in order, content consistent with its slot."""
    start = datetime(2025, 1, 1, tzinfo=UTC) + timedelta(days=start_day)
    traffic = simulate_traffic(
        TrafficConfig.starting(
            start, days=days, daily_requests=daily, listeners=listeners, seed=seed
        )
    )
    assert np.all(np.diff(traffic.ts) >= 0)
    assert np.all(traffic.ts >= start.timestamp())
    assert np.all(traffic.ts < start.timestamp() + days * 86400)
    assert np.all((traffic.listener >= 0) & (traffic.listener < listeners))
    assert np.all((traffic.local_hour >= 0) & (traffic.local_hour < 24))
    podcast = traffic.slot > 0  # slot 0 is the music break
    assert np.all(traffic.genre[podcast] < len(PODCAST_GENRES))
    assert np.all(traffic.genre[~podcast] >= len(PODCAST_GENRES))
    assert np.all(traffic.show[~podcast] == -1)
    shows = traffic.show[podcast]
    assert np.all(shows // SHOWS_PER_GENRE == traffic.genre[podcast])
