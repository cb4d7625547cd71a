"""Throughput of the event log: durable appends per second under concurrency, then reads.

Run: ``.venv/bin/python bench/bench_eventlog.py [--seconds 2] [--dir PATH]``

Figures depend on the disk's fsync latency, so use ``--dir`` to measure the volume that
will hold ``var/events/`` (the default is a temporary directory). Scenarios:

* ``threads N``: N threads, each waiting for its record's acknowledgement before sending
  the next, like synchronous request handlers.
* ``asyncio C``: one event loop with C tasks awaiting ``append_async``, like one uvicorn
  worker with C requests in flight.
* ``pipelined``: one producer that never waits (acknowledgements checked at the end),
  the ceiling of the writer thread.
* ``read``: every record back; ``read damaged``: the same log with a corrupt byte in the
  middle of every segment (the reader resynchronises on the framing).
* ``count``: delivery counting of ``--count-events`` tracking events into a SQLite
  database, on the Beam DirectRunner and in process (the same DoFns), then an incremental
  run over 1% new events; each prints events/s and the process's peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import threading
import time
from pathlib import Path

from backbeat.eventlog import EventLogReader, EventLogWriter
from backbeat.events import Event, EventType

PAYLOAD = Event(
    type=EventType.IMPRESSION,
    ts=1_760_000_000.123,
    decision_id="01JDZ8Q4M7W1S3K5X9V2B6N0PA",
    line_item_id=4211,
    campaign_id=97,
    creative_id=1380,
    slot_id=12,
    listener="5f0c9a8e3b7d4c21a6e8f9b0c1d2e3f4",
    price_micros=12_500_000,
    currency="EUR",
    ip="203.0.113.0",
    user_agent="Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) Overcast/3.0",
).to_bytes()


def report(name: str, writer: EventLogWriter, elapsed: float, latencies: list[float]) -> None:
    rate = writer.records_written / elapsed
    per_batch = writer.records_written / max(writer.batches_written, 1)
    line = f"{name:<14} {rate:>10,.0f} appends/s  {per_batch:>7.1f} records/fsync"
    if latencies:
        cuts = statistics.quantiles(latencies, n=100)
        line += f"  ack p50 {cuts[49] * 1e3:.2f} ms  p99 {cuts[98] * 1e3:.2f} ms"
    print(line, flush=True)


def bench_threads(directory: Path, producers: int, seconds: float) -> None:
    writer = EventLogWriter(directory)
    stop = time.monotonic() + seconds
    latencies: list[list[float]] = [[] for _ in range(producers)]

    def produce(mine: list[float]) -> None:
        while (now := time.monotonic()) < stop:
            writer.append(PAYLOAD).result()
            mine.append(time.monotonic() - now)

    threads = [threading.Thread(target=produce, args=(lat,)) for lat in latencies]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    writer.close()
    elapsed = time.monotonic() - started
    report(f"threads {producers}", writer, elapsed, [x for lat in latencies for x in lat])


def bench_asyncio(directory: Path, tasks: int, seconds: float) -> None:
    writer = EventLogWriter(directory)
    latencies: list[float] = []

    async def produce(stop: float) -> None:
        while (now := time.monotonic()) < stop:
            await writer.append_async(PAYLOAD)
            latencies.append(time.monotonic() - now)

    async def main() -> None:
        stop = time.monotonic() + seconds
        await asyncio.gather(*(produce(stop) for _ in range(tasks)))

    started = time.monotonic()
    asyncio.run(main())
    writer.close()
    report(f"asyncio {tasks}", writer, time.monotonic() - started, latencies)


def bench_pipelined(directory: Path, seconds: float) -> None:
    writer = EventLogWriter(directory)
    stop = time.monotonic() + seconds
    started = time.monotonic()
    futures = []
    while time.monotonic() < stop:
        futures.extend(writer.append(PAYLOAD) for _ in range(1000))
    writer.close()
    elapsed = time.monotonic() - started
    assert all(f.exception() is None for f in futures)
    report("pipelined", writer, elapsed, [])


def bench_read(directory: Path) -> None:
    reader = EventLogReader(directory)
    started = time.monotonic()
    size = sum(len(r.payload) for r in reader.records())
    elapsed = time.monotonic() - started
    stats = reader.stats
    print(
        f"{'read':<14} {stats.records_read / elapsed:>10,.0f} records/s  "
        f"{size / elapsed / 1e6:.0f} MB/s of payload  "
        f"({stats.records_read:,} records in {stats.segments_read} segments)"
    )


def bench_read_damaged(directory: Path) -> None:
    """Flip one byte in the middle of each segment, then read everything back."""
    for segment in EventLogReader(directory).segments():
        path = directory / segment
        data = bytearray(path.read_bytes())
        if len(data) > 1000:
            data[len(data) // 2] ^= 0xFF
            path.write_bytes(bytes(data))
    reader = EventLogReader(directory)
    started = time.monotonic()
    count = sum(1 for _ in reader.records())
    elapsed = time.monotonic() - started
    print(
        f"{'read damaged':<14} {count / elapsed:>10,.0f} records/s  "
        f"({reader.stats.damaged_regions} damaged regions, "
        f"{reader.stats.damaged_bytes:,} bytes skipped)"
    )


def _tracking_events(total: int) -> list[bytes]:
    """Impressions with quartiles, clicks and repeated pixels, as players fire them."""
    import random

    from backbeat.events import DELIVERY_EVENTS

    rng = random.Random(3)
    out: list[bytes] = []
    n = 0
    while len(out) < total:
        t = 1_795_219_200 + rng.uniform(0, 86400)
        for kind in DELIVERY_EVENTS[: rng.randint(1, 6)]:
            for _ in range(rng.choice([1, 1, 1, 2])):
                out.append(
                    Event(
                        type=str(kind), ts=t + rng.uniform(0, 60), decision_id=f"d{n:09d}",
                        line_item_id=1 + n % 500, campaign_id=1 + n % 50,
                        price_micros=2_500_000, currency="USD", listener=f"l{n % 90000}",
                        ip="198.51.100.7", user_agent="Overcast/3.0 (+http://overcast.fm/)",
                    ).to_bytes()
                )  # fmt: skip
        n += 1
    return out[:total]


def write_tracking_log(directory: Path, total: int) -> None:
    with EventLogWriter(directory) as writer:
        writer.append_many(_tracking_events(total)).result()


def bench_count(total: int) -> None:
    """Count in fresh child processes, so each peak RSS is the counting's own."""
    import subprocess
    import sys

    for label in ("beam", "in-process"):
        with tempfile.TemporaryDirectory() as name:
            root = Path(name)
            subprocess.run(
                [sys.executable, __file__, "--write-log", str(root), "--count-events", str(total)],
                check=True,
            )
            for run in ("full", "+1%"):
                subprocess.run(
                    [sys.executable, __file__, "--count", label, str(root), run], check=True
                )


def count_once(label: str, root: Path, run: str) -> None:
    import resource

    from backbeat.db import make_engine, make_session_factory, migrate, session_scope
    from backbeat.reporting.counting import CountingPolicy
    from backbeat.reporting.service import count_event_log

    if run == "+1%":
        with EventLogWriter(root / "events") as writer:
            extra = _tracking_events(len(list(EventLogReader(root / "events").records())) // 99)
            writer.append_many(extra).result()
    url = f"sqlite:///{root / 'db.sqlite'}"
    migrate(url)
    factory = make_session_factory(make_engine(url))
    policy = CountingPolicy(beam_min_records=1 if label == "beam" else 10**12)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    started = time.monotonic()
    with session_scope(factory) as session:
        result = count_event_log(
            session=session, event_log_dir=root / "events", policy=policy, commit=session.commit
        )
    elapsed = time.monotonic() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print(
        f"{'count ' + label + ' ' + run:<24} {result.new_records / elapsed:>10,.0f} events/s  "
        f"({result.new_records:,} events in {elapsed:.1f} s, peak RSS {peak:.2f} GB, "
        f"{before:.2f} GB before counting)",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="per write scenario")
    parser.add_argument("--dir", type=Path, help="where to write (default: a temp dir)")
    parser.add_argument("--count-events", type=int, default=300_000)
    parser.add_argument("--write-log", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--count", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write_log:
        write_tracking_log(args.write_log / "events", args.count_events)
        return
    if args.count:
        count_once(args.count[0], Path(args.count[1]), args.count[2])
        return
    with tempfile.TemporaryDirectory(dir=args.dir) as name:
        directory = Path(name)
        print(f"payload {len(PAYLOAD)} bytes, writing under {directory}")
        for producers in (1, 16, 64):
            bench_threads(directory, producers, args.seconds)
        bench_asyncio(directory, 256, args.seconds)
        bench_pipelined(directory, args.seconds)
        bench_read(directory)
        bench_read_damaged(directory)
    bench_count(args.count_events)


if __name__ == "__main__":
    main()
