"""In-process ad decisions per second with the shared ``RedisLedger``, and its Redis round trips.

Usage: ``.venv/bin/python bench/bench_redis_ledger.py [--line-items 10000] [--requests 50000]``.

Starts a throwaway ``redis-server`` (Debian package ``redis-server``) on a free port, books a
synthetic catalog (bench/synthetic.py: ~60% of line items capped, every paid one budgeted),
and runs the same request mix as ``bench_serving.py`` through ``AdServer.decide`` with the
embedded ``MemoryLedger`` and then with ``RedisLedger``. A warm-up pass lets the budget
leases fill first: in steady state no decision waits for one. Every fill is logged (its
budget reservation); afterwards one reconciler pass reads those records back (into the
process for the memory ledger, into Redis for the shared one) and is timed too.
"""

from __future__ import annotations

import argparse
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).parent))

from backbeat.api.app import build_services  # noqa: E402
from backbeat.config import Settings  # noqa: E402
from backbeat.serving.redis_ledger import RedisLedger  # noqa: E402
from backbeat.serving.request import AdRequest  # noqa: E402
from backbeat.serving.snapshot import ServableLineItem  # noqa: E402
from bench_serving import SIGNING_KEY, machine  # noqa: E402
from synthetic import random_request_attributes, synthetic_database  # noqa: E402


@contextmanager
def redis_server(workdir: Path) -> Iterator[str]:
    """A private, non-persistent redis-server on a free port; yields its URL."""
    executable = shutil.which("redis-server")
    if executable is None:
        raise SystemExit("redis-server not found (apt-get install redis-server)")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    process = subprocess.Popen(
        [executable, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
         "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with redis.Redis.from_url(url, socket_timeout=0.5) as client:
                    client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def requests_for(slots: list[int], count: int, seed: int) -> list[AdRequest]:
    rng = random.Random(seed)
    return [
        AdRequest(
            slot_id=rng.choice(slots),
            listener=f"l{rng.randrange(10**6)}",
            **random_request_attributes(rng),
        )  # type: ignore[arg-type]
        for _ in range(count)
    ]


def ledger_only(ledger: RedisLedger, line_items: tuple[ServableLineItem, ...]) -> None:
    """The caps call alone, next to a bare PING: what the shared ledger adds to a decision."""
    capped = [item for item in line_items if item.caps][:2]
    count = 5000
    started = time.perf_counter()
    for n in range(count):
        ledger.acquire_caps(f"bench{n}", capped, time.time())
    caps_us = (time.perf_counter() - started) / count * 1e6
    with redis.Redis.from_url(ledger.url) as client:
        client.ping()
        started = time.perf_counter()
        for _ in range(count):
            client.ping()
        ping_us = (time.perf_counter() - started) / count * 1e6
    print(
        f"{'':<13} acquire_caps alone {caps_us:.0f} µs (2 capped candidates); redis-py PING {ping_us:.0f} µs"
    )


def _redis_cpu(ledger: object) -> float:
    """CPU seconds redis-server has used (user + system), or 0 for the memory ledger."""
    if not isinstance(ledger, RedisLedger):
        return 0.0
    with redis.Redis.from_url(ledger.url) as client:
        info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def run(label: str, settings: Settings, slots: list[int], requests: int, warmup: int) -> None:
    services = build_services(settings, time.time)
    server = services.ad_server
    ledger = server.ledger
    try:
        for request in requests_for(slots, warmup, seed=2):
            server.decide(request)
        time.sleep(1.5)  # leases asked for during the warm-up arrive; one flush goes out
        batch = requests_for(slots, requests, seed=3)
        stats = ledger.stats if isinstance(ledger, RedisLedger) else None
        caps_before = stats.caps if stats else 0
        background_before = stats.background if stats else 0
        started, cpu = time.perf_counter(), time.process_time()
        decisions = [server.decide(request) for request in batch]
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        reasons = Counter(d[0].no_fill_reason for d in decisions if not d[0].filled)
        filled = sum(d[0].filled for d in decisions)
        print(
            f"{label:<13} {requests / elapsed:>9,.0f} decisions/s  "
            f"({elapsed / requests * 1e6:.1f} µs each, {cpu / requests * 1e6:.1f} µs CPU, "
            f"fill {filled / requests:.1%})"
        )
        services.event_log.flush()
        reconcile = server._reconcile or (lambda _now: None)  # (a build without one)
        redis_cpu = _redis_cpu(ledger)
        began, began_cpu = time.perf_counter(), time.process_time()
        done = reconcile(time.time())
        took, took_cpu = time.perf_counter() - began, time.process_time() - began_cpu
        redis_cpu = _redis_cpu(ledger) - redis_cpu
        reservations = getattr(done, "reservations", 0)
        print(
            f"{'':<13} reconcile pass: {getattr(done, 'records', 0):,} records, "
            f"{reservations:,} fills in {took * 1e3:.0f} ms ({took_cpu * 1e3:.0f} ms CPU here"
            + (f", {redis_cpu * 1e3:.0f} ms in redis-server" if redis_cpu else "")
            + f"): {reservations / max(took, 1e-9):,.0f} fills/s"
        )
        if stats:
            caps = stats.caps - caps_before
            background = stats.background - background_before
            print(
                f"{'':<13} Redis round trips per decision: {caps / requests:.3f} on the request "
                f"path (caps), {background / requests:.4f} in the background "
                f"({background / elapsed:.1f}/s: leases, flushes)"
            )
        if isinstance(ledger, RedisLedger):
            ledger_only(ledger, server.snapshot.line_items)
        if reasons:
            top = ", ".join(
                f"{reason} {count / requests:.2%}" for reason, count in reasons.most_common(3)
            )
            print(f"{'':<13} no-fill reasons: {top}")
    finally:
        if isinstance(ledger, RedisLedger):
            ledger.close()
        services.event_log.close()
        services.engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--line-items", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--warmup", type=int, default=20_000)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print(
        f"book: {args.line_items:,} live line items, 4 slots, random targeting (bench/synthetic.py)"
    )
    with tempfile.TemporaryDirectory(prefix="backbeat-bench-") as tmp:
        workdir = Path(tmp)
        url, slots = synthetic_database(workdir, args.line_items)
        common = {"database_url": url, "signing_key": SIGNING_KEY, "log_level": "WARNING",
                  "decision_log_sample": 1.0}  # fmt: skip
        run("MemoryLedger", Settings(var_dir=workdir / "var-memory", **common), slots,
            args.requests, args.warmup)  # fmt: skip
        with redis_server(workdir) as redis_url:
            settings = Settings(var_dir=workdir / "var-redis", redis_url=redis_url, **common)
            run("RedisLedger", settings, slots, args.requests, args.warmup)


if __name__ == "__main__":
    main()
