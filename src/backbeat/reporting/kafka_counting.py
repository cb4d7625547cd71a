"""Counting delivery from a Kafka topic, exactly once, with offsets kept in the database.

The consumer assigns itself every partition of the topic (no consumer-group join, no
offsets committed to Kafka) and starts each at the next offset stored in ``counting_state``
for consumer ``kafka:<topic>``. Each batch is counted by the same code as the local event
log and committed in one transaction with the offsets after it, so a consumer killed at any
point and started again re-reads exactly the uncommitted records. Run one counting source
per database: the local log and the topic carry the same events.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from backbeat.errors import InvalidInput
from backbeat.observability import log
from backbeat.reporting.counting import (
    CountingPolicy,
    commit_batch,
    positions_of,
    reset_counts,
    state_of,
)
from backbeat.reporting.service import DeliveryRun, totals

DEFAULT_IDLE_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class KafkaSource:
    """Where to read: bootstrap servers, topic, extra librdkafka settings (e.g. SASL/TLS)."""

    bootstrap: str
    topic: str
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def consumer_name(self) -> str:
        return f"kafka:{self.topic}"[:64]


def kafka_source(settings: Any) -> KafkaSource:
    if not settings.kafka_bootstrap:
        raise InvalidInput(
            "set BACKBEAT_KAFKA_BOOTSTRAP (and BACKBEAT_KAFKA_TOPIC) to count from Kafka",
            reason="kafka-not-configured",
        )
    return KafkaSource(bootstrap=settings.kafka_bootstrap, topic=settings.kafka_topic)


def _position(partition: int, source: KafkaSource) -> str:
    return f"{source.topic}:{partition}"


def count_from_kafka(
    *,
    session: Session,
    source: KafkaSource,
    policy: CountingPolicy | None = None,
    full: bool = False,
    batch_records: int = 10_000,
    commit: Callable[[], None] | None = None,
    idle_seconds: float = DEFAULT_IDLE_SECONDS,
    follow: bool = False,
    max_batches: int | None = None,
) -> DeliveryRun:
    """Count the topic from the stored offsets until caught up (or for ever with ``follow``).

    Caught up means every partition reported its end, or nothing arrived for
    ``idle_seconds``. ``max_batches`` stops early (tests, bounded runs).
    """
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

    policy = policy or CountingPolicy()
    consumer_name = source.consumer_name
    if full:
        reset_counts(session, consumer_name)
    positions = positions_of(state_of(session, consumer_name))
    committed = dict(positions)
    consumer = Consumer(
        {
            "bootstrap.servers": source.bootstrap,
            # Required by the client even with manual assignment; nothing is committed to it.
            "group.id": f"backbeat-{consumer_name}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
            **source.config,
        }
    )
    batches = new_records = bad_records = 0
    try:
        metadata = consumer.list_topics(source.topic, timeout=10)
        topic = metadata.topics.get(source.topic)
        if topic is None or topic.error is not None:
            raise InvalidInput(
                f"Kafka topic {source.topic!r} is not available", reason="kafka-topic-unavailable"
            )
        partitions = sorted(topic.partitions)
        consumer.assign(
            [
                TopicPartition(
                    source.topic, p, positions.get(_position(p, source), OFFSET_BEGINNING)
                )
                for p in partitions
            ]
        )
        at_end: set[int] = set()
        idle_since = time.monotonic()
        while max_batches is None or batches < max_batches:
            messages = consumer.consume(num_messages=batch_records, timeout=0.5)
            records: list[tuple[str, bytes]] = []
            for message in messages:
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        at_end.add(message.partition())
                        continue
                    raise InvalidInput(f"Kafka error: {error}", reason="kafka-error")
                partition, offset = message.partition(), message.offset()
                at_end.discard(partition)
                key = _position(partition, source)
                records.append((f"{key}@{offset}", message.value() or b""))
                positions[key] = offset + 1
            if records:
                if positions_of(state_of(session, consumer_name)) != committed:
                    log.info("delivery.concurrent_run", consumer=consumer_name)
                    break  # another consumer committed these offsets first
                outcome = commit_batch(
                    session,
                    consumer=consumer_name,
                    records=records,
                    positions=dict(positions),
                    policy=policy,
                )
                if commit is not None:
                    commit()
                committed = dict(positions)
                batches += 1
                new_records += len(records)
                bad_records += outcome.bad_records
                idle_since = time.monotonic()
                continue
            caught_up = at_end >= set(partitions) or time.monotonic() - idle_since > idle_seconds
            if caught_up and not follow:
                break
    finally:
        consumer.close()
    log.info("delivery.kafka_counted", topic=source.topic, records=new_records, batches=batches)
    return DeliveryRun(
        totals=totals(session, consumer_name),
        new_records=new_records,
        batches=batches,
        bad_records=bad_records,
        damaged_bytes=0,
        damage=(),
        full=full,
    )
