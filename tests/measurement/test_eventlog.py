"""The event log: round trips, concurrency, torn tails, crashes and write failures."""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import backbeat.eventlog.writer  # noqa: F401
from backbeat import eventlog
from backbeat.errors import InvalidInput
from backbeat.eventlog import (
    HEADER_BYTES,
    MAGIC,
    Checkpoint,
    EventLogClosed,
    EventLogReader,
    EventLogUnavailable,
    EventLogWriter,
    encode_record,
    read_events,
    read_records,
)
from backbeat.events import Event, EventType

if TYPE_CHECKING:
    from collections.abc import Callable

TIMEOUT = 10


def write_all(directory: Path, payloads: list[bytes], **options: object) -> EventLogWriter:
    """Append, wait for every acknowledgement, close; returns the closed writer."""
    with EventLogWriter(directory, **options) as writer:  # type: ignore[arg-type]
        futures = [writer.append(p) for p in payloads]
        for future in futures:
            future.result(timeout=TIMEOUT)
    return writer


def payloads_of(directory: Path) -> list[bytes]:
    return [record.payload for record in read_records(directory)]


def segment_paths(directory: Path) -> list[Path]:
    return [directory / name for name in EventLogReader(directory).segments()]


# -- round trips ---------------------------------------------------------------------


def test_round_trip_across_rotations(tmp_path: Path) -> None:
    payloads = [f"record-{i}".encode() * (1 + i % 7) for i in range(1000)]
    writer = write_all(tmp_path, payloads, segment_bytes=2000)

    reader = EventLogReader(tmp_path)
    records = list(reader.records())

    assert [r.payload for r in records] == payloads
    segments = segment_paths(tmp_path)
    assert len(segments) == writer.segments_created > 10
    assert all(p.stat().st_size <= 2000 for p in segments)
    assert reader.stats.records_read == 1000
    assert reader.stats.torn_tails == reader.stats.bytes_skipped == 0
    assert writer.records_written == 1000
    assert writer.bytes_written == sum(p.stat().st_size for p in segments)
    # Offsets point at the records themselves.
    first = records[0]
    raw = (tmp_path / first.segment).read_bytes()
    assert raw[first.offset : first.end] == encode_record(first.payload)


def test_several_writers_share_a_directory_in_a_stable_order(tmp_path: Path) -> None:
    writers = [EventLogWriter(tmp_path, segment_bytes=1500) for _ in range(3)]
    sent: dict[str, list[bytes]] = {w.writer_id: [] for w in writers}

    def produce(writer: EventLogWriter) -> None:
        futures = []
        for i in range(400):
            payload = f"{writer.writer_id}/{i}".encode()
            sent[writer.writer_id].append(payload)
            futures.append(writer.append(payload))
        for future in futures:
            future.result(timeout=TIMEOUT)

    threads = [threading.Thread(target=produce, args=(w,)) for w in writers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for w in writers:
        w.close()

    names = EventLogReader(tmp_path).segments()
    assert {n.rsplit("-", 1)[0] for n in names} == set(sent)
    # Segments sort by writer, then by sequence, so each writer's records come out whole
    # and in order.
    expected = [p for writer_id in sorted(sent) for p in sent[writer_id]]
    assert payloads_of(tmp_path) == expected


def test_a_restarted_writer_never_touches_old_segments(tmp_path: Path) -> None:
    write_all(tmp_path, [b"a"] * 50, segment_bytes=300)
    before = {p.name: p.read_bytes() for p in segment_paths(tmp_path)}

    write_all(tmp_path, [b"b"] * 50, segment_bytes=300)

    after = {p.name: p.read_bytes() for p in segment_paths(tmp_path)}
    assert {name: after[name] for name in before} == before
    assert len(after) > len(before)
    assert payloads_of(tmp_path) == [b"a"] * 50 + [b"b"] * 50


def test_a_record_larger_than_a_segment_gets_a_segment_of_its_own(tmp_path: Path) -> None:
    payloads = [b"s", b"x" * 500, b"t"]
    write_all(tmp_path, payloads, segment_bytes=100, max_delay_s=0.05)

    sizes = [p.stat().st_size for p in segment_paths(tmp_path)]
    assert sizes == [HEADER_BYTES + 1, HEADER_BYTES + 500, HEADER_BYTES + 1]
    assert payloads_of(tmp_path) == payloads


def test_read_events_decodes_event_records(tmp_path: Path) -> None:
    events = [
        Event(
            type=EventType.IMPRESSION, ts=1_700_000_000.5, decision_id="d1", price_micros=2_500_000
        ),
        Event(type=EventType.CLICK, ts=1_700_000_001.0, decision_id="d1", attrs={"k": [1, 2]}),
    ]
    write_all(tmp_path, [e.to_bytes() for e in events])

    assert list(read_events(tmp_path)) == events


def test_reader_ignores_other_files_and_a_missing_directory(tmp_path: Path) -> None:
    write_all(tmp_path, [b"one"])
    (tmp_path / "README").write_text("not a segment")
    (tmp_path / "x.seg.tmp").write_bytes(encode_record(b"stray"))

    assert payloads_of(tmp_path) == [b"one"]
    assert payloads_of(tmp_path / "missing") == []


# -- the writer ----------------------------------------------------------------------


def test_concurrent_appends_are_each_read_back_once(tmp_path: Path) -> None:
    threads_n, per_thread = 16, 300
    acknowledged: list[bytes] = []
    lock = threading.Lock()
    writer = EventLogWriter(tmp_path, segment_bytes=16 * 1024)

    def produce(t: int) -> None:
        futures = [
            (f"{t}:{i}".encode(), writer.append(f"{t}:{i}".encode())) for i in range(per_thread)
        ]
        for payload, future in futures:
            future.result(timeout=TIMEOUT)
            with lock:
                acknowledged.append(payload)

    threads = [threading.Thread(target=produce, args=(t,)) for t in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    writer.close()

    read = payloads_of(tmp_path)
    assert Counter(read) == Counter(acknowledged)
    assert len(read) == threads_n * per_thread
    # One writer keeps each producer's records in the order it appended them.
    for t in range(threads_n):
        mine = [int(p.split(b":")[1]) for p in read if p.startswith(f"{t}:".encode())]
        assert mine == list(range(per_thread))
    assert writer.batches_written < threads_n * per_thread


def test_an_acknowledgement_waits_for_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()
    real_fsync = os.fsync

    def slow_fsync(fd: int) -> None:
        release.wait(TIMEOUT)
        real_fsync(fd)

    with EventLogWriter(tmp_path) as writer:
        writer.append(b"opens the segment").result(timeout=TIMEOUT)
        monkeypatch.setattr(os, "fsync", slow_fsync)
        future = writer.append(b"durable?")
        assert not future.cancel()
        with pytest.raises(TimeoutError):
            future.result(timeout=0.1)
        release.set()
        future.result(timeout=TIMEOUT)


def test_appends_share_fsyncs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = Counter[str]()
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        calls["fsync"] += 1
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    with EventLogWriter(tmp_path, max_delay_s=0.05) as writer:
        futures = [writer.append(b"x") for _ in range(200)]
        for future in futures:
            future.result(timeout=TIMEOUT)
    # One directory fsync for the new segment plus one per batch.
    assert calls["fsync"] == writer.batches_written + 1
    assert writer.batches_written <= 5


def test_a_batch_holds_at_most_max_batch_records(tmp_path: Path) -> None:
    with EventLogWriter(tmp_path, max_batch=10, max_delay_s=0.05) as writer:
        futures = [writer.append(b"x") for _ in range(35)]
        for future in futures:
            future.result(timeout=TIMEOUT)
    assert writer.batches_written >= 4
    assert writer.records_written == 35


def test_append_many_flush_and_close(tmp_path: Path) -> None:
    writer = EventLogWriter(tmp_path, max_delay_s=1.0)
    group = writer.append_many([b"a", b"b", b"c"])
    single = writer.append(b"d")
    started = time.monotonic()
    writer.flush()
    assert time.monotonic() - started < 0.5  # a flush does not sit out the batching delay
    assert group.done() and single.done()
    writer.close()
    writer.close()

    with pytest.raises(EventLogClosed):
        writer.append(b"late")
    assert payloads_of(tmp_path) == [b"a", b"b", b"c", b"d"]


def test_close_commits_what_is_queued(tmp_path: Path) -> None:
    writer = EventLogWriter(tmp_path, max_delay_s=1.0)
    futures = [writer.append(str(i).encode()) for i in range(100)]
    writer.close()
    assert all(f.done() and f.exception() is None for f in futures)
    assert len(payloads_of(tmp_path)) == 100


def test_payloads_are_copied_and_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(eventlog.writer, "MAX_PAYLOAD_BYTES", 100)
    with EventLogWriter(tmp_path) as writer:
        buffer = bytearray(b"before")
        future = writer.append(buffer)  # type: ignore[arg-type]
        buffer[:] = b"after!"
        future.result(timeout=TIMEOUT)
        with pytest.raises(InvalidInput) as info:
            writer.append(b"x" * 101)
    assert info.value.reason == "payload-too-large"
    assert payloads_of(tmp_path) == [b"before"]


def test_append_async_awaits_durability(tmp_path: Path) -> None:
    async def main(writer: EventLogWriter) -> None:
        await asyncio.gather(*(writer.append_async(f"{i}".encode()) for i in range(200)))
        # A cancelled request does not withdraw its record.
        task = asyncio.create_task(writer.append_async(b"cancelled"))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    with EventLogWriter(tmp_path) as writer:
        asyncio.run(main(writer))
    read = payloads_of(tmp_path)
    assert sorted(read[:200], key=int) == [f"{i}".encode() for i in range(200)]
    assert read[200:] == [b"cancelled"]


# -- failures ------------------------------------------------------------------------


def test_a_failed_fsync_fails_the_future(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_fsync = os.fsync

    def broken_fsync(fd: int) -> None:
        raise OSError(errno.EIO, "simulated I/O error")

    with EventLogWriter(tmp_path) as writer:
        writer.append(b"first").result(timeout=TIMEOUT)
        monkeypatch.setattr(os, "fsync", broken_fsync)
        with pytest.raises(EventLogUnavailable) as info:
            writer.append(b"lost?").result(timeout=TIMEOUT)
        monkeypatch.setattr(os, "fsync", real_fsync)
        writer.append(b"after").result(timeout=TIMEOUT)

    assert isinstance(info.value.__cause__, OSError)
    assert info.value.__cause__.errno == errno.EIO
    assert info.value.status == 503
    assert writer.failed_batches == 1
    assert writer.records_written == 2
    # After a failure the writer moves to a new segment, so nothing later sits behind
    # bytes of unknown state.
    assert writer.segments_created == 2
    read = payloads_of(tmp_path)
    assert read[0] == b"first" and read[-1] == b"after"


def test_a_partial_write_is_abandoned_and_later_records_stay_readable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = os.write

    def half_then_enospc(fd: int, data: bytes) -> int:
        real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, "simulated full disk")

    with EventLogWriter(tmp_path) as writer:
        writer.append(b"before").result(timeout=TIMEOUT)
        monkeypatch.setattr(os, "write", half_then_enospc)
        with pytest.raises(EventLogUnavailable):
            writer.append(b"half-written").result(timeout=TIMEOUT)
        monkeypatch.setattr(os, "write", real_write)
        writer.append(b"after").result(timeout=TIMEOUT)

    reader = EventLogReader(tmp_path)
    assert [r.payload for r in reader.records()] == [b"before", b"after"]
    assert reader.stats.torn_tails == 1
    assert reader.stats.bytes_skipped == (HEADER_BYTES + len(b"half-written")) // 2


def test_a_vanished_directory_fails_the_future(tmp_path: Path) -> None:
    directory = tmp_path / "events"
    # segment_bytes=1 closes the segment after every batch, so each batch creates a file.
    with EventLogWriter(directory, segment_bytes=1) as writer:
        writer.append(b"one").result(timeout=TIMEOUT)
        shutil.rmtree(directory)
        with pytest.raises(EventLogUnavailable) as info:
            writer.append(b"two").result(timeout=TIMEOUT)
        assert isinstance(info.value.__cause__, FileNotFoundError)
        directory.mkdir()
        writer.append(b"three").result(timeout=TIMEOUT)
    assert payloads_of(directory) == [b"three"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_an_unwritable_directory_fails_the_future(tmp_path: Path) -> None:
    with EventLogWriter(tmp_path, segment_bytes=1) as writer:
        writer.append(b"one").result(timeout=TIMEOUT)
        tmp_path.chmod(0o500)
        try:
            with pytest.raises(EventLogUnavailable) as info:
                writer.append(b"two").result(timeout=TIMEOUT)
        finally:
            tmp_path.chmod(0o700)
    assert isinstance(info.value.__cause__, PermissionError)


# -- torn tails ----------------------------------------------------------------------


@pytest.fixture
def two_segments(tmp_path: Path) -> tuple[Path, Path]:
    """Segments of two successive writers: a0..a9 then b0..b9."""
    write_all(tmp_path, [f"a{i}".encode() for i in range(10)])
    write_all(tmp_path, [f"b{i}".encode() for i in range(10)])
    first, second = segment_paths(tmp_path)
    return first, second


A = [f"a{i}".encode() for i in range(10)]
B = [f"b{i}".encode() for i in range(10)]
FRAME = HEADER_BYTES + 2


def read_with_stats(directory: Path) -> tuple[list[bytes], EventLogReader]:
    reader = EventLogReader(directory)
    return [r.payload for r in reader.records()], reader


def test_truncated_mid_record(two_segments: tuple[Path, Path]) -> None:
    first, _ = two_segments
    with first.open("r+b") as f:
        f.truncate(5 * FRAME + 7)

    read, reader = read_with_stats(first.parent)
    assert read == A[:5] + B
    assert (reader.stats.torn_tails, reader.stats.bytes_skipped) == (1, 7)


def test_corrupt_crc(two_segments: tuple[Path, Path]) -> None:
    first, _ = two_segments
    data = bytearray(first.read_bytes())
    data[5 * FRAME + 6] ^= 0x01  # inside the CRC field of record 5
    first.write_bytes(bytes(data))

    # Damage in the middle: the reader resynchronises on the next valid frame.
    read, reader = read_with_stats(first.parent)
    assert read == A[:5] + A[6:] + B
    assert (reader.stats.torn_tails, reader.stats.bytes_skipped) == (0, FRAME)
    assert [(d.segment, d.offset, d.length) for d in reader.damage] == [
        (first.name, 5 * FRAME, FRAME)
    ]


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x00" * 4096,  # zero-filled tail, as a crash can leave after the size grew
        b"not a record at all",
        MAGIC + b"\xff\xff\xff\xff" + b"\x00" * 4,  # absurd length
        encode_record(b"partial")[:-1],
        MAGIC,
    ],
)
def test_garbage_after_valid_records(two_segments: tuple[Path, Path], garbage: bytes) -> None:
    first, _ = two_segments
    with first.open("ab") as f:
        f.write(garbage)

    read, reader = read_with_stats(first.parent)
    assert read == A + B
    assert (reader.stats.torn_tails, reader.stats.bytes_skipped) == (1, len(garbage))
    # Counted once: a resumed scan moves past a dead segment's torn tail.
    assert list(reader.records()) == []
    assert reader.stats.torn_tails == 1


def test_a_live_writers_unfinished_tail_is_pending_not_torn(tmp_path: Path) -> None:
    writer = EventLogWriter(tmp_path)
    writer.append(b"done").result(timeout=TIMEOUT)
    live = tmp_path / writer.segment
    partial = encode_record(b"in flight")[:9]
    with live.open("ab") as f:  # what a reader sees while a batch is half written
        f.write(partial)

    reader = EventLogReader(tmp_path)
    assert [r.payload for r in reader.records()] == [b"done"]
    assert reader.stats.pending_bytes == len(partial)
    assert reader.stats.torn_tails == 0

    writer.close()  # its writer is gone: the same bytes are now a torn tail
    assert list(reader.records()) == []
    assert reader.stats.pending_bytes == 0
    assert (reader.stats.torn_tails, reader.stats.bytes_skipped) == (1, len(partial))


# -- checkpoints ---------------------------------------------------------------------


def test_checkpoint_resumes_after_what_was_read(tmp_path: Path) -> None:
    early = EventLogWriter(tmp_path)
    late = EventLogWriter(tmp_path)
    try:
        assert early.writer_id < late.writer_id
        early.append(b"e1").result(timeout=TIMEOUT)
        late.append(b"l1").result(timeout=TIMEOUT)

        reader = EventLogReader(tmp_path)
        assert [r.payload for r in reader.records()] == [b"e1", b"l1"]
        saved = Checkpoint.from_json(reader.checkpoint.to_json())
        assert saved == reader.checkpoint

        # The earlier writer's segment sorts first but keeps growing.
        early.append(b"e2").result(timeout=TIMEOUT)
        late.append(b"l2").result(timeout=TIMEOUT)
        assert [r.payload for r in read_records(tmp_path, start=saved)] == [b"e2", b"l2"]
        assert [r.payload for r in reader.records()] == [b"e2", b"l2"]
        assert list(reader.records()) == []
    finally:
        early.close()
        late.close()


def test_checkpoint_covers_a_record_as_soon_as_it_is_yielded(tmp_path: Path) -> None:
    write_all(tmp_path, [b"1", b"2", b"3"])
    reader = EventLogReader(tmp_path)
    records = reader.records()
    first = next(records)
    assert reader.checkpoint.offsets == {first.segment: first.end}
    records.close()
    assert [r.payload for r in read_records(tmp_path, start=reader.checkpoint)] == [b"2", b"3"]


# -- properties ----------------------------------------------------------------------

PAYLOADS = st.lists(st.binary(max_size=200), max_size=40)


@settings(max_examples=40, deadline=None)
@given(
    payloads=PAYLOADS,
    segment_bytes=st.sampled_from([1, 50, 400, 64 * 1024]),
    max_batch=st.sampled_from([1, 3, 2048]),
)
def test_property_written_payloads_read_back_in_order(
    payloads: list[bytes], segment_bytes: int, max_batch: int
) -> None:
    with tempfile.TemporaryDirectory() as name:
        directory = Path(name)
        write_all(directory, payloads, segment_bytes=segment_bytes, max_batch=max_batch)
        assert payloads_of(directory) == payloads


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payloads=st.lists(st.binary(max_size=60), min_size=1, max_size=15), data=st.data())
def test_property_any_truncation_reads_a_prefix(payloads: list[bytes], data: st.DataObject) -> None:
    ends = []
    for payload in payloads:
        ends.append((ends[-1] if ends else 0) + HEADER_BYTES + len(payload))
    with tempfile.TemporaryDirectory() as name:
        directory = Path(name)
        write_all(directory, payloads)
        (segment,) = segment_paths(directory)
        cut = data.draw(st.integers(0, segment.stat().st_size), label="cut")
        with segment.open("r+b") as f:
            f.truncate(cut)

        read, reader = read_with_stats(directory)

    kept = sum(1 for end in ends if end <= cut)
    assert read == payloads[:kept]
    valid_end = ends[kept - 1] if kept else 0
    assert reader.stats.bytes_skipped == cut - valid_end
    assert reader.stats.torn_tails == (1 if cut > valid_end else 0)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payloads=st.lists(st.binary(max_size=60), min_size=1, max_size=15), data=st.data())
def test_property_any_flipped_byte_loses_only_its_record(
    payloads: list[bytes], data: st.DataObject
) -> None:
    starts = [0]
    for payload in payloads:
        starts.append(starts[-1] + HEADER_BYTES + len(payload))
    with tempfile.TemporaryDirectory() as name:
        directory = Path(name)
        write_all(directory, payloads)
        (segment,) = segment_paths(directory)
        raw = bytearray(segment.read_bytes())
        position = data.draw(st.integers(0, len(raw) - 1), label="position")
        raw[position] ^= data.draw(st.integers(1, 255), label="mask")
        segment.write_bytes(bytes(raw))

        read = payloads_of(directory)

    damaged = max(i for i, start in enumerate(starts[:-1]) if start <= position)
    # The reader resynchronises on the next valid frame (CRC-checked).
    assert read == payloads[:damaged] + payloads[damaged + 1 :]


# -- crashes -------------------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import os, sys, threading, time
    from collections import deque
    from pathlib import Path

    from backbeat.eventlog import EventLogWriter

    directory, mode = Path(sys.argv[1]), sys.argv[2]
    writer = EventLogWriter(directory, segment_bytes=32 * 1024, max_batch=64, max_delay_s=0)

    def payload(seq):
        return b"%08d:" % seq + b"x" * (seq * 37 % 300)

    def ack(seq):
        # Printed only after the future resolved; one write per line keeps lines whole.
        os.write(1, b"%d\\n" % seq)

    if mode == "partial":
        for seq in range(100):
            writer.append(payload(seq)).result()
            ack(seq)
        real_write = os.write

        def half_write(fd, data):
            if fd in (1, 2):
                return real_write(fd, data)
            written = real_write(fd, bytes(data[: len(data) // 2]))
            real_write(1, b"partial %d\\n" % written)
            time.sleep(60)

        os.write = half_write
        writer.append(payload(100))
        time.sleep(60)
    else:
        def produce(first):
            window = deque()
            seq = first
            while True:
                window.append((seq, writer.append(payload(seq))))
                seq += 4
                if len(window) >= 16:
                    done, future = window.popleft()
                    future.result()
                    ack(done)

        for first in range(4):
            threading.Thread(target=produce, args=(first,), daemon=True).start()
        time.sleep(60)
    """
)


def run_child_until(
    directory: Path, mode: str, stop: Callable[[list[str]], bool]
) -> tuple[set[int], list[str]]:
    """Run the child, SIGKILL it once ``stop(lines so far)``; return its acks and lines."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(directory), mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert child.stdout is not None and child.stderr is not None
    lines: list[str] = []
    try:
        for raw in child.stdout:
            lines.append(raw.decode())
            if stop(lines):
                break
        else:
            pytest.fail(f"child ended early: {child.stderr.read().decode()}")
        os.kill(child.pid, signal.SIGKILL)
        rest = child.stdout.read().decode()
    finally:
        child.kill()
        child.wait(TIMEOUT)
        child.stdout.close()
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL
    lines += rest.splitlines(keepends=True)
    complete = [line.strip() for line in lines if line.endswith("\n")]
    acked = {int(line) for line in complete if line.isdigit()}
    return acked, complete


def decode_seq(payload: bytes) -> int:
    seq, padding = payload.split(b":")
    assert padding == b"x" * (int(seq) * 37 % 300)
    return int(seq)


def test_sigkill_mid_stream_keeps_every_acknowledged_record(tmp_path: Path) -> None:
    acked, _ = run_child_until(tmp_path, "loop", stop=lambda lines: len(lines) >= 3000)

    reader = EventLogReader(tmp_path)
    read = [decode_seq(r.payload) for r in reader.records()]
    assert len(acked) >= 3000
    assert acked <= set(read)
    assert len(read) == len(set(read))
    assert len(reader.segments()) > 1
    assert reader.stats.pending_bytes == 0  # the dead writer's lock is gone
    assert reader.stats.torn_tails <= 1


def test_sigkill_during_a_partial_write_leaves_a_detected_torn_tail(tmp_path: Path) -> None:
    acked, lines = run_child_until(
        tmp_path, "partial", stop=lambda lines: lines[-1].startswith("partial")
    )
    written = int(lines[-1].split()[1])

    reader = EventLogReader(tmp_path)
    read = [decode_seq(r.payload) for r in reader.records()]
    assert acked == set(range(100))
    assert read == list(range(100))
    assert reader.stats.torn_tails == 1
    assert reader.stats.bytes_skipped == written > HEADER_BYTES


def test_a_yielding_tail_gives_the_gil_back_every_slice_and_loses_nothing(tmp_path, monkeypatch):
    from backbeat.eventlog import reader as reader_module

    with eventlog.EventLogWriter(tmp_path) as writer:
        writer.append_many([b'{"n":%d}' % n for n in range(1000)]).result()
    sleeps: list[float] = []
    monkeypatch.setattr(reader_module.time, "sleep", sleeps.append)
    plain = [record.payload for record in eventlog.EventLogReader(tmp_path).records()]
    tail = eventlog.EventLogReader(tmp_path)
    polite = [record.payload for record in eventlog.yielding(tail.records(), every=100)]
    assert polite == plain and len(plain) == 1000
    assert sleeps == [0] * 10  # once per 100 records
    assert tail.checkpoint == eventlog.EventLogReader(tmp_path, start=tail.checkpoint).checkpoint
    assert list(tail.records()) == []  # the position moved past every record
