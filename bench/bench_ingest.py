"""Tracking ingestion at fixed offered rates (open loop): durable events/s, latency, none lost.

Usage: ``.venv/bin/python bench/bench_ingest.py [--rates 10000,20000,30000] [--seconds 10]
[--warmup 5] [--hits 50] [--connections 64] [--workers 2]``.

Ad inserters report their listeners' tracking hits in batches (``POST /v1/tracking/batch``),
on their own schedule: the next batch is due whether or not the last one was answered. So
this sends each batch when it is due (open loop) and measures its latency from that moment,
queueing for a free connection included: a server that falls behind shows it in the
percentiles, not in a quietly lower offered rate as a closed-loop tool would (coordinated
omission). Each rate prints achieved durable events/s (hits in answered batches, fsync'd
before each ``200``), p50/p90/p99/max, errors and the server's CPU per event.

Hits are shaped like real ones: each served ad's impression, start, quartiles and complete
(fewer as listeners drop off), interleaved across many listeners' sessions, with real
podcast-app user agents and distinct addresses; every decision id is new.

The baseline runs in the same process at the same rates: the same batches, posted to a
static Starlette app under uvicorn with the same workers that reads each body and answers a
constant ``200`` (what receiving such a request costs, with nothing judged or stored). Both
servers are also asked how kept-alive connections opened together spread over their
workers: uvicorn's supervisor shares one listening socket, ``backbeat serve`` gives each
worker its own (``SO_REUSEPORT``); ``ss`` names the worker holding each connection.

At the end the event log is read back: every hit of every answered batch must be in it
(``lost``, goal 0). Peak memory is printed for the server's processes and this client.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import orjson
import uvloop

sys.path.insert(0, str(Path(__file__).parent))

from backbeat.eventlog import EventLogReader  # noqa: E402
from backbeat.events import DELIVERY_EVENTS, Event  # noqa: E402
from backbeat.serving.decisions import new_decision_id  # noqa: E402
from backbeat.signing import TrackingClaims, UrlSigner  # noqa: E402
from backbeat.simulation.profiles import DEVICES  # noqa: E402
from bench_serving import (  # noqa: E402
    ADMIN_KEY,
    SIGNING_KEY,
    free_port,
    machine,
    start_server,
    tree_cpu_seconds,
)
from synthetic import synthetic_database  # noqa: E402

# What share of started ads reach each event (players report fewer as listeners drop off).
SEQUENCE = (
    ("impression", 1.0),
    ("start", 0.97),
    ("firstQuartile", 0.9),
    ("midpoint", 0.84),
    ("thirdQuartile", 0.79),
    ("complete", 0.74),
)
AGENTS = [agent for _, _, _, agents in DEVICES for agent in agents]
AGENT_WEIGHTS = [weight / len(agents) for _, _, weight, agents in DEVICES for _ in agents]

STATIC_APP = """
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

ANSWER = b'{"accepted":%d,"refused":[]}'


async def batch(request):
    await request.body()
    return Response(ANSWER, media_type="application/json")


app = Starlette(routes=[Route("/v1/tracking/batch", batch, methods=["POST"])])
"""


def hit_stream(signer: UrlSigner, count: int, rng: random.Random) -> list[dict[str, str]]:
    """``count`` tracking hits as an inserter sees them: many sessions at once, interleaved."""
    hits: list[tuple[float, dict[str, str]]] = []
    now = time.time()
    while len(hits) < count:
        listener = f"lst-{rng.getrandbits(48):012x}"
        ip = f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        agent = rng.choices(AGENTS, AGENT_WEIGHTS)[0]
        claims = TrackingClaims(
            new_decision_id(now), rng.randint(1, 10_000), rng.randint(1, 500),
            rng.randint(1, 20_000), rng.randint(1, 4), rng.randint(2_000, 30_000),
            "USD", listener, int(now) + 7 * 86400,
        )  # fmt: skip
        urls = signer.urls(tuple(event for event, _ in SEQUENCE), claims)
        began = rng.random()  # sessions overlap: each starts somewhere in the window
        for step, (event, share) in enumerate(SEQUENCE):
            if rng.random() > share:
                break
            hits.append((began + step * 0.25, {"url": urls[event], "ip": ip, "user_agent": agent}))
    hits.sort(key=lambda pair: pair[0])
    return [hit for _, hit in hits[:count]]


def batches_of(hits: list[dict[str, str]], size: int) -> list[bytes]:
    return [orjson.dumps({"hits": hits[i : i + size]}) for i in range(0, len(hits), size)]


class Connection:
    """One kept-alive HTTP/1.1 connection posting batches, a request at a time.

    A load generator of its own, like wrk's (the platform's clients use httpx): on two
    cores a client costing a third of a core per 600 requests/s would take the server's
    CPU and hide what is measured. Answers are JSON with a ``Content-Length``.
    """

    def __init__(self, host: str, port: int, key: str) -> None:
        self.host, self.port = host, port
        self.head = (
            f"POST /v1/tracking/batch HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
            "Content-Length: "
        ).encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def post(self, body: bytes) -> tuple[int, bytes]:
        if self.writer is None or self.writer.is_closing():
            await self.open()
        assert self.reader is not None and self.writer is not None
        self.writer.write(b"%s%d\r\n\r\n%s" % (self.head, len(body), body))
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for header in head.split(b"\r\n")[1:]:
            name, _, value = header.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        answer = await self.reader.readexactly(length)
        if b"connection: close" in head.lower():
            self.close()
        return status, answer

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


async def drive(
    url: str, key: str, bodies: list[bytes], per_second: float, connections: int
) -> dict[str, float]:
    """Post ``bodies`` at ``per_second``, each when due, round-robin over ``connections``
    kept-alive connections (several inserter instances, each with its own; a pool that
    reuses its first idle connection would load one worker only). A batch due while its
    connection is busy waits for it, and that wait is part of its latency."""
    host, port = url.removeprefix("http://").split(":")
    latencies: list[float] = []
    accepted = failed = 0
    queues: list[asyncio.Queue[tuple[bytes, float] | None]] = [
        asyncio.Queue() for _ in range(connections)
    ]
    pool = [Connection(host, int(port), key) for _ in range(connections)]
    await asyncio.gather(*(connection.open() for connection in pool))

    async def send(
        connection: Connection, queue: asyncio.Queue[tuple[bytes, float] | None]
    ) -> None:
        nonlocal accepted, failed
        while (item := await queue.get()) is not None:
            body, due = item
            try:
                status, answer = await connection.post(body)
            except (OSError, asyncio.IncompleteReadError, ValueError):
                connection.close()
                failed += 1
                continue
            latencies.append(time.perf_counter() - due)
            parsed = orjson.loads(answer) if status == 200 else None
            if parsed is None or parsed["refused"]:
                failed += 1
            if parsed is not None:
                accepted += parsed["accepted"]
        connection.close()

    senders = [asyncio.create_task(send(c, q)) for c, q in zip(pool, queues, strict=True)]
    cpu_before = time.process_time()
    start = time.perf_counter() + 0.05
    for n, body in enumerate(bodies):
        due = start + n / per_second
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        queues[n % connections].put_nowait((body, due))
    for queue in queues:
        queue.put_nowait(None)
    await asyncio.gather(*senders)
    elapsed = time.perf_counter() - start
    return {
        "eps": accepted / elapsed,
        "accepted": accepted,
        "p50": percentile(latencies, 0.50),
        "p90": percentile(latencies, 0.90),
        "p99": percentile(latencies, 0.99),
        "max": max(latencies, default=0.0) * 1000,
        "failed": failed,
        "client_cpu": (time.process_time() - cpu_before) / elapsed,
    }


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] * 1000 if ordered else 0.0


def peak_rss_mib(pid: int) -> float:
    """Sum of the peak resident memory (VmHWM) of a process and its children."""
    total = 0
    for each in [pid, *children(pid)]:
        try:
            for line in Path(f"/proc/{each}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def start_static(workdir: Path, port: int, workers: int, hits: int) -> subprocess.Popen[bytes]:
    (workdir / "static_batch.py").write_text(STATIC_APP % hits)
    uvicorn = Path(sys.executable).parent / "uvicorn"
    process = subprocess.Popen(
        [str(uvicorn), "static_batch:app", "--app-dir", str(workdir), "--port", str(port),
         "--workers", str(workers), "--log-level", "warning", "--no-access-log"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.post(f"http://127.0.0.1:{port}/v1/tracking/batch", content=b"{}", timeout=1)
            return process
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("static server did not start")


async def _open_together(port: int, count: int) -> list[asyncio.StreamWriter]:
    pairs = await asyncio.gather(
        *(asyncio.open_connection("127.0.0.1", port) for _ in range(count))
    )
    for _, writer in pairs:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: bench\r\n\r\n")
    await asyncio.gather(*(reader.read(1) for reader, _ in pairs))  # each was accepted
    return [writer for _, writer in pairs]


def busiest_shares(port: int, count: int, rounds: int) -> list[int]:
    """Open ``count`` connections together, ``rounds`` times: how many the busiest worker
    accepted each time (``ss`` names the process holding each connection)."""
    found = []
    for _ in range(rounds):

        async def once() -> int:
            writers = await _open_together(port, count)
            listing = subprocess.run(
                ["ss", "-tnpH", "state", "established", f"( sport = :{port} )"],
                capture_output=True, text=True, check=True,
            ).stdout  # fmt: skip
            for writer in writers:
                writer.close()
            held = Counter(re.findall(r"pid=(\d+)", listing))
            return max(held.values(), default=0)

        found.append(uvloop.run(once()))
        time.sleep(0.3)
    return found


def line(label: str, rate: int, result: dict[str, float]) -> str:
    return (
        f"{label:9} offered {rate:>7,}/s  durable {result['eps']:>8,.0f}/s  "
        f"p50 {result['p50']:6.2f}  p90 {result['p90']:6.2f}  p99 {result['p99']:6.2f}  "
        f"max {result['max']:7.2f} ms  failed {result['failed']:.0f}  "
        f"{result['cpu_us']:5.1f} µs server CPU/event (busiest worker {result['split']:.0%}), "
        f"client {result['client_cpu']:.2f} cores"
    )


def children(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(child) for child in found.split()]


def measure(
    url: str, key: str, bodies: list[bytes], rate: int, args: argparse.Namespace, pid: int
) -> dict[str, float]:
    workers = children(pid)
    cpu_before = tree_cpu_seconds(pid)
    each_before = [tree_cpu_seconds(worker) for worker in workers]
    result = uvloop.run(drive(url, key, bodies, rate / args.hits, args.connections))
    result["cpu_us"] = (tree_cpu_seconds(pid) - cpu_before) / int(rate * args.seconds) * 1e6
    each = [tree_cpu_seconds(w) - b for w, b in zip(workers, each_before, strict=True)]
    result["split"] = max(each) / max(sum(each), 1e-9)  # the busiest worker's share
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rates", default="10000,20000,30000", help="events/s, comma-separated")
    parser.add_argument("--seconds", type=float, default=10.0, help="per rate")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds, unreported")
    parser.add_argument("--hits", type=int, default=50, help="hits per batch")
    parser.add_argument("--connections", type=int, default=64, help="kept-alive connections")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    rates = [int(rate) for rate in args.rates.split(",")]
    print(f"machine: {machine()}")
    print(
        f"{args.hits} hits a batch, open loop, round-robin over {args.connections} connections, "
        f"{args.seconds:g} s per rate after {args.warmup:g} s of warm-up, {args.workers} workers; "
        "latency from each batch's due time"
    )
    with tempfile.TemporaryDirectory(prefix="backbeat-ingest-") as tmp:
        workdir = Path(tmp)
        url, _slots = synthetic_database(workdir, 1_000)
        port, static_port = free_port(), free_port()
        env = {
            **os.environ,
            "BACKBEAT_VAR_DIR": str(workdir / "var"),
            "BACKBEAT_DATABASE_URL": url,
            "BACKBEAT_SIGNING_KEY": SIGNING_KEY,
            "BACKBEAT_ADMIN_KEY": ADMIN_KEY,
            "BACKBEAT_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
            "BACKBEAT_LOG_LEVEL": "WARNING",
            # One client on loopback is one address and one key: the per-IP and per-key
            # limits guard the internet, not this measurement.
            "BACKBEAT_RATE_LIMIT_TRACKING_PER_IP": "0",
            "BACKBEAT_RATE_LIMIT_PER_KEY": "0",
        }
        signer = UrlSigner(SIGNING_KEY.encode(), f"http://127.0.0.1:{port}")
        rng = random.Random(7)
        built = time.perf_counter()
        plans = {
            rate: batches_of(hit_stream(signer, int(rate * args.seconds), rng), args.hits)
            for rate in rates
        }
        # Unreported warm-up for each server at the first rate: connections, first calls,
        # the heap (a server in production has been running).
        warmup = batches_of(hit_stream(signer, int(rates[0] * args.warmup), rng), args.hits)
        total_hits = sum(int(rate * args.seconds) for rate in rates) + 2 * int(
            rates[0] * args.warmup
        )
        print(f"signed {total_hits:,} hits in {time.perf_counter() - built:.1f} s (not timed)")
        static = start_static(workdir, static_port, args.workers, args.hits)
        spread: dict[str, dict[int, list[int]]] = {"baseline": {}, "backbeat": {}}
        try:
            for count in (4, 16):
                spread["baseline"][count] = busiest_shares(static_port, count, 5)
            uvloop.run(drive(f"http://127.0.0.1:{static_port}", "-", warmup,
                             rates[0] / args.hits, args.connections))  # fmt: skip
            for rate in rates:
                result = measure(f"http://127.0.0.1:{static_port}", "-", plans[rate], rate, args,
                                 static.pid)  # fmt: skip
                print(line("baseline", rate, result), flush=True)
        finally:
            static.terminate()
            static.wait(timeout=30)
        server = start_server(env, port, args.workers)
        accepted = 0
        try:
            minted = httpx.post(
                f"http://127.0.0.1:{port}/v1/api-keys",
                json={"role": "ssai"},
                headers={"Authorization": f"Bearer {ADMIN_KEY}"},
            )
            minted.raise_for_status()
            key = minted.json()["key"]
            time.sleep(2.5)  # every worker reloads inserter keys each catalog poll (1 s)
            for count in (4, 16):
                spread["backbeat"][count] = busiest_shares(port, count, 5)
            for count in (4, 16):
                print(
                    f"{count} connections opened together, 5 times, connections on the busiest "
                    f"of {args.workers} workers: baseline (uvicorn, one shared socket) "
                    f"{spread['baseline'][count]}, backbeat (a socket per worker) "
                    f"{spread['backbeat'][count]}"
                )
            warm = uvloop.run(drive(f"http://127.0.0.1:{port}", key, warmup,
                                    rates[0] / args.hits, args.connections))  # fmt: skip
            accepted += int(warm["accepted"])
            for rate in rates:
                result = measure(f"http://127.0.0.1:{port}", key, plans[rate], rate, args,
                                 server.pid)  # fmt: skip
                accepted += int(result["accepted"])
                verdict = (
                    "met" if result["eps"] >= 0.98 * rate and result["p99"] < 20 else "not met"
                )
                print(line("backbeat", rate, result) + f"  (≥ rate, p99 < 20 ms: {verdict})",
                      flush=True)  # fmt: skip
            server_peak = peak_rss_mib(server.pid)
        finally:
            server.terminate()  # a graceful stop: queued records are committed
            server.wait(timeout=60)
        stored = sum(
            1
            for record in EventLogReader(workdir / "var" / "events").records()
            if Event.from_bytes(record.payload).type in DELIVERY_EVENTS
        )
        print(f"event log  {stored:,} tracking records; {accepted:,} hits acknowledged")
        print(f"lost       {max(accepted - stored, 0):,} acknowledged hits missing from the log")
        print(
            f"peak memory: server {server_peak:,.0f} MiB (all workers), this client "
            f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB; "
            f"load average {os.getloadavg()[0]:.2f} at the end"
        )


if __name__ == "__main__":
    main()
