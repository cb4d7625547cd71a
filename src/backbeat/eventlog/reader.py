"""Reading the event log back: every segment in name order, torn tails told from live writes.

Three kinds of unreadable bytes, told apart:

* a record still being written by a live writer at the end of its segment
  (``pending_bytes``): retried on the next scan;
* a torn tail, bad bytes at the end of a segment whose writer is gone (a crash, or a
  failed write the writer abandoned): counted once (``torn_tails``) and skipped;
* damage in the middle, bad bytes followed by valid records (a flipped bit, a bad
  sector, a stray write): the reader resynchronises on the record framing and goes on;
  each region is reported in ``damage`` so a counting job can refuse to publish numbers
  that silently shrank.

Skipped bytes are also counted on the ``backbeat_eventlog_skipped_bytes_total`` metric.
"""

from __future__ import annotations

import fcntl
import os
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, NamedTuple

import orjson
from prometheus_client import Counter

from backbeat.eventlog.framing import (
    HEADER,
    HEADER_BYTES,
    MAGIC,
    MAX_PAYLOAD_BYTES,
    READ_CHUNK,
    SEGMENT_NAME,
)
from backbeat.events import Event
from backbeat.observability import log

if TYPE_CHECKING:
    from collections.abc import Generator, Iterable, Iterator, Mapping


class LogRecord(NamedTuple):
    """One record as read back, with where it sits so a job can report or resume.

    A named tuple: every reader of the log (counting, the ledger's reconciliation, the
    promotion feedback) makes one per record, and a frozen dataclass costs several
    times more to build.
    """

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


SKIPPED_BYTES = Counter(
    "backbeat_eventlog_skipped_bytes_total",
    "Event-log bytes readers skipped: torn tails of crashed writers, or damage in the middle",
    ["kind"],
)


@dataclass(frozen=True, slots=True)
class Damage:
    """Bytes skipped in the middle of a segment, between two valid records."""

    segment: str
    offset: int
    length: int


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
    damaged_regions: int = 0
    damaged_bytes: int = 0


class EventLogReader:
    """Reads every segment of a directory in name order, skipping torn tails and damage."""

    def __init__(self, directory: Path, *, start: Checkpoint | None = None) -> None:
        self.directory = Path(directory)
        self._offsets: dict[str, int] = dict(start.offsets) if start else {}
        self._records_read = 0
        self._segments_read = 0
        self._torn_tails = 0
        self._bytes_skipped = 0
        self._pending_bytes = 0
        self._damaged_bytes = 0
        self._damage: list[Damage] = []
        self._torn: dict[str, int] = {}
        self._skipped_prefix: str | None = None

    def skip_segments(self, prefix: str) -> None:
        """Never read segments whose names start with ``prefix``: a live writer's own, when
        its process already knows every record it wrote (no framing, no parsing)."""
        self._skipped_prefix = prefix

    @property
    def damage(self) -> list[Damage]:
        """Regions skipped in the middle of segments, in reading order, over all scans."""
        return list(self._damage)

    @property
    def torn(self) -> dict[str, int]:
        """Bytes skipped at the end of each segment whose writer is gone."""
        return dict(self._torn)

    @property
    def stats(self) -> ReaderStats:
        return ReaderStats(
            records_read=self._records_read,
            segments_read=self._segments_read,
            torn_tails=self._torn_tails,
            bytes_skipped=self._bytes_skipped,
            pending_bytes=self._pending_bytes,
            damaged_regions=len(self._damage),
            damaged_bytes=self._damaged_bytes,
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
        skipped = self._skipped_prefix
        for name in self.segments():
            if skipped is not None and name.startswith(skipped):
                continue
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
                    self._torn[name] = self._torn.get(name, 0) + size - end
                    self._offsets[name] = size
                    SKIPPED_BYTES.labels(kind="torn_tail").inc(size - end)

    def _scan(
        self, f: BinaryIO, name: str, start: int, size: int
    ) -> Generator[LogRecord, None, int]:
        """Yield valid records of one segment from ``start``; return where they stop.

        A bad frame followed by a valid one is damage in the middle: the reader
        resynchronises on the framing (magic, bounded length, matching CRC), records the
        skipped region in :attr:`damage` and goes on. A bad frame with nothing valid after
        it is a tail (torn or still being written), judged by the caller.
        """
        buf = b""
        base = start  # file offset of buf[0]
        i = 0
        left = size - start
        offsets = self._offsets
        while True:
            # Fast path: whole, valid frames one after another in the buffer (nearly every
            # record). Anything else — a frame cut by the chunk, a bad magic, length or
            # CRC — falls through to the careful path below, which judges it.
            end = len(buf) - HEADER_BYTES
            while i <= end:
                magic, length, crc = _unpack_header(buf, i)
                stop = i + HEADER_BYTES + length
                if magic != MAGIC or length > MAX_PAYLOAD_BYTES or stop > len(buf):
                    break
                payload = buf[i + HEADER_BYTES : stop]
                if _crc32(payload) != crc:
                    break
                pos = base + i
                i = stop
                # Recorded before the yield: once a consumer holds a record, a checkpoint
                # taken then already covers it.
                offsets[name] = base + i
                self._records_read += 1
                yield LogRecord(name, pos, payload)
            state = _frame_at(buf, i)
            if state < 0 and left:
                buf, i, left, base = _refill(f, buf, i, left, -state, base)
                continue
            if state > 0:
                pos = base + i
                record = LogRecord(name, pos, bytes(buf[i + HEADER_BYTES : i + state]))
                i += state
                # Recorded before the yield: once a consumer holds a record, a checkpoint
                # taken then already covers it.
                self._offsets[name] = base + i
                self._records_read += 1
                yield record
                continue
            if state < 0 and len(buf) - i == 0:
                return base + i  # clean end of segment
            bad = base + i
            found = _resync(f, buf, i + 1, left, base)
            if found is None:
                return bad
            buf, i, left, base = found
            skipped = base + i - bad
            self._record_damage(Damage(segment=name, offset=bad, length=skipped))

    def _record_damage(self, damage: Damage) -> None:
        self._damage.append(damage)
        self._damaged_bytes += damage.length
        self._bytes_skipped += damage.length
        SKIPPED_BYTES.labels(kind="damage").inc(damage.length)
        log.error(
            "eventlog.damage",
            segment=damage.segment,
            offset=damage.offset,
            skipped_bytes=damage.length,
        )


_unpack_header = HEADER.unpack_from
_crc32 = zlib.crc32


def _frame_at(buf: bytes, i: int) -> int:
    """Length of the valid frame at ``buf[i]``; 0 if bad; -n if n bytes are needed to judge."""
    have = len(buf) - i
    if have < HEADER_BYTES:
        return -HEADER_BYTES
    magic, length, crc = HEADER.unpack_from(buf, i)
    if magic != MAGIC or length > MAX_PAYLOAD_BYTES:
        return 0
    total = HEADER_BYTES + length
    if have < total:
        return -total
    if zlib.crc32(memoryview(buf)[i + HEADER_BYTES : i + total]) != crc:
        return 0
    return total


def _resync(
    f: BinaryIO, buf: bytes, i: int, left: int, base: int
) -> tuple[bytes, int, int, int] | None:
    """Find the next valid frame at or after ``buf[i]``; None if the segment has none.

    Payloads are JSON, in which the magic's first byte (0xBB, a UTF-8 continuation byte
    followed by a control character) cannot occur, so candidates are rare and each is
    confirmed by its CRC.
    """
    while True:
        j = buf.find(MAGIC, i)
        if j < 0:
            if not left:
                return None
            # Keep the last byte: it may be the first half of a magic split by the chunk.
            i = max(len(buf) - 1, i)
            buf, i, left, base = _refill(f, buf, i, left, READ_CHUNK, base)
            continue
        state = _frame_at(buf, j)
        while state < 0 and left:
            buf, j, left, base = _refill(f, buf, j, left, -state, base)
            state = _frame_at(buf, j)
        if state > 0:
            return buf, j, left, base
        i = j + 1


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


def _refill(
    f: BinaryIO, buf: bytes, i: int, left: int, need: int, base: int
) -> tuple[bytes, int, int, int]:
    """Drop ``buf[:i]`` and read on so at least ``need`` bytes follow (if the file has them)."""
    have = len(buf) - i
    data = f.read(min(left, max(READ_CHUNK, need - have)))
    # A short read means the file shrank under us; stop at what we have.
    left = left - len(data) if data else 0
    return buf[i:] + data, 0, left, base + i


BACKGROUND_SLICE = 256


def yielding(records: Iterable[LogRecord], every: int = BACKGROUND_SLICE) -> Iterator[LogRecord]:
    """``records``, handing the GIL back every ``every`` records (a few hundred µs of work).

    For the tails a server runs beside its event loop (the ledger's reconciliation, the
    promotion feedback): without it a tail catching up on a second of records holds the
    GIL for switch intervals at a time, and every request in flight waits that long.
    ``time.sleep(0)`` releases the GIL, so a waiting request handler runs first.
    """
    for count, record in enumerate(records, 1):
        if not count % every:
            time.sleep(0)
        yield record


def read_records(directory: Path, *, start: Checkpoint | None = None) -> Iterator[LogRecord]:
    """Every valid record of a directory, segments in name order; see EventLogReader for stats."""
    return EventLogReader(directory, start=start).records()


def read_events(directory: Path) -> Iterator[Event]:
    """Every event of a directory, decoded; an undecodable payload raises."""
    for record in read_records(directory):
        yield Event.from_bytes(record.payload)
