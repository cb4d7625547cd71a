"""Prometheus metrics of delivery counting runs (scraped from the API, or pushed by jobs)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

COUNTED_EVENTS = Counter(
    "backbeat_delivery_counted_events_total", "Delivery events counted (net of re-dating)"
)
DUPLICATES = Counter(
    "backbeat_delivery_duplicates_total", "Copies of an already counted (decision, event type)"
)
BAD_RECORDS = Counter(
    "backbeat_delivery_bad_records_total",
    "Records set aside by delivery counting (undecodable or invalid), by reason",
    ["reason"],
)
DAMAGED_BYTES = Gauge(
    "backbeat_eventlog_damaged_bytes",
    "Bytes found damaged in the middle of an event-log segment by the last counting run",
    ["segment"],
)
