"""Structured logs and the Prometheus metrics every Backbeat service exposes."""

from __future__ import annotations

import asyncio
import bisect
import itertools
import logging
import os
import secrets
import sys
import threading
from contextvars import ContextVar
from typing import Any

import structlog
from prometheus_client import REGISTRY as DEFAULT_REGISTRY
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

log = structlog.get_logger("backbeat")

# The id of the request being handled: in every log line (``request_id``) and problem body.
REQUEST_ID: ContextVar[str | None] = ContextVar("backbeat_request_id", default=None)
# ASGI scope key: the ``X-Request-ID`` header pair, for handlers that answer it themselves.
REQUEST_ID_HEADER = "backbeat.request_id_header"


_request_ids = itertools.count()
_request_id_prefix = secrets.token_hex(4)


def _new_request_id_prefix() -> None:
    global _request_id_prefix, _request_ids
    _request_id_prefix, _request_ids = secrets.token_hex(4), itertools.count()


os.register_at_fork(after_in_child=_new_request_id_prefix)  # a forked worker numbers anew


def new_request_id() -> str:
    """16 hex digits: a random prefix per process and a counter.

    Ids only need to be unique, not unguessable: a counter costs no ``getrandom`` system
    call per request (``secrets.token_hex`` did, on every ``/vast`` and pixel).
    """
    number = next(_request_ids)
    if number >= 1 << 32:
        _new_request_id_prefix()
        number = next(_request_ids)
    return f"{_request_id_prefix}{number:08x}"


def _add_request_id(_logger: object, _method: str, event: dict[str, object]) -> dict[str, object]:
    request_id = REQUEST_ID.get()
    if request_id is not None:
        event.setdefault("request_id", request_id)
    return event


def configure_logging(level: str = "INFO", *, json: bool = True) -> None:
    """JSON lines on stderr (or a console renderer for humans).

    JSON lines carry an exception's type, message and frames (``exception``), not just
    ``exc_info: true``, so a 500 in production can be diagnosed from its log line.
    """
    logging.basicConfig(format="%(message)s", stream=sys.stderr, level=level.upper())
    renderer = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    tracebacks = [structlog.processors.dict_tracebacks] if json else []
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            _add_request_id,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            *tracebacks,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )


HTTP_REQUESTS = Counter(
    "backbeat_http_requests_total", "HTTP requests", ["route", "method", "status"]
)
HTTP_LATENCY = Histogram(
    "backbeat_http_request_seconds",
    "HTTP request latency",
    ["route"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0),
)
DECISIONS = Counter("backbeat_decisions_total", "Ad decisions", ["result", "reason"])
TRACKING_EVENTS = Counter("backbeat_tracking_events_total", "Tracking events accepted", ["event"])
TRACKING_REJECTED = Counter(
    "backbeat_tracking_rejected_total", "Tracking hits rejected", ["reason"]
)
SNAPSHOT_VERSION = Gauge(
    "backbeat_catalog_snapshot_version", "Catalog version being served", multiprocess_mode="max"
)
SNAPSHOT_LINE_ITEMS = Gauge(
    "backbeat_catalog_snapshot_line_items", "Servable line items", multiprocess_mode="max"
)
SNAPSHOT_REFRESHES = Counter("backbeat_catalog_snapshot_refreshes_total", "Snapshot rebuilds")
EVENTLOG_APPEND_FAILURES = Counter(
    "backbeat_eventlog_append_failures_total", "Events not made durable"
)
EVENTLOG_UNAWAITED_DROPPED = Counter(
    "backbeat_eventlog_unawaited_dropped_total",
    "Records nobody waited for (decision log, fills, rejected pixels) lost to failed writes",
)
DECISION_LOG_DROPPED = Counter(
    "backbeat_decision_log_dropped_total",
    "Decision-log (opportunity) records that could not be written to the event log",
)
RATE_LIMITED = Counter(
    "backbeat_rate_limited_total", "Requests refused by a rate limit (429)", ["limit"]
)
DATABASE_ERRORS = Counter(
    "backbeat_database_unavailable_total",
    "Requests answered 503 because the database refused, timed out or was exhausted",
    ["error"],
)
REQUESTS_REFUSED = Counter(
    "backbeat_requests_refused_total",
    "Requests refused before reaching a route (body too large, too slow)",
    ["reason"],
)


class Tally:
    """Counts and latencies of the hot paths, kept in plain numbers and flushed to Prometheus
    at most ``flush_seconds`` later (and before this process renders ``/metrics``).

    With ``--workers N`` every Prometheus update is a locked write into a shared memory
    map plus a ``getpid`` system call; a pixel made three of them. Here a request adds to
    a dict, and one flush per quarter second writes the sums.
    """

    def __init__(self, flush_seconds: float = 0.25) -> None:
        self.flush_seconds = flush_seconds
        self._lock = threading.Lock()
        self._counts: dict[Any, int] = {}
        self._latencies: dict[Any, list[float]] = {}  # child -> [sum, count per bucket...]
        self._scheduled: asyncio.AbstractEventLoop | None = None  # the loop a flush is due on

    def count(self, counter: Any, amount: int = 1) -> None:
        """``counter.inc(amount)``, later; ``counter`` is a labelled child."""
        with self._lock:
            self._counts[counter] = self._counts.get(counter, 0) + amount
        self._schedule()

    def observe(self, histogram: Any, seconds: float) -> None:
        """``histogram.observe(seconds)``, later; ``histogram`` is a labelled child."""
        with self._lock:
            tally = self._latencies.get(histogram)
            if tally is None:
                tally = self._latencies[histogram] = [0.0] * (len(histogram._upper_bounds) + 1)
            tally[0] += seconds
            # The first bucket whose upper bound holds it, as ``Histogram.observe`` picks.
            tally[1 + bisect.bisect_left(histogram._upper_bounds, seconds)] += 1
        self._schedule()

    def _schedule(self) -> None:
        if self._scheduled is not None and not self._scheduled.is_closed():
            return  # a flush is due on a live loop (a closed one never runs it)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a thread, a test): write at once
            self.flush()
            return
        self._scheduled = loop
        loop.call_later(self.flush_seconds, self.flush)

    def flush(self) -> None:
        with self._lock:
            counts, self._counts = self._counts, {}
            latencies, self._latencies = self._latencies, {}
            self._scheduled = None
        for counter, amount in counts.items():
            counter.inc(amount)
        for histogram, tally in latencies.items():
            histogram._sum.inc(tally[0])
            for bucket, amount in zip(histogram._buckets, tally[1:], strict=True):
                if amount:
                    bucket.inc(amount)


TALLY = Tally()


def render_metrics() -> bytes:
    """Prometheus text; aggregates all worker processes when running multi-process."""
    TALLY.flush()  # this process's hot-path counts; other workers flush on their own timer
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest(DEFAULT_REGISTRY)


REDIS_UP = Gauge(
    "backbeat_redis_up",
    "1 while the shared ledger reaches Redis; 0 while it serves on held leases alone",
    multiprocess_mode="min",
)
REDIS_ERRORS = Counter(
    "backbeat_redis_errors_total", "Failed Redis calls of the shared ledger", ["operation"]
)
REDIS_ROUND_TRIPS = Counter(
    "backbeat_redis_round_trips_total", "Redis round trips of the shared ledger", ["operation"]
)
