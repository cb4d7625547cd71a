"""The durable, append-only event log: tracking and decision-log events on their way to counting.

A lower layer shared by serving (decision log), measurement (tracking, counting) and
forecasting (supply); it knows events only as payload bytes.
"""

from backbeat.eventlog.framing import (
    DEFAULT_DIRECTORY,
    DEFAULT_SEGMENT_BYTES,
    HEADER_BYTES,
    MAGIC,
    MAX_PAYLOAD_BYTES,
    EventLogClosed,
    EventLogUnavailable,
    encode_record,
)
from backbeat.eventlog.reader import (
    Checkpoint,
    Damage,
    EventLogReader,
    LogRecord,
    ReaderStats,
    read_events,
    read_records,
    yielding,
)
from backbeat.eventlog.writer import EventLogWriter

__all__ = [
    "DEFAULT_DIRECTORY",
    "DEFAULT_SEGMENT_BYTES",
    "HEADER_BYTES",
    "MAGIC",
    "MAX_PAYLOAD_BYTES",
    "Checkpoint",
    "Damage",
    "EventLogClosed",
    "EventLogReader",
    "EventLogUnavailable",
    "EventLogWriter",
    "LogRecord",
    "ReaderStats",
    "encode_record",
    "read_events",
    "read_records",
    "yielding",
]
