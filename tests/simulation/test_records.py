"""Simulated history in the event log: the ad server's record format, readable by every reader."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import orjson
import pytest

from backbeat.errors import InvalidInput
from backbeat.eventlog import EventLogReader
from backbeat.events import Event, EventType
from backbeat.forecast.allocation.share import read_opportunities
from backbeat.forecast.history import read_history
from backbeat.serving.request import listening_app
from backbeat.simulation import ResponseModel, TrafficConfig, simulate_traffic
from backbeat.simulation.audience import DEVICE_CLASSES
from backbeat.simulation.records import (
    NO_FILL_REASON,
    draw_outcomes,
    history_records,
    write_history,
)

START = datetime(2026, 3, 2, tzinfo=UTC)


@pytest.fixture(scope="module")
def traffic():
    return simulate_traffic(
        TrafficConfig.starting(START, days=7, daily_requests=1500, listeners=2500, seed=3)
    )


@pytest.fixture(scope="module")
def written(traffic, tmp_path_factory):
    directory = tmp_path_factory.mktemp("history") / "events"
    stats = write_history(directory, traffic, app_of=listening_app)
    return directory, stats


def test_records_parse_as_the_ad_servers_opportunity_events(traffic):
    """Each spliced record decodes to the same object ``Event.to_bytes`` makes of its fields."""
    outcomes = draw_outcomes(traffic)
    records = history_records(traffic, outcomes, app_of=listening_app)
    checked = 0
    for payload in records:
        event = Event.from_bytes(payload)
        if event.type != EventType.OPPORTUNITY:
            continue
        n = checked
        row = int(outcomes.rows[n])
        attributes = traffic.attributes(row)
        expected_attrs = {key: value for key, value in attributes.items() if value is not None}
        expected_attrs.update(
            segments=list(attributes["segments"]),
            apps=listening_app(traffic.audience.user_agent[int(traffic.listener[row])]),
            user_agent=traffic.audience.user_agent[int(traffic.listener[row])],
            targeted=0,
            catalog_version=0,
            winners=[],
            sample=1.0,
        )
        expected = Event(
            type=EventType.OPPORTUNITY,
            ts=float(traffic.ts[row]),
            decision_id=outcomes.decision_ids[n],
            slot_id=attributes["slots"],
            listener=traffic.audience.ids[int(traffic.listener[row])],
            reason=None if outcomes.filled[n] else NO_FILL_REASON,
            attrs=expected_attrs,
        )
        assert orjson.loads(payload) == orjson.loads(expected.to_bytes())
        checked += 1
        if checked == 400:
            break
    assert checked == 400


@pytest.mark.slow
def test_written_history_reads_back_with_every_reader(traffic, written):
    directory, stats = written
    events = [Event.from_bytes(record.payload) for record in EventLogReader(directory).records()]
    kinds = {kind: sum(e.type == kind for e in events) for kind in EventType}
    assert kinds[EventType.OPPORTUNITY] == stats.opportunities == len(traffic)
    assert kinds[EventType.IMPRESSION] == stats.impressions
    assert kinds[EventType.CLICK] == stats.clicks
    assert kinds[EventType.CONVERSION] == stats.conversions
    # Impressions, clicks and conversions follow an opportunity of the same decision.
    opportunities = {e.decision_id for e in events if e.type == EventType.OPPORTUNITY}
    impressions = {e.decision_id for e in events if e.type == EventType.IMPRESSION}
    clicks = {e.decision_id for e in events if e.type == EventType.CLICK}
    conversions = {e.decision_id for e in events if e.type == EventType.CONVERSION}
    assert conversions <= clicks <= impressions <= opportunities
    # The pacing/plan reader and the forecast reader both see every opportunity.
    replayed = list(read_opportunities(directory))
    assert len(replayed) == len(traffic)
    assert all(o.weight == 1.0 and o.attributes["countries"] for o in replayed)
    table = read_history(directory, until=traffic.config.end)
    assert table.size == len(traffic)
    assert int(table.outcomes["click"].sum()) == stats.clicks
    assert int(table.outcomes["impression"].sum()) == stats.impressions


def test_decision_log_sample_keeps_a_share_and_says_so(traffic, tmp_path):
    stats = write_history(tmp_path / "events", traffic, sample=0.25)
    assert abs(stats.opportunities / len(traffic) - 0.25) < 0.02
    first = next(iter(read_opportunities(tmp_path / "events")))
    assert first.weight == pytest.approx(4.0)


def test_clicks_follow_the_hidden_model(traffic):
    """Observed click-through by device matches the model's mean probability (binomial bounds)."""
    model = ResponseModel()
    outcomes = draw_outcomes(traffic, fill_rate=1.0, model=model)
    rows = outcomes.rows
    probability = model.click_probability(
        traffic.device_class[rows], traffic.segments[rows], traffic.slot[rows].astype(np.int64)
    )
    for d, name in enumerate(DEVICE_CLASSES):
        mine = traffic.device_class[rows] == d
        if mine.sum() < 500:
            continue
        expected = probability[mine].sum()
        observed = outcomes.clicked[mine].sum()
        assert abs(observed - expected) < 4 * np.sqrt(expected) + 2, name
    mobile = traffic.device_class[rows] == DEVICE_CLASSES.index("mobile")
    speaker = traffic.device_class[rows] == DEVICE_CLASSES.index("smart_speaker")
    assert outcomes.clicked[mobile].mean() > 5 * outcomes.clicked[speaker].mean()


def test_same_seed_same_bytes(traffic):
    first = list(history_records(traffic, draw_outcomes(traffic)))
    second = list(history_records(traffic, draw_outcomes(traffic)))
    assert first == second


def test_listener_sample_keeps_whole_listeners(traffic):
    """Sampling by listener keeps all or none of each listener's requests, about the share asked."""
    outcomes = draw_outcomes(traffic, sample=0.3, sample_by="listener")
    kept = np.zeros(len(traffic), dtype=bool)
    kept[outcomes.rows] = True
    listeners = traffic.listener
    seen = np.bincount(listeners, minlength=len(traffic.audience))
    kept_per_listener = np.bincount(listeners[kept], minlength=len(traffic.audience))
    active = seen > 0
    assert np.all((kept_per_listener[active] == 0) | (kept_per_listener[active] == seen[active]))
    share_of_listeners = (kept_per_listener[active] > 0).mean()
    assert abs(share_of_listeners - 0.3) < 0.04
    with pytest.raises(InvalidInput):
        draw_outcomes(traffic, sample_by="household")
