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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="per write scenario")
    parser.add_argument("--dir", type=Path, help="where to write (default: a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as name:
        directory = Path(name)
        print(f"payload {len(PAYLOAD)} bytes, writing under {directory}")
        for producers in (1, 16, 64):
            bench_threads(directory, producers, args.seconds)
        bench_asyncio(directory, 256, args.seconds)
        bench_pipelined(directory, args.seconds)
        bench_read(directory)


if __name__ == "__main__":
    main()
