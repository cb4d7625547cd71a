"""The durable, append-only event log the tracking endpoints write and counting jobs read.

Layout: a directory (by default ``var/events/``) of segment files. Every writer (one per
process, e.g. per uvicorn worker) owns the segments it creates, named
``<UTC start>-<pid>-<random>-<sequence>.seg`` so that names sort by writer, then by
sequence. A writer never appends to a file it did not create and never reopens a segment
(a restart starts a new one), so a crash can only leave damage at the end of a segment.

Each record is a 10-byte header followed by the payload::

    magic  2 bytes   b"\\xbb\\x01" (Backbeat, format 1)
    length u32 LE    payload bytes
    crc32  u32 LE    zlib.crc32 of the payload

Writers commit in batches (group commit): one ``write`` and one ``os.fsync`` per batch, and
a record's future resolves only after that fsync returned. Readers verify magic, length
bound and CRC; the first bad or incomplete record ends a segment, which is counted as a
torn tail, and reading goes on with the next segment.

A live writer holds an exclusive ``flock`` on its open segment, so readers can tell a
record still being written (``pending_bytes``, retried next time) from a torn tail left by
a crash (``torn_tails``/``bytes_skipped``, never retried).

Create writers inside each worker process (for instance in the app lifespan), not before a
fork: the writer thread does not survive ``fork``.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import errno
import fcntl
import os
import secrets
import threading
import time
import zlib
from concurrent.futures import Future
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from backbeat.errors import InvalidInput
from backbeat.eventlog.framing import (
    DEFAULT_SEGMENT_BYTES,
    HEADER,
    HEADER_BYTES,
    MAGIC,
    MAX_PAYLOAD_BYTES,
    SEGMENT_SUFFIX,
    EventLogClosed,
    EventLogUnavailable,
)
from backbeat.observability import EVENTLOG_APPEND_FAILURES, EVENTLOG_UNAWAITED_DROPPED

if TYPE_CHECKING:
    from collections.abc import Iterable
    from types import TracebackType


# After a failed write (a full disk, say) no new segment is opened for this long, doubling
# per consecutive failure: batches in between fail at once, with no file created.
BACKOFF_MIN_S = 0.05
BACKOFF_MAX_S = 1.0


class _BackingOff(OSError):
    """A batch refused without touching the disk, while backing off after failures."""


def _fsync_directory(directory: Path) -> None:
    # A new file's name lives in the directory; without this a power cut can lose the
    # whole segment even though its data blocks were fsynced.
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class _Pending(NamedTuple):
    """Records handed over together, and who waits for them (a thread, a loop, or nobody)."""

    payloads: tuple[bytes, ...]
    future: Future[None] | None
    waiter: asyncio.Future[None] | None = None


class EventLogWriter:
    """Appends payloads to this process's own segment files, acknowledging them once fsynced."""

    def __init__(
        self,
        directory: Path,
        *,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        max_batch: int = 2048,
        max_delay_s: float = 0.002,
        lazy_delay_s: float = 0.05,
    ) -> None:
        """Start the writer thread; no file is created until the first record arrives.

        Args:
            directory: where segments go; created if missing.
            segment_bytes: a segment is closed once the next batch would pass this size.
            max_batch: most records committed by one fsync.
            max_delay_s: how long the writer waits for more records before committing a
                batch that is not full; trades a little latency for fewer fsyncs.
            lazy_delay_s: how long records nobody waits for (``append_nowait``) may wait
                for company before the writer commits them on their own.
        """
        if segment_bytes < 1 or max_batch < 1 or max_delay_s < 0:
            raise InvalidInput(
                "segment_bytes and max_batch must be positive, max_delay_s not negative",
                segment_bytes=segment_bytes,
                max_batch=max_batch,
                max_delay_s=max_delay_s,
            )
        self.directory = Path(directory)
        self.segment_bytes = segment_bytes
        self.max_batch = max_batch
        self.max_delay_s = max_delay_s
        if not self.directory.is_dir():
            self.directory.mkdir(parents=True, exist_ok=True)
            _fsync_directory(self.directory.parent)
        started = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        self.writer_id = f"{started}-{os.getpid():07d}-{secrets.token_hex(3)}"

        self._cond = threading.Condition(threading.Lock())
        self._queue: list[_Pending] = []
        self._queued_records = 0
        self._writer_idle = False
        self._flush_requested = False
        self._closing = False
        self._urgent = 0  # queued entries someone waits for
        self._lazy_since: float | None = None  # when the oldest unawaited record was queued
        self.lazy_delay_s = lazy_delay_s

        self._fd: int | None = None
        self._segment_name = ""
        self._segment_size = 0
        self._sequence = 0

        self.records_written = 0
        self.batches_written = 0
        self.bytes_written = 0
        self.segments_created = 0
        self.failed_batches = 0
        self.records_dropped = 0  # records nobody waited for, lost to failed writes
        self._backoff_s = 0.0
        self._retry_at = 0.0

        self._thread = threading.Thread(
            target=self._run, name=f"eventlog-writer-{self.writer_id}", daemon=True
        )
        self._thread.start()
        # The thread is a daemon so a forgotten writer cannot hang interpreter exit; this
        # still commits what was queued when the process ends normally.
        atexit.register(self.close)

    # -- producer side -------------------------------------------------------------

    def append(self, payload: bytes) -> Future[None]:
        """Queue one record; the future resolves once it is on disk.

        The future cannot be cancelled: a record handed over is written regardless.
        """
        return self._enqueue((self._checked(payload),))

    def append_many(self, payloads: Iterable[bytes]) -> Future[None]:
        """Queue records to be committed together; one future for all of them."""
        return self._enqueue(tuple(self._checked(p) for p in payloads))

    async def append_async(self, payload: bytes) -> None:
        """Append and wait for durability without blocking the event loop.

        The waiter is a plain asyncio future: after each fsync the writer thread wakes each
        loop once for the whole batch (``call_soon_threadsafe``), not once per record. No
        thread future is made: this runs once per tracking pixel.
        """
        if type(payload) is not bytes or len(payload) > MAX_PAYLOAD_BYTES:
            payload = self._checked(payload)
        await self._enqueue_async((payload,))

    async def append_many_async(self, payloads: Iterable[bytes]) -> None:
        """``append_async`` for records committed together (a batch of beacons): one waiter."""
        checked = tuple(self._checked(p) for p in payloads)
        if checked:
            await self._enqueue_async(checked)

    def _enqueue_async(self, payloads: tuple[bytes, ...]) -> asyncio.Future[None]:
        waiter = asyncio.get_running_loop().create_future()
        with self._cond:
            if self._closing:
                raise EventLogClosed("event log writer is closed", directory=str(self.directory))
            self._queue.append(_Pending(payloads, None, waiter))
            self._queued_records += len(payloads)
            self._urgent += 1
            if self._writer_idle or self._flush_requested or self._queued_records >= self.max_batch:
                self._cond.notify()
        return waiter

    def append_nowait(self, payload: bytes) -> None:
        """Queue one record that nobody waits for (decision log, fills, rejected pixels).

        It does not wake the writer: it goes with the next batch someone waits for, or at
        the latest ``lazy_delay_s`` after it was queued, so a flood of them (forged pixels)
        costs a few fsyncs a second, not one each. A failed write is counted, not reported.
        """
        payload = self._checked(payload)
        with self._cond:
            if self._closing:
                raise EventLogClosed("event log writer is closed", directory=str(self.directory))
            self._queue.append(_Pending((payload,), None))
            self._queued_records += 1
            if self._lazy_since is None:
                self._lazy_since = time.monotonic()
                if self._writer_idle:  # once per window: the writer sets its timer
                    self._cond.notify()
            if self._queued_records >= self.max_batch:
                self._cond.notify()

    def flush(self) -> None:
        """Block until every record queued before this call is durable.

        Raises EventLogUnavailable only if the last batch failed; earlier failures are
        reported on their own futures.
        """
        self._enqueue(()).result()

    def close(self) -> None:
        """Commit what is queued, then stop the writer thread. Safe to call twice."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        if threading.current_thread() is not self._thread:
            self._thread.join()
        atexit.unregister(self.close)

    def __enter__(self) -> EventLogWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def segment(self) -> str:
        """Name of the segment currently open for writing, or "" between segments."""
        return self._segment_name

    def _checked(self, payload: bytes) -> bytes:
        if type(payload) is not bytes:
            # Copy bytearray/memoryview now: the caller could change it before the
            # writer thread gets to it.
            payload = bytes(payload)
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise InvalidInput(
                "event log payload too large",
                reason="payload-too-large",
                size=len(payload),
                limit=MAX_PAYLOAD_BYTES,
            )
        return payload

    def _enqueue(self, payloads: tuple[bytes, ...]) -> Future[None]:
        future: Future[None] = Future()
        # RUNNING futures cannot be cancelled, so the writer never finds one it may not
        # complete, and a cancelled request does not make the record look withdrawn.
        future.set_running_or_notify_cancel()
        with self._cond:
            if self._closing:
                raise EventLogClosed("event log writer is closed", directory=str(self.directory))
            self._queue.append(_Pending(payloads, future))
            self._queued_records += len(payloads)
            self._urgent += 1
            if not payloads:
                self._flush_requested = True
            if self._writer_idle or self._flush_requested or self._queued_records >= self.max_batch:
                self._cond.notify()
        return future

    # -- writer thread -------------------------------------------------------------

    def _run(self) -> None:
        try:
            while (batch := self._take_batch()) is not None:
                self._commit(batch)
        except BaseException as exc:
            # Waiters must never hang on a writer thread that died of a bug.
            with self._cond:
                self._closing = True
                stranded, self._queue = self._queue, []
            _settle(stranded, _unavailable(exc, self.directory, self._segment_name))
            raise
        finally:
            self._close_segment()

    def _take_batch(self) -> list[_Pending] | None:
        with self._cond:
            while not self._closing:
                timeout = None
                if self._queue:
                    if self._urgent or self._queued_records >= self.max_batch:
                        break
                    # Only records nobody waits for: let them gather a little.
                    assert self._lazy_since is not None
                    timeout = self._lazy_since + self.lazy_delay_s - time.monotonic()
                    if timeout <= 0:
                        break
                self._writer_idle = True
                self._cond.wait(timeout)
                self._writer_idle = False
            if not self._queue:
                return None
            if self.max_delay_s > 0 and self._queued_records < self.max_batch:
                deadline = time.monotonic() + self.max_delay_s
                while (
                    not self._closing
                    and not self._flush_requested
                    and self._queued_records < self.max_batch
                ):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
            taken = 0
            count = 0
            for item in self._queue:
                if count and taken + len(item.payloads) > self.max_batch:
                    break
                taken += len(item.payloads)
                count += 1
            batch = self._queue[:count]
            del self._queue[:count]
            self._queued_records -= taken
            self._flush_requested = any(not item.payloads for item in self._queue)
            self._urgent = sum(1 for item in self._queue if _is_urgent(item))
            lazy_left = len(self._queue) > self._urgent
            self._lazy_since = (self._lazy_since or time.monotonic()) if lazy_left else None
            return batch

    def _commit(self, batch: list[_Pending]) -> None:
        payloads = [p for item in batch for p in item.payloads]
        try:
            if payloads:
                self._write(payloads)
        except Exception as exc:
            self.failed_batches += 1
            segment = self._segment_name
            holds_nothing = self._segment_size == 0
            # The segment may now end in a partial record that would hide anything
            # appended after it, so it is abandoned; the next batch starts a new one.
            with contextlib.suppress(OSError):
                self._close_segment()
            if segment and holds_nothing:
                # Nothing in it was acknowledged: remove it rather than leave a file per
                # failure (a full disk would otherwise fill the directory with empty ones).
                with contextlib.suppress(OSError):
                    os.unlink(self.directory / segment)
            if not isinstance(exc, _BackingOff):  # a refusal during back-off does not extend it
                self._back_off()
            self._count_failure(batch, len(payloads))
            _settle(batch, _unavailable(exc, self.directory, segment))
            return
        self._backoff_s = 0.0
        _settle(batch, None)

    def _back_off(self) -> None:
        """After failed writes, open no new segment for a while: the first retry is at once
        (a one-off I/O error costs nothing), then 50 ms, doubling up to 1 s."""
        wait = self._backoff_s
        self._backoff_s = min(max(self._backoff_s * 2, BACKOFF_MIN_S), BACKOFF_MAX_S)
        self._retry_at = time.monotonic() + wait

    def _count_failure(self, batch: list[_Pending], records: int) -> None:
        unawaited = sum(
            len(item.payloads) for item in batch if item.future is None and item.waiter is None
        )
        self.records_dropped += unawaited
        EVENTLOG_APPEND_FAILURES.inc(records)
        if unawaited:
            EVENTLOG_UNAWAITED_DROPPED.inc(unawaited)

    def _write(self, payloads: list[bytes]) -> None:
        parts: list[bytes] = []
        size = 0
        for payload in payloads:
            frame = HEADER_BYTES + len(payload)
            if parts and self._segment_size + size + frame > self.segment_bytes:
                self._write_parts(parts, size)
                parts, size = [], 0
            if (
                self._fd is not None
                and self._segment_size
                and (self._segment_size + frame > self.segment_bytes)
            ):
                self._close_segment()
            parts.append(HEADER.pack(MAGIC, len(payload), zlib.crc32(payload)))
            parts.append(payload)
            size += frame
        self._write_parts(parts, size)
        self.batches_written += 1
        self.records_written += len(payloads)
        if self._segment_size >= self.segment_bytes:
            self._close_segment()

    def _write_parts(self, parts: list[bytes], size: int) -> None:
        if self._fd is None:
            if time.monotonic() < self._retry_at:
                raise _BackingOff(errno.EAGAIN, "backing off after a failed write")
            self._open_segment()
        assert self._fd is not None
        _write_all(self._fd, b"".join(parts))
        os.fsync(self._fd)
        self._segment_size += size
        self.bytes_written += size

    def _open_segment(self) -> None:
        self._sequence += 1
        name = f"{self.writer_id}-{self._sequence:08d}{SEGMENT_SUFFIX}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC
        fd = os.open(self.directory / name, flags, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            _fsync_directory(self.directory)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._segment_name = name
        self._segment_size = 0
        self.segments_created += 1

    def _close_segment(self) -> None:
        fd, self._fd = self._fd, None
        self._segment_name = ""
        self._segment_size = 0
        if fd is not None:
            os.close(fd)


def _is_urgent(item: _Pending) -> bool:
    """Someone waits for it (a thread, a loop, or a flush)."""
    return item.future is not None or item.waiter is not None or not item.payloads


def _unavailable(exc: BaseException, directory: Path, segment: str) -> EventLogUnavailable:
    error = EventLogUnavailable(
        f"event log write failed: {exc}", directory=str(directory), segment=segment
    )
    error.__cause__ = exc
    return error


def _settle(batch: list[_Pending], error: BaseException | None) -> None:
    """Complete a committed (or failed) batch: thread futures directly, and each event loop
    with one ``call_soon_threadsafe`` for all its waiters, not one wake-up per record."""
    by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
    for item in batch:
        if item.future is not None:
            if error is None:
                item.future.set_result(None)
            else:
                item.future.set_exception(error)
        elif item.waiter is not None:
            by_loop.setdefault(item.waiter.get_loop(), []).append(item.waiter)
    for loop, waiters in by_loop.items():
        with contextlib.suppress(RuntimeError):  # that loop has closed: nobody is waiting
            loop.call_soon_threadsafe(_resolve, waiters, error)


def _resolve(waiters: list[asyncio.Future[None]], error: BaseException | None) -> None:
    for waiter in waiters:
        if waiter.done():  # the awaiting request was cancelled; the record is written anyway
            continue
        if error is None:
            waiter.set_result(None)
        else:
            waiter.set_exception(error)
