"""Counting delivery from tracking events: once per decision and event, hourly, exact money."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from backbeat.events import DELIVERY_EVENTS, Event, EventType
from backbeat.measurement.delivery import count_delivery, hour_of

H0 = 1_790_002_800.0  # 2026-09-21T15:00:00Z, the start of an hour
HOUR_0 = datetime(2026, 9, 21, 15, tzinfo=UTC)


def served(
    decision: str,
    type: str = EventType.IMPRESSION,
    ts: float = H0,
    *,
    line_item: int = 1,
    campaign: int = 10,
    price: int = 2_500_000,
) -> Event:
    return Event(
        type=str(type),
        ts=ts,
        decision_id=decision,
        line_item_id=line_item,
        campaign_id=campaign,
        creative_id=5,
        slot_id=7,
        listener="l",
        price_micros=price,
        currency="USD",
    )


def test_hour_of_floors_to_the_utc_hour():
    assert hour_of(H0) == HOUR_0
    assert hour_of(H0 + 3599.999) == HOUR_0
    assert hour_of(H0 + 3600) == datetime(2026, 9, 21, 16, tzinfo=UTC)


def test_each_event_counts_once_per_decision_and_spend_is_exact():
    events = []
    for decision in ("d1", "d2", "d3"):
        for type in DELIVERY_EVENTS:
            events += [served(decision, type, H0 + 10)] * 4  # the same pixel, fired four times
    counts = count_delivery(events)
    assert list(counts.rows) == [(1, HOUR_0)]
    row = counts.rows[(1, HOUR_0)]
    assert (row.impressions, row.starts, row.first_quartiles, row.midpoints) == (3, 3, 3, 3)
    assert (row.third_quartiles, row.completes, row.clicks) == (3, 3, 3)
    assert row.spend == Decimal("0.0075")  # CPM 2.50 x 3 / 1000, exactly
    assert isinstance(row.spend, Decimal)
    assert (row.campaign_id, row.currency) == (10, "USD")
    assert counts.duplicates == 3 * len(DELIVERY_EVENTS) * 3
    assert counts.events_read == len(events)


def test_spend_keeps_every_decimal_of_the_cpm():
    counts = count_delivery([served(f"d{n}", price=1_234_567) for n in range(3)])
    assert counts.rows[(1, HOUR_0)].spend == Decimal("0.003703701")  # 1.234567 x 3 / 1000


def test_rows_are_hourly_per_line_item_and_the_earliest_copy_dates_an_event():
    counts = count_delivery(
        [
            served("d1", ts=H0 + 3700),  # a late copy, next hour
            served("d1", ts=H0 + 5),  # the earliest copy: this hour
            served("d2", ts=H0 + 3600),
            served("d3", ts=H0 + 100, line_item=2, campaign=11),
            served("d3", EventType.COMPLETE, ts=H0 + 3601, line_item=2, campaign=11),
        ]
    )
    next_hour = datetime(2026, 9, 21, 16, tzinfo=UTC)
    summary = {key: (row.impressions, row.completes, row.spend) for key, row in counts.rows.items()}
    assert summary == {
        (1, HOUR_0): (1, 0, Decimal("0.0025")),
        (1, next_hour): (1, 0, Decimal("0.0025")),
        (2, HOUR_0): (1, 0, Decimal("0.0025")),
        (2, next_hour): (0, 1, Decimal(0)),
    }
    assert counts.duplicates == 1


def test_only_delivery_of_filled_decisions_counts_and_rejections_are_tallied():
    counts = count_delivery(
        [
            Event(type=EventType.REJECTED, ts=H0 + 1, reason="invalid-signature"),
            Event(type=EventType.REJECTED, ts=H0 + 2, reason="invalid-signature"),
            Event(type=EventType.REJECTED, ts=H0 + 3601, reason="expired"),
            Event(type=EventType.REJECTED, ts=H0 + 3602),
            Event(type=EventType.ERROR, ts=H0, decision_id="d9", line_item_id=1),
            Event(type=EventType.OPPORTUNITY, ts=H0, decision_id="d9", line_item_id=1),
            Event(type=EventType.IMPRESSION, ts=H0, decision_id="nofill"),  # no line item
            Event(type=EventType.IMPRESSION, ts=H0, line_item_id=1),  # no decision
        ]
    )
    assert counts.rows == {}
    next_hour = datetime(2026, 9, 21, 16, tzinfo=UTC)
    assert counts.rejected == {
        (HOUR_0, "invalid-signature"): 2,
        (next_hour, "expired"): 1,
        (next_hour, "unknown"): 1,
    }
    assert counts.events_read == 8


decisions = st.lists(
    st.tuples(
        st.sampled_from([1, 2, 3]),  # line item
        st.integers(0, 10**9),  # CPM micros
        st.lists(st.sampled_from(list(DELIVERY_EVENTS)), min_size=1, unique=True),
        st.floats(0, 3 * 3600, allow_nan=False),  # offset of the first copy
    ),
    max_size=25,
)


@settings(max_examples=80, deadline=None)
@given(booked=decisions, copies=st.lists(st.integers(0, 3), min_size=1), seed=st.integers())
def test_counts_ignore_repeats_and_arrival_order(booked, copies, seed):
    originals = [
        served(f"d{n}", type, H0 + offset, line_item=li, campaign=li * 10, price=price)
        for n, (li, price, types, offset) in enumerate(booked)
        for type in types
    ]
    rng = random.Random(seed)
    noisy = list(originals)
    for n, event in enumerate(originals):
        extra = copies[n % len(copies)]
        # repeats fire later than the first copy (a retrying player), never earlier
        noisy += [
            served(
                event.decision_id,
                event.type,
                event.ts + rng.uniform(0, 7200),
                line_item=event.line_item_id,
                campaign=event.campaign_id,
                price=event.price_micros,
            )
            for _ in range(extra)
        ]
    rng.shuffle(noisy)
    once, noisy_counts = count_delivery(originals), count_delivery(noisy)
    assert noisy_counts.rows == once.rows
    assert noisy_counts.duplicates == len(noisy) - len(originals)
    # totals agree with a direct tally of the decisions
    impressions = [(li, price) for li, price, types, _ in booked if EventType.IMPRESSION in types]
    assert sum(row.impressions for row in once.rows.values()) == len(impressions)
    total = sum((row.spend for row in once.rows.values()), Decimal(0))
    assert total == sum((Decimal(price) for _, price in impressions), Decimal(0)) / 10**9
    for (li, hour), row in once.rows.items():
        assert row.line_item_id == li and row.campaign_id == li * 10
        assert hour.minute == hour.second == hour.microsecond == 0
