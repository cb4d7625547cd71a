"""Reading the event log back: every segment in name order, torn tails told from live writes."""

from __future__ import annotations

import fcntl
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import orjson

from backbeat.eventlog.framing import (
    HEADER,
    HEADER_BYTES,
    MAGIC,
    MAX_PAYLOAD_BYTES,
    READ_CHUNK,
    SEGMENT_NAME,
)
from backbeat.events import Event

if TYPE_CHECKING:
    from collections.abc import Generator, Iterator, Mapping


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One record as read back, with where it sits so a job can report or resume."""

    segment: str
    offset: int
    payload: bytes

    @property
    def end(self) -> int:
        """Offset just past this record in its segment."""
        return self.offset + HEADER_BYTES + len(self.payload)


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Bytes already consumed in each segment.

    A single (segment, offset) would not do: several writers append to their own
    segments at once, so a segment sorting before the last one read can still grow.
    """

    offsets: Mapping[str, int] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return orjson.dumps({"v": 1, "offsets": dict(sorted(self.offsets.items()))})

    @classmethod
    def from_json(cls, data: bytes | str) -> Checkpoint:
        return cls(offsets=dict(orjson.loads(data)["offsets"]))


@dataclass(frozen=True, slots=True)
class ReaderStats:
    """Counters of a reader, cumulative over its scans except ``pending_bytes``.

    ``pending_bytes`` is what the last scan found unreadable at the end of segments whose
    writer is still running (a batch being written); it is retried on the next scan.
    """

    records_read: int = 0
    segments_read: int = 0
    torn_tails: int = 0
    bytes_skipped: int = 0
    pending_bytes: int = 0


class EventLogReader:
    """Reads every segment of a directory in name order, skipping torn tails."""

    def __init__(self, directory: Path, *, start: Checkpoint | None = None) -> None:
        self.directory = Path(directory)
        self._offsets: dict[str, int] = dict(start.offsets) if start else {}
        self._records_read = 0
        self._segments_read = 0
        self._torn_tails = 0
        self._bytes_skipped = 0
        self._pending_bytes = 0

    @property
    def stats(self) -> ReaderStats:
        return ReaderStats(
            records_read=self._records_read,
            segments_read=self._segments_read,
            torn_tails=self._torn_tails,
            bytes_skipped=self._bytes_skipped,
            pending_bytes=self._pending_bytes,
        )

    @property
    def checkpoint(self) -> Checkpoint:
        """Position after the last record yielded (and past torn tails already counted)."""
        return Checkpoint(offsets=dict(self._offsets))

    def segments(self) -> list[str]:
        """Segment names present now, in reading order; other files are ignored."""
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        return sorted(n for n in names if SEGMENT_NAME.match(n))

    def records(self) -> Iterator[LogRecord]:
        """Yield records not read yet; call again later to pick up what was appended since."""
        self._pending_bytes = 0
        for name in self.segments():
            start = self._offsets.get(name, 0)
            try:
                f = open(self.directory / name, "rb")  # noqa: SIM115 - closed below
            except FileNotFoundError:
                continue  # removed by retention since the listing
            with f:
                live, size = _probe(f)
                if start >= size:
                    continue
                self._segments_read += 1
                f.seek(start)
                end = yield from self._scan(f, name, start, size)
            if end < size:
                if live:
                    self._pending_bytes += size - end
                else:
                    # The writer is gone and never reopens a segment, so these bytes
                    # will never become a record: count them once and move past them.
                    self._torn_tails += 1
                    self._bytes_skipped += size - end
                    self._offsets[name] = size

    def _scan(
        self, f: BinaryIO, name: str, start: int, size: int
    ) -> Generator[LogRecord, None, int]:
        """Yield valid records of one segment from ``start``; return where they stop."""
        unpack = HEADER.unpack_from
        buf = b""
        i = 0
        left = size - start
        pos = start
        while True:
            if len(buf) - i < HEADER_BYTES and left:
                buf, i, left = _refill(f, buf, i, left, HEADER_BYTES)
            if len(buf) - i < HEADER_BYTES:
                return pos
            magic, length, crc = unpack(buf, i)
            if magic != MAGIC or length > MAX_PAYLOAD_BYTES:
                return pos
            total = HEADER_BYTES + length
            if len(buf) - i < total and left:
                buf, i, left = _refill(f, buf, i, left, total)
            if len(buf) - i < total:
                return pos
            payload = buf[i + HEADER_BYTES : i + total]
            if zlib.crc32(payload) != crc:
                return pos
            record = LogRecord(name, pos, payload)
            i += total
            pos += total
            # Recorded before the yield: once a consumer holds a record, a checkpoint
            # taken then already covers it.
            self._offsets[name] = pos
            self._records_read += 1
            yield record


def _probe(f: BinaryIO) -> tuple[bool, int]:
    """Whether the segment's writer is alive, and the size to read up to.

    The size is taken while holding the shared lock: a writer locks its segment before
    writing, so bytes past this size may belong to a writer that locked after the probe
    and must not be judged as torn now.
    """
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True, os.fstat(f.fileno()).st_size
    try:
        return False, os.fstat(f.fileno()).st_size
    finally:
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _refill(f: BinaryIO, buf: bytes, i: int, left: int, need: int) -> tuple[bytes, int, int]:
    have = len(buf) - i
    data = f.read(min(left, max(READ_CHUNK, need - have)))
    # A short read means the file shrank under us; stop at what we have.
    left = left - len(data) if data else 0
    return buf[i:] + data, 0, left


def read_records(directory: Path, *, start: Checkpoint | None = None) -> Iterator[LogRecord]:
    """Every valid record of a directory, segments in name order; see EventLogReader for stats."""
    return EventLogReader(directory, start=start).records()


def read_events(directory: Path) -> Iterator[Event]:
    """Every event of a directory, decoded; an undecodable payload raises."""
    for record in read_records(directory):
        yield Event.from_bytes(record.payload)
