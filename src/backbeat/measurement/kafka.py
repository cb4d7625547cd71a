"""Publishing event-log records to Kafka after they are durable on local disk.

The local event log stays the record of truth: a record is published only once its
append has been fsynced (the append's future resolved), so a broker outage never loses
or delays an acknowledged event; it only delays the copy on the topic. The producer is
idempotent (``enable.idempotence``: no duplicates from its own retries, order kept per
partition) and keys each record by its decision id, so every event of one ad decision
lands in one partition in order. Copies can still repeat (a restart republishing is not
possible here, but a pixel fired twice is two records); consumers de-duplicate by
(decision, event type) exactly as they do for the local log.

Without ``BACKBEAT_KAFKA_BOOTSTRAP`` none of this is loaded.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

import orjson
from prometheus_client import Counter

from backbeat.observability import log

if TYPE_CHECKING:
    from collections.abc import Mapping

    from backbeat.eventlog import EventLogWriter

PUBLISHED = Counter("backbeat_kafka_published_total", "Records the broker acknowledged")
PUBLISH_FAILED = Counter(
    "backbeat_kafka_publish_failures_total",
    "Records not published (queue full or broker error); they stay in the local event log",
)


def decision_key(payload: bytes) -> bytes | None:
    """The partition key of a record: its decision id (None for records without one)."""
    try:
        decision = orjson.loads(payload).get("decision_id")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return decision.encode() if isinstance(decision, str) and decision else None


class KafkaPublisher:
    """An idempotent producer for one topic; ``publish`` never blocks the caller."""

    def __init__(
        self, bootstrap: str, topic: str, *, config: Mapping[str, Any] | None = None
    ) -> None:
        from confluent_kafka import Producer

        self.topic = topic
        self._producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "client.id": "backbeat",
                **(config or {}),
            }
        )
        self._lock = threading.Lock()
        self._stop = threading.Event()
        # Delivery reports are served by poll(); a small thread keeps them flowing.
        self._poller = threading.Thread(target=self._poll, name="kafka-publisher", daemon=True)
        self._poller.start()

    def publish(self, payload: bytes, key: bytes | None = None) -> None:
        """Queue one record; failures are counted and logged, never raised."""
        try:
            with self._lock:
                self._producer.produce(
                    self.topic,
                    value=payload,
                    key=key if key is not None else decision_key(payload),
                    on_delivery=_delivered,
                )
        except Exception as error:  # noqa: BLE001 - queue full or closed: the local log has it
            PUBLISH_FAILED.inc()
            log.warning("kafka.publish_failed", error=str(error))

    def flush(self, timeout: float = 10.0) -> int:
        """Wait for queued records; returns how many are still undelivered."""
        return int(self._producer.flush(timeout))

    def close(self, timeout: float = 10.0) -> None:
        left = self.flush(timeout)
        self._stop.set()
        self._poller.join(timeout=1.0)
        if left:
            PUBLISH_FAILED.inc(left)
            log.warning("kafka.unflushed_at_close", records=left)

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.1)


def _delivered(error: Any, _message: Any) -> None:
    if error is None:
        PUBLISHED.inc()
    else:
        PUBLISH_FAILED.inc()
        log.warning("kafka.delivery_failed", error=str(error))


class PublishingEventLog:
    """An event-log writer that also publishes each record once it is durable.

    Drop-in for :class:`~backbeat.eventlog.EventLogWriter` where the app appends tracking
    and decision-log records: ``append``/``append_async`` publish after the local fsync;
    everything else is the writer's.
    """

    def __init__(self, writer: EventLogWriter, publisher: KafkaPublisher) -> None:
        self._writer = writer
        self.publisher = publisher

    def append(self, payload: bytes) -> Future[None]:
        future = self._writer.append(payload)

        def publish(done: Future[None]) -> None:
            if done.exception() is None:
                self.publisher.publish(payload)

        future.add_done_callback(publish)
        return future

    async def append_async(self, payload: bytes) -> None:
        await asyncio.wrap_future(self.append(payload))

    def close(self) -> None:
        self._writer.close()
        self.publisher.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._writer, name)
