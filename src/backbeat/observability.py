"""Structured logs and the Prometheus metrics every Backbeat service exposes."""

from __future__ import annotations

import logging
import os
import secrets
import sys
from contextvars import ContextVar

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


def new_request_id() -> str:
    return secrets.token_hex(8)


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


def render_metrics() -> bytes:
    """Prometheus text; aggregates all worker processes when running multi-process."""
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
