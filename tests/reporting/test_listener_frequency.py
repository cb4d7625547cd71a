"""The frequency distribution: counted exactly once per impression, whatever the batching,
the repeats and the reruns, and bucketed as ad servers show it."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_incremental_counting import append, factory, run  # noqa: F401  (fixture)

from backbeat.events import Event, EventType
from backbeat.reporting.frequency import frequency_distribution

H0 = 1_790_002_800.0


def impressions(rng: random.Random, decisions: int) -> list[Event]:
    """Impression pixels (some repeated) and quartiles for listeners heavy and light."""
    events: list[Event] = []
    listeners = [f"listener-{n}" for n in range(25)]
    for n in range(decisions):
        # A few heavy listeners hear most ads; some requests carry no listener id.
        listener = rng.choice(listeners[:3] if rng.random() < 0.5 else listeners)
        if rng.random() < 0.05:
            listener = ""
        line_item = rng.randint(1, 3)
        t = H0 + rng.uniform(0, 3 * 3600)
        copies = rng.choice([1, 1, 1, 2, 3])
        for kind in (EventType.IMPRESSION, EventType.START):
            for _ in range(copies if kind == EventType.IMPRESSION else 1):
                events.append(Event(type=kind.value, ts=t + rng.uniform(0, 900),
                                    decision_id=f"d{n}", line_item_id=line_item,
                                    campaign_id=10, listener=listener,
                                    price_micros=2_000_000, currency="USD"))  # fmt: skip
    rng.shuffle(events)
    return events


def brute_force(events: list[Event]) -> dict[int, Counter[int]]:
    """Per line item: how many listeners heard it k times (one per distinct decision)."""
    heard: dict[tuple[int, str], set[str]] = defaultdict(set)
    for event in events:
        if event.type == EventType.IMPRESSION and event.listener:
            heard[(event.line_item_id, event.listener)].add(event.decision_id)
    out: dict[int, Counter[int]] = defaultdict(Counter)
    for (item, _), decisions in heard.items():
        out[item][len(decisions)] += 1
    return out


def observed(factory, item: int, top: int = 10) -> dict[int, int]:  # noqa: F811
    with factory() as session:
        distribution = frequency_distribution(session, item, top=top)
    return {b.low: b.listeners for b in distribution.buckets if b.listeners}


def expected(reference: dict[int, Counter[int]], item: int, top: int = 10) -> dict[int, int]:
    out: Counter[int] = Counter()
    for k, n in reference[item].items():
        out[min(k, top)] += n
    return dict(out)


def test_distribution_equals_brute_force_over_growing_log_and_reruns(factory, tmp_path: Path):  # noqa: F811
    rng = random.Random(3)
    events = impressions(rng, 400)
    for chunk in (events[:100], events[100:101], events[101:700], events[700:]):
        append(tmp_path, [e.to_bytes() for e in chunk])
        run(factory, tmp_path, batch_records=53)
    reference = brute_force(events)
    for item in (1, 2, 3):
        assert observed(factory, item) == expected(reference, item)
        assert observed(factory, item, top=3) == expected(reference, item, top=3)
    run(factory, tmp_path)  # nothing new: nothing changes
    run(factory, tmp_path, full=True)  # a full recount gives the same distribution
    for item in (1, 2, 3):
        assert observed(factory, item) == expected(reference, item)


def test_reach_average_frequency_and_buckets_by_hand(factory, tmp_path: Path):  # noqa: F811
    def hit(decision: str, listener: str) -> Event:
        return Event(type="impression", ts=H0, decision_id=decision, line_item_id=7,
                     campaign_id=1, listener=listener, price_micros=1, currency="USD")  # fmt: skip

    # a: 3 ads (one pixel fired twice), b: 1 ad, c: 12 ads, plus an ad with no listener.
    events = [hit("a1", "a"), hit("a1", "a"), hit("a2", "a"), hit("a3", "a"), hit("b1", "b")]
    events += [hit(f"c{n}", "c") for n in range(12)] + [hit("x", "")]
    append(tmp_path, [e.to_bytes() for e in events])
    run(factory, tmp_path)
    with factory() as session:
        distribution = frequency_distribution(session, 7, top=10)
        assert distribution.reach == 3 and distribution.impressions == 16
        assert distribution.average_frequency == pytest.approx(16 / 3)
        by_low = {b.low: (b.high, b.listeners, b.impressions) for b in distribution.buckets}
        assert by_low[1] == (1, 1, 1) and by_low[3] == (3, 1, 3) and by_low[10] == (None, 1, 12)
        assert by_low[2] == (2, 0, 0) and len(distribution.buckets) == 10
        assert frequency_distribution(session, 8).reach == 0  # another item: nothing


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(seed=st.integers(0, 10_000), batch=st.integers(1, 400))
def test_any_batching_gives_the_same_distribution(factory, tmp_path_factory, seed, batch):  # noqa: F811
    directory = tmp_path_factory.mktemp("log")
    events = impressions(random.Random(seed), 120)
    append(directory, [e.to_bytes() for e in events])
    run(factory, directory, batch_records=batch, full=True)
    reference = brute_force(events)
    for item in (1, 2, 3):
        assert observed(factory, item) == expected(reference, item)
