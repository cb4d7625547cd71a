"""Incremental delivery counting: exactly once across runs, failures, bad records and damage."""

from __future__ import annotations

import random
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select

from backbeat.db import make_engine, make_session_factory, migrate, session_scope
from backbeat.eventlog import HEADER_BYTES, EventLogReader, EventLogWriter
from backbeat.events import DELIVERY_EVENTS, Event, EventType
from backbeat.measurement.delivery import count_delivery
from backbeat.measurement.models import CountedEvent, RejectedRecord
from backbeat.reporting import counting
from backbeat.reporting.counting import CountingPolicy
from backbeat.reporting.models import DeliveryHourly, RejectedHourly
from backbeat.reporting.service import COUNT_COLUMNS as COLUMNS
from backbeat.reporting.service import EventLogDamaged, count_event_log

H0 = 1_790_002_800.0  # 2026-09-21T15:00:00Z


def traffic(rng: random.Random, decisions: int, *, start: float = H0) -> list[Event]:
    """Pixels of ``decisions`` ads over a few hours: drop-off, repeats, late copies, forgeries."""
    events: list[Event] = []
    for n in range(decisions):
        t = start + rng.uniform(0, 4 * 3600)
        line_item = rng.randint(1, 4)
        price = rng.choice([2_500_000, 1_234_567, 10_000_001])
        for kind in DELIVERY_EVENTS[: rng.randint(1, len(DELIVERY_EVENTS))]:
            for _ in range(rng.choice([1, 1, 1, 2, 3])):  # repeated pixels
                events.append(
                    Event(
                        type=str(kind),
                        ts=t + rng.uniform(0, 5000),  # a copy may land in the next hour
                        decision_id=f"d{n}",
                        line_item_id=line_item,
                        campaign_id=100 + line_item,
                        price_micros=price,
                        currency="USD",
                    )
                )
        if rng.random() < 0.05:
            events.append(
                Event(
                    type=EventType.REJECTED, ts=t, decision_id=f"d{n}", reason="invalid-signature"
                )
            )
    rng.shuffle(events)  # arrival order is not event-time order
    return events


def append(directory: Path, payloads: list[bytes]) -> None:
    with EventLogWriter(directory) as writer:
        for future in [writer.append(p) for p in payloads]:
            future.result(timeout=10)


def table(session) -> dict[tuple[int, datetime], tuple]:
    return {
        (row.line_item_id, row.hour): (
            *(getattr(row, c) for c in COLUMNS),
            row.spend,
            row.campaign_id,
            row.currency,
        )
        for row in session.execute(select(DeliveryHourly)).scalars()
        if any(getattr(row, c) for c in COLUMNS)
    }


def reference(events: list[Event]) -> dict[tuple[int, datetime], tuple]:
    """The plain in-memory count of the whole log: earliest copy per (decision, type)."""
    counts = count_delivery(events)
    return {
        key: (*(getattr(row, c) for c in COLUMNS), row.spend, row.campaign_id, row.currency)
        for key, row in counts.rows.items()
    }


@pytest.fixture
def factory(database_url: str):
    migrate(database_url)
    engine = make_engine(database_url)
    yield make_session_factory(engine)
    engine.dispose()


def run(factory, directory: Path, **options) -> object:
    with session_scope(factory) as session:
        return count_event_log(
            session=session, event_log_dir=directory, commit=session.commit, **options
        )


def test_runs_over_a_growing_log_equal_one_full_recount(factory, tmp_path: Path) -> None:
    rng = random.Random(11)
    events = traffic(rng, 120)
    chunks = [events[:150], events[150:151], events[151:400], events[400:]]
    for chunk in chunks:  # events arrive, a run counts them, more arrive...
        append(tmp_path, [e.to_bytes() for e in chunk])
        run(factory, tmp_path, batch_records=97)
    with factory() as session:
        incremental = table(session)
        totals = counting.state_of(session, "eventlog")
        assert totals.events_read == len(events)
        copies = sum(1 for e in events if e.type != EventType.REJECTED)
        distinct = len({(e.decision_id, e.type) for e in events if e.type != EventType.REJECTED})
        assert totals.duplicates == copies - distinct
    assert incremental == reference(events)
    again = run(factory, tmp_path)  # nothing new: nothing changes
    assert again.new_records == 0
    full = run(factory, tmp_path, full=True)
    assert full.totals.events_read == len(events)
    with factory() as session:
        assert table(session) == incremental
        rejected = sum(r.count for r in session.execute(select(RejectedHourly)).scalars())
    assert rejected == sum(1 for e in events if e.type == EventType.REJECTED)


def test_an_earlier_copy_read_in_a_later_run_moves_the_count_to_its_hour(
    factory, tmp_path: Path
) -> None:
    late = Event(
        type="impression",
        ts=H0 + 3700,
        decision_id="d",
        line_item_id=1,
        campaign_id=2,
        price_micros=3_000_000,
        currency="EUR",
    )
    early = Event(
        type="impression",
        ts=H0 + 10,
        decision_id="d",
        line_item_id=1,
        campaign_id=2,
        price_micros=3_000_000,
        currency="EUR",
    )
    append(tmp_path, [late.to_bytes()])
    run(factory, tmp_path)
    append(tmp_path, [early.to_bytes()])
    run(factory, tmp_path)
    with factory() as session:
        assert table(session) == reference([late, early])
        assert session.get(CountedEvent, ("d", "impression")).ts == early.ts


@pytest.mark.parametrize("fail_at", [1, 2, 3, 4, 5, 6])
def test_a_run_failing_between_any_two_steps_then_rerun_counts_exactly_once(
    factory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail_at: int
) -> None:
    events = traffic(random.Random(fail_at), 40)
    append(tmp_path, [e.to_bytes() for e in events])
    real = counting._upsert
    calls = 0

    def failing(*args, **kwargs):
        nonlocal calls
        calls += 1
        if calls == fail_at:
            raise RuntimeError("injected failure")
        return real(*args, **kwargs)

    monkeypatch.setattr(counting, "_upsert", failing)
    with pytest.raises(RuntimeError, match="injected"):
        run(factory, tmp_path, batch_records=60)  # the failure hits the 1st or 2nd batch
    monkeypatch.setattr(counting, "_upsert", real)
    run(factory, tmp_path, batch_records=60)
    with factory() as session:
        assert table(session) == reference(events)
        assert counting.state_of(session, "eventlog").events_read == len(events)


def test_bad_records_are_set_aside_counted_and_never_fail_the_run(factory, tmp_path: Path) -> None:
    good = Event(
        type="impression",
        ts=H0,
        decision_id="ok",
        line_item_id=1,
        campaign_id=1,
        price_micros=1_000_000,
        currency="USD",
    )
    forged_currency = {
        **{
            k: getattr(good, k)
            for k in ("type", "ts", "line_item_id", "campaign_id", "price_micros")
        },
        "decision_id": "x",
        "currency": "usd1",
    }
    import orjson

    append(
        tmp_path,
        [
            good.to_bytes(),
            orjson.dumps(forged_currency),
            b"{not json",
            orjson.dumps(
                {
                    "type": "click",
                    "ts": H0,
                    "decision_id": "y",
                    "line_item_id": "7",
                    "currency": "USD",
                }
            ),
        ],
    )
    result = run(factory, tmp_path)
    assert result.bad_records == 3
    with factory() as session:
        reasons = sorted(r.reason for r in session.execute(select(RejectedRecord)).scalars())
        assert reasons == ["invalid-currency", "invalid-line-item", "malformed-json"]
        assert counting.state_of(session, "eventlog").bad_records == 3
        assert table(session) == reference([good])
    assert run(factory, tmp_path).bad_records == 0  # set aside once, not re-read


def test_damage_in_the_middle_fails_the_run_until_accepted(factory, tmp_path: Path) -> None:
    events = [
        Event(
            type="impression",
            ts=H0 + i,
            decision_id=f"d{i}",
            line_item_id=1,
            campaign_id=1,
            price_micros=2_000_000,
            currency="USD",
        )
        for i in range(30)
    ]
    payloads = [e.to_bytes() for e in events]
    append(tmp_path, payloads)
    (segment,) = EventLogReader(tmp_path).segments()
    data = bytearray((tmp_path / segment).read_bytes())
    starts = [0]
    for payload in payloads:
        starts.append(starts[-1] + HEADER_BYTES + len(payload))
    frame = starts[13] - starts[12]
    data[starts[12] + 20] ^= 0xFF  # inside record 12
    (tmp_path / segment).write_bytes(bytes(data))

    with pytest.raises(EventLogDamaged) as info:
        run(factory, tmp_path)
    assert info.value.context["segment"] == segment and info.value.context["offset"] == starts[12]
    with factory() as session:
        assert table(session) == {}  # nothing was committed: the numbers did not shrink silently
    accepted = run(factory, tmp_path, accept_damage=True)
    assert accepted.damaged_bytes == frame
    survivors = events[:12] + events[13:]
    with factory() as session:
        assert table(session) == reference(survivors)
    full = run(factory, tmp_path, full=True)  # the accepted damage no longer fails a recount
    assert full.totals.events_read == 29
    with factory() as session:
        assert table(session) == reference(survivors)
        assert counting.state_of(session, "eventlog").damaged_bytes == frame


def test_deduplication_state_lives_only_as_long_as_a_tracking_url(factory, tmp_path: Path) -> None:
    ttl = 3600
    policy = CountingPolicy(ttl_seconds=ttl, grace_seconds=600)
    old = Event(
        type="impression",
        ts=H0,
        decision_id="old",
        line_item_id=1,
        campaign_id=1,
        price_micros=0,
        currency="USD",
    )
    new = Event(
        type="impression",
        ts=H0 + ttl + 601 + 1,
        decision_id="new",
        line_item_id=1,
        campaign_id=1,
        price_micros=0,
        currency="USD",
    )
    append(tmp_path, [old.to_bytes()])
    run(factory, tmp_path, policy=policy)
    append(tmp_path, [new.to_bytes()])
    run(factory, tmp_path, policy=policy)
    with factory() as session:
        kept = [row.decision_id for row in session.execute(select(CountedEvent)).scalars()]
    assert kept == ["new"]
    assert sum(v[0] for v in reference([old, new]).values()) == 2


def test_spend_stays_exact(factory, tmp_path: Path) -> None:
    events = [
        Event(
            type="impression",
            ts=H0,
            decision_id=f"d{n}",
            line_item_id=1,
            campaign_id=1,
            price_micros=1_234_567,
            currency="USD",
        )
        for n in range(3)
    ]
    append(tmp_path, [e.to_bytes() for e in events])
    run(factory, tmp_path)
    with factory() as session:
        (row,) = session.execute(select(DeliveryHourly)).scalars()
    assert row.spend == Decimal("0.003703701")  # 1.234567 x 3 / 1000


@pytest.mark.slow
def test_the_beam_runner_and_the_in_process_path_count_alike(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from backbeat.measurement import delivery_deltas
    from backbeat.measurement.delivery_deltas import count_deltas

    monkeypatch.setattr(delivery_deltas, "BATCH_RECORDS", 37)  # many batches, many buckets

    events = traffic(random.Random(5), 60)
    records = [(str(n), e.to_bytes()) for n, e in enumerate(events)] + [("bad", b"[1, 2")]
    half = len(records) // 2
    first = count_deltas(records[:half], {})
    on_beam = count_deltas(records[half:], first.state, beam_min_records=1)
    in_process = count_deltas(records[half:], first.state)
    assert sorted(on_beam.deltas) == sorted(in_process.deltas)
    assert on_beam.state == in_process.state
    assert (on_beam.duplicates, on_beam.read, on_beam.watermark) == (
        in_process.duplicates,
        in_process.read,
        in_process.watermark,
    )
    assert sorted(on_beam.rejected) == sorted(in_process.rejected)
    assert on_beam.bad == in_process.bad == [("bad", "malformed-json", "[1, 2")]


def test_two_runs_at_once_never_count_a_record_twice(factory, tmp_path: Path) -> None:
    import threading

    events = traffic(random.Random(8), 150)
    append(tmp_path, [e.to_bytes() for e in events])
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def one_run() -> None:
        start.wait()
        try:
            run(factory, tmp_path, batch_records=15)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=one_run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    with factory() as session:
        assert table(session) == reference(events)
        assert counting.state_of(session, "eventlog").events_read == len(events)
