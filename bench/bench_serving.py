"""Ad decisions per second (in-process and over HTTP, with p50/p99) and tracking events per second.

Usage: ``.venv/bin/python bench/bench_serving.py [--line-items 10000] [--seconds 10] [--workers 2]``.
HTTP figures need ``wrk`` (Debian package ``wrk``); the server is ``backbeat serve`` itself
(uvicorn, which picks httptools and uvloop when installed, as ``uvicorn[standard]`` does).

The baseline is measured in the same run: a static Starlette response of the same size
as a ``/vast`` answer (and an empty 204 for tracking), served by uvicorn with the same
workers, driven by the same ``wrk`` settings and request scripts; ``/vast`` prints its ratio
to that ceiling. Tracking is measured as pixels (one event a ``GET``) and as an ad
inserter's batches (``POST /v1/tracking/batch``, 50 hits a request), against the pixels.
``/vast`` is measured a second time while a line item is edited every ``--edit-every``
seconds (2; 0 skips it): each edit makes every worker rebuild its snapshot beside serving.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
import random
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).parent))

from backbeat.api.app import build_services  # noqa: E402
from backbeat.api.hot_paths import SINGLE_AD, HotPaths, plain_vast_fields, query_params  # noqa: E402
from backbeat.api.routes.serving import VastQuery, build_request  # noqa: E402
from backbeat.config import Settings  # noqa: E402
from backbeat.eventlog import EventLogReader  # noqa: E402
from backbeat.serving.ledger import MemoryLedger  # noqa: E402
from backbeat.serving.request import AdRequest, PodRequest  # noqa: E402
from backbeat.serving.seen_ids import SEAL_STEP, SeenIds  # noqa: E402
from backbeat.serving.server import AdServer  # noqa: E402
from backbeat.signing import TrackingClaims  # noqa: E402
from synthetic import COUNTRIES, DEVICES, GENRES, random_request_attributes, synthetic_database  # noqa: E402

ADMIN_KEY = "bench-admin-key-0123456789abcdef"
SIGNING_KEY = "bench-signing-key-0123456789abcdef"


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()}"


def parse(raw: bytes) -> tuple[AdRequest, PodRequest]:
    """What ``GET /vast`` does with a query string (``api/hot_paths.py``)."""
    params = query_params(raw)
    fields = plain_vast_fields(params)
    if fields is None:
        query = VastQuery.model_validate(params)
        return build_request({}, "127.0.0.1", query.fields()), query.pod()
    return build_request({}, "127.0.0.1", fields), SINGLE_AD


def _clock() -> tuple[float, float]:
    """Wall and CPU seconds: CPU time is the steadier figure on a shared, loaded machine."""
    return time.perf_counter(), time.process_time()


def _since(start: tuple[float, float]) -> tuple[float, float]:
    wall, cpu = _clock()
    return wall - start[0], cpu - start[1]


def _us(seconds: tuple[float, float], count: int) -> str:
    return f"{seconds[0] / count * 1e6:7.1f} µs ({seconds[1] / count * 1e6:6.1f} µs CPU)"


def stages(server: AdServer, services: object, queries: list[bytes]) -> None:
    """One ``/vast`` split into its stages, each timed over the same queries."""
    count = len(queries)
    started = _clock()
    parsed = [parse(raw) for raw in queries]
    parse_s = _since(started)
    started = _clock()
    decided = [server.decide(request, pod) for request, pod in parsed]
    decide_s = _since(started)
    started = _clock()
    for decisions in decided:
        for decision in decisions:
            server.tracking_urls(decision)
    sign_s = _since(started)
    started = _clock()
    for decisions in decided:
        server.vast(decisions)
    vast_s = _since(started)
    app = HotPaths(SimpleNamespace(state=SimpleNamespace(services=services)))  # type: ignore[arg-type]

    async def send(_message: object) -> None:
        return None

    async def drive() -> tuple[float, float]:
        begun = _clock()
        for raw in queries:
            scope = {"type": "http", "method": "GET", "path": "/vast", "query_string": raw,
                     "headers": [(b"user-agent", b"bench")], "client": ("127.0.0.1", 1)}  # fmt: skip
            await app(scope, send, send)  # type: ignore[arg-type]
        return _since(begun)

    asgi_s = asyncio.run(drive())
    started = _clock()
    for raw in queries:
        request, pod = parse(raw)
        server.vast(server.decide(request, pod))
    direct_s = _since(started)

    def less(a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float]:
        return a[0] - b[0], a[1] - b[1]

    each = {
        "parse query": parse_s,
        "decide (incl. decision log)": decide_s,
        "sign 8 tracking URLs": sign_s,
        "render VAST (less signing)": less(vast_s, sign_s),
        "ASGI handler (less the rest)": less(asgi_s, direct_s),
    }
    for label, seconds in each.items():  # differences: noise can make a small one negative
        print(f"  stage {label:<28} {_us(seconds, count)}")
    print(f"  whole through the ASGI handler  {_us(asgi_s, count)}")


def best_of_batches(whole: Callable[[bytes], bytes], queries: list[bytes], size: int = 400) -> None:
    """The whole ``/vast`` timed in small batches, best batch kept: on a shared machine the
    least disturbed few milliseconds are the closest to what an idle one does."""
    best_wall = best_cpu = float("inf")
    for start in range(0, len(queries) - size + 1, size):
        begun = _clock()
        for raw in queries[start : start + size]:
            whole(raw)
        wall, cpu = _since(begun)
        best_wall, best_cpu = min(best_wall, wall), min(best_cpu, cpu)
    print(
        f"  best batch of {size} (of {len(queries) // size})  {best_wall / size * 1e6:7.1f} µs"
        f" ({best_cpu / size * 1e6:6.1f} µs CPU) each"
    )


def in_process(settings: Settings, slots: list[int], requests: int) -> None:
    services = build_services(settings, time.time)
    server = services.ad_server
    server.refresh(force=True)  # as a server does: templates prepared, snapshot frozen for GC
    rng = random.Random(3)
    queries = [
        f"slot={rng.choice(slots)}&listener=l{rng.randrange(10**6)}&country={rng.choice(COUNTRIES)}"
        f"&device={rng.choice(DEVICES)}&genre={rng.choice(GENRES)}".encode()
        for _ in range(requests)
    ]

    def whole(raw: bytes) -> bytes:  # what GET /vast does, minus the socket
        request, pod = parse(raw)
        return server.vast(server.decide(request, pod))

    for raw in queries[: requests // 10]:  # warm caches
        whole(raw)
    started = _clock()
    for raw in queries:
        whole(raw)
    whole_s = _since(started)
    print(
        f"in-process whole /vast    {requests / whole_s[0]:>10,.0f} /s   ({_us(whole_s, requests)} each: parse, decide, sign, render)"
    )
    best_of_batches(whole, queries)
    stages(server, services, queries[: max(1, requests // 2)])
    batch = [
        AdRequest(
            slot_id=rng.choice(slots),
            listener=f"l{rng.randrange(10**6)}",
            **random_request_attributes(rng),
        )  # type: ignore[arg-type]
        for _ in range(requests)
    ]
    started = _clock()
    decisions = [server.decide(request) for request in batch]
    decide_s = _since(started)
    started = _clock()
    for decision in decisions:
        server.vast(decision)
    vast_s = _since(started)
    filled = sum(decision[0].filled for decision in decisions)
    print(
        f"in-process decisions      {requests / decide_s[0]:>10,.0f} /s   ({_us(decide_s, requests)} each, fill {filled / requests:.0%})"
    )
    print(
        f"in-process decision+VAST  {requests / (decide_s[0] + vast_s[0]):>10,.0f} /s   (VAST rendering {_us(vast_s, requests)} each)"
    )
    rebuild_figures(server, services)
    gc_pause_figures(server)
    dedup_memory_figures()
    services.event_log.close()


def gc_pause_figures(server: AdServer, held: int = 1_000_000) -> None:
    """A full GC collection with a busy worker's render window of reservations held (300 s
    at 3,333 fills/s): the pause every full collection puts on the event loop."""

    def full_collection_ms() -> float:
        gc.collect()  # what the young-generation collections did as the objects came
        timings = []
        for _ in range(3):
            started = time.perf_counter()
            gc.collect()
            timings.append(time.perf_counter() - started)
        return sorted(timings)[1] * 1000

    ledger = server.ledger
    assert isinstance(ledger, MemoryLedger)
    item = server.snapshot.line_items[0]
    empty = full_collection_ms()
    now = time.time()
    for n in range(held):
        ledger.commit_spend(item, item.cpm_micros, now, f"{n:028x}")
    loaded = full_collection_ms()
    ledger.expire(now + ledger.render_window_s + 1)
    print(
        f"full GC collection with {held:,} reservations held: {loaded:.2f} ms "
        f"(baseline, none held: {empty:.2f} ms; the reservations add {loaded - empty:+.2f} ms)"
    )


def dedup_memory_figures(counted: int = 1_000_000, days: int = 7) -> None:
    """Memory of the ledger's counted decision ids (kept for the tracking URL lifetime) for
    ``counted`` impressions spread over ``days``, against a dict of the same ids (baseline:
    what the ledger held before, each id string and time its own object)."""
    now = time.time()
    step = days * 86400 / counted

    def decisions() -> Iterator[tuple[str, float]]:
        for n in range(counted):
            ts = now - n * step
            yield f"{(int(ts * 1000) << 64) | n:028x}", ts

    def traced(build: Callable[[], object]) -> float:
        tracemalloc.start()
        held = build()
        size = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        del held
        return size / 2**20

    def seen_ids() -> SeenIds:
        seen = SeenIds()
        for decision_id, ts in decisions():
            seen.add(decision_id, ts)
        seen.forget_before(now - days * 86400, now)
        while not seen.settled:  # the housekeeping ticks that follow, a step each
            seen.forget_before(now - days * 86400, now)
        return seen

    compact = traced(seen_ids)
    baseline = traced(lambda: dict(decisions()))
    print(
        f"counted ids ({counted:,} over {days} days): {compact:.1f} MiB, "
        f"{compact * 2**20 / counted:.0f} bytes an id (baseline, a dict of them: {baseline:.1f} "
        f"MiB, {baseline * 2**20 / counted:.0f} bytes an id; {baseline / compact:.1f}x)"
    )

    def longest_tick(seal_step: int) -> tuple[float, int]:
        """Sealing then releasing one hour of ``counted`` ids: the longest housekeeping step."""
        seen = SeenIds(seal_step=seal_step)
        hour_start = (now // 3600 - 3) * 3600
        for n, (decision_id, _) in enumerate(decisions()):
            seen.add(decision_id, hour_start + n * 3600 / counted)
        longest, ticks = 0.0, 0
        while ticks == 0 or not seen.settled:
            started = time.perf_counter()
            seen.forget_before(now - days * 86400, now)
            longest, ticks = max(longest, time.perf_counter() - started), ticks + 1
        return longest * 1000, ticks

    stepwise, steps = longest_tick(SEAL_STEP)
    at_once, _ = longest_tick(counted * 10)
    print(
        f"sealing an hour of {counted:,} counted ids: longest housekeeping step {stepwise:.1f} ms "
        f"over {steps} steps (baseline, all in one step: {at_once:.1f} ms; "
        f"{at_once / stepwise:.1f}x)"
    )


def rebuild_figures(server: AdServer, services: Any) -> None:
    """A snapshot read in full (start-up) against one rebuilt after a single line-item edit."""
    started = _clock()
    server.refresh(force=True)
    full = _since(started)
    edit_line_item(services.sessions, 1)
    started = _clock()
    server.refresh()
    after_edit = _since(started)
    print(
        f"snapshot rebuild: read in full {full[0]:.2f} s, after one line-item edit "
        f"{after_edit[0]:.2f} s ({len(server.snapshot.line_items):,} line items)"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(env: dict[str, str], port: int, workers: int) -> subprocess.Popen[bytes]:
    """``backbeat serve``, once every worker answers and has tried to build its forecaster.

    Each worker builds a forecaster in a background thread at start (seconds of CPU on a
    10,000-item book): measured before that is done, serving would share the cores with it.
    """
    backbeat = Path(sys.executable).parent / "backbeat"
    process = subprocess.Popen(
        [str(backbeat), "serve", "--port", str(port), "--workers", str(workers)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # Start-up and each worker's first forecaster take minutes on a busy machine.
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        try:
            metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=1)
        except httpx.TransportError:
            time.sleep(0.2)
            continue
        # Built or failed: either way each worker's first attempt is over.
        attempts = re.findall(
            r"backbeat_forecast_rebuilds_total\{result=\"\w+\"\} ([\d.]+)", metrics.text
        )
        if sum(float(count) for count in attempts) >= workers:
            return process
        time.sleep(0.5)
    process.kill()
    raise RuntimeError("server did not start (or its forecasters were not built)")


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and all its descendants (``/proc``), so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    stats: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(entry)] = fields
            children.setdefault(int(fields[1]), []).append(int(entry))
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        fields = stats.get(current)
        if fields is not None:
            total += int(fields[11]) + int(fields[12])
        todo.extend(children.get(current, ()))
    return total / ticks


STATIC_APP = """
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

BODY = open(%r, "rb").read()


async def vast(request):
    return Response(BODY, media_type="application/xml; charset=utf-8")


async def pixel(request):
    return Response(status_code=204)


app = Starlette(routes=[Route("/vast", vast), Route("/t/{event}", pixel)])
"""


def start_static(workdir: Path, body: bytes, port: int, workers: int) -> subprocess.Popen[bytes]:
    """The ceiling: a static Starlette response of the same size, under the same uvicorn."""
    (workdir / "body.xml").write_bytes(body)
    (workdir / "static_ceiling.py").write_text(STATIC_APP % str(workdir / "body.xml"))
    uvicorn = Path(sys.executable).parent / "uvicorn"
    process = subprocess.Popen(
        [str(uvicorn), "static_ceiling:app", "--app-dir", str(workdir), "--port", str(port),
         "--workers", str(workers), "--log-level", "warning", "--no-access-log"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/vast", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("static server did not start")


def run_wrk(
    url: str, script: Path | None, seconds: int, connections: int, server_pid: int | None = None
) -> dict[str, float]:
    """wrk's throughput, p50/p99 (ms), non-2xx; with ``server_pid``, the server's CPU µs
    per request (all its processes), steadier than throughput on a shared machine."""
    lua = ["-s", str(script)] if script is not None else []
    cpu_before = tree_cpu_seconds(server_pid) if server_pid else 0.0
    output = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", *lua, url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    figures = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))}  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    if server_pid:
        cpu = tree_cpu_seconds(server_pid) - cpu_before
        figures["cpu_us"] = cpu / max(requests, 1) * 1e6
    for label in ("50%", "99%"):
        value, unit = re.search(rf"{label}\s+([\d.]+)(us|ms|s)", output).groups()  # type: ignore[union-attr]
        figures[label] = float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    figures["non2xx"] = float(errors.group(1)) if errors else 0.0
    return figures


VAST_LUA = """
local countries = {%s}
local devices = {%s}
local genres = {%s}
request = function()
  local path = string.format("/vast?slot=%%d&listener=l%%d&country=%%s&device=%%s&genre=%%s",
    math.random(1, 4), math.random(1, 1000000), countries[math.random(#countries)],
    devices[math.random(#devices)], genres[math.random(#genres)])
  return wrk.format("GET", path)
end
"""

TRACKING_LUA = """
local paths = {}
for line in io.lines("%s") do paths[#paths + 1] = line end
local i = 0
request = function()
  i = i %% #paths + 1
  return wrk.format("GET", paths[i])
end
"""


class CatalogEditor:
    """Edits one random line item's CPM every ``every`` seconds, as a ``PATCH`` does (ORM
    update, which bumps the row version, and the catalog version): ad ops at work while
    the server takes traffic, so every worker rebuilds its snapshot (and, at most a fifth
    of the time, its forecaster) beside serving."""

    def __init__(self, database_url: str, every: float, line_items: int) -> None:
        self.database_url, self.every, self.line_items = database_url, every, line_items
        self.edits = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> CatalogEditor:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        from backbeat.db import make_engine, make_session_factory

        engine = make_engine(self.database_url)
        sessions = make_session_factory(engine)
        rng = random.Random(11)
        while not self._stop.wait(self.every):
            self.edits += edit_line_item(sessions, rng.randint(1, self.line_items))
        engine.dispose()


def edit_line_item(sessions: Callable[[], Any], item_id: int) -> bool:
    """Raise one line item's CPM by a cent as a ``PATCH`` does (ORM update, catalog version)."""
    from decimal import Decimal

    from backbeat.catalog.models import LineItem
    from backbeat.catalog.service import bump_catalog_version

    with sessions() as session:
        item = session.get(LineItem, item_id)
        if item is None:
            return False
        item.cpm = item.cpm + Decimal("0.01")
        bump_catalog_version(session)
        session.commit()
        return True


BATCH_HITS = 50
BATCH_CONNECTIONS = 4  # a few inserter servers, a request in flight each
BATCH_LUA = """
local bodies = {}
for line in io.lines("%s") do bodies[#bodies + 1] = line end
local headers = {["Content-Type"] = "application/json", ["Authorization"] = "Bearer %s"}
local i = 0
request = function()
  i = i %% #bodies + 1
  return wrk.format("POST", "/v1/tracking/batch", headers, bodies[i])
end
"""


def batch_script(workdir: Path, port: int, paths: list[str]) -> Path:
    """A wrk script posting ``BATCH_HITS`` signed impressions a request, as an ad inserter
    does (an ``ssai`` key minted here; workers learn new keys within a poll interval)."""
    minted = httpx.post(
        f"http://127.0.0.1:{port}/v1/api-keys",
        json={"role": "ssai"},
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    )
    minted.raise_for_status()
    bodies = workdir / "batches.jsonl"
    with bodies.open("wb") as out:
        for start in range(0, len(paths) - BATCH_HITS + 1, BATCH_HITS):
            hits = [
                {"url": path, "ip": f"198.51.100.{n % 250}", "user_agent": "Overcast/2024.1"}
                for n, path in enumerate(paths[start : start + BATCH_HITS])
            ]
            out.write(orjson.dumps({"hits": hits}) + b"\n")
    script = workdir / "batch.lua"
    script.write_text(BATCH_LUA % (bodies, minted.json()["key"]))
    time.sleep(2.5)  # every worker reloads inserter keys each catalog poll (1 s)
    return script


def lua_list(values: list[str]) -> str:
    return ", ".join(f'"{value}"' for value in values)


def over_http(
    settings: Settings,
    workdir: Path,
    seconds: int,
    workers: int,
    edit_every: float,
    line_items: int,
) -> None:
    if shutil.which("wrk") is None:
        print("HTTP figures skipped: wrk is not installed (apt-get install wrk)")
        return
    port = free_port()
    env = {
        **os.environ,
        "BACKBEAT_VAR_DIR": str(settings.var_dir),
        "BACKBEAT_DATABASE_URL": settings.database_url,
        "BACKBEAT_SIGNING_KEY": SIGNING_KEY,
        "BACKBEAT_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "BACKBEAT_LOG_LEVEL": "WARNING",
        "BACKBEAT_RATE_LIMIT_TRACKING_PER_IP": "0",  # wrk is one address on loopback
        "BACKBEAT_RATE_LIMIT_PER_KEY": "0",  # the inserter's batches come as fast as they can
        "BACKBEAT_ADMIN_KEY": ADMIN_KEY,
    }
    server = start_server(env, port, workers)
    try:
        vast_lua = workdir / "vast.lua"
        vast_lua.write_text(VAST_LUA % (lua_list(COUNTRIES), lua_list(DEVICES), lua_list(GENRES)))
        sample = httpx.get(f"http://127.0.0.1:{port}/vast?slot=1&listener=sample&country=US")
        from backbeat.signing import UrlSigner

        signer = UrlSigner(SIGNING_KEY.encode(), f"http://127.0.0.1:{port}")
        paths = []
        for n in range(5000):
            claims = TrackingClaims(
                f"{n:028x}", 1, 1, 1, 1, 10_000_000, "USD", f"l{n}", int(time.time()) + 3600
            )
            url = signer.url("impression", claims)
            paths.append(url.split(str(port), 1)[1])
        urls_file = workdir / "tracking-urls.txt"
        urls_file.write_text("\n".join(paths) + "\n")
        tracking_lua = workdir / "tracking.lua"
        tracking_lua.write_text(TRACKING_LUA % urls_file)
        run_wrk(f"http://127.0.0.1:{port}", vast_lua, 2, 32)  # warm-up
        vast = run_wrk(f"http://127.0.0.1:{port}", vast_lua, seconds, 32, server.pid)
        log_dir = settings.resolved_event_log_dir
        before = sum(1 for _ in EventLogReader(log_dir).records())
        track = run_wrk(f"http://127.0.0.1:{port}", tracking_lua, seconds, 64, server.pid)
        time.sleep(0.5)
        after = sum(1 for _ in EventLogReader(log_dir).records())
        batch_lua = batch_script(workdir, port, paths)
        batch = run_wrk(
            f"http://127.0.0.1:{port}", batch_lua, seconds, BATCH_CONNECTIONS, server.pid
        )
        time.sleep(0.5)
        batched = sum(1 for _ in EventLogReader(log_dir).records()) - after
        static_port = free_port()
        static = start_static(workdir, sample.content, static_port, workers)
        try:
            static_url = f"http://127.0.0.1:{static_port}"
            # The same request script as ``/vast`` (a random query made per request in Lua costs
            # wrk CPU on the shared cores); the static app ignores the query.
            run_wrk(static_url, vast_lua, 2, 32)  # warm-up
            ceiling = run_wrk(static_url, vast_lua, seconds, 32, static.pid)
            pixel_ceiling = run_wrk(static_url, tracking_lua, seconds, 64, static.pid)
        finally:
            static.terminate()
            static.wait(timeout=30)
        # Last: the rebuilds the edits start go on for a while after the last edit, and
        # would load whatever ran next.
        edited = None
        if edit_every > 0:
            with CatalogEditor(settings.database_url, edit_every, line_items) as editor:
                edited = run_wrk(f"http://127.0.0.1:{port}", vast_lua, seconds, 32, server.pid)
            edits = editor.edits

        def line(label: str, figures: dict[str, float], note: str) -> None:
            print(
                f"{label:<25} {figures['rps']:>10,.0f} /s   p50 {figures['50%']:.2f} ms  "
                f"p99 {figures['99%']:.2f} ms  server CPU {figures['cpu_us']:.0f} µs/request  ({note})"
            )

        line(
            "HTTP static ceiling",
            ceiling,
            f"Starlette, {len(sample.content):,}-byte body, same workers, wrk settings and script",
        )
        line(
            "HTTP GET /vast",
            vast,
            f"{workers} uvicorn workers, 32 connections, non-2xx {vast['non2xx']:.0f}; "
            f"{vast['rps'] / ceiling['rps']:.2f} of the static ceiling",
        )
        if edited is not None:
            line(
                "HTTP GET /vast, edits",
                edited,
                f"a line item edited every {edit_every:g} s ({edits} edits), each worker "
                f"rebuilding beside serving; {edited['rps'] / ceiling['rps']:.2f} of the ceiling",
            )
        line("HTTP static 204 ceiling", pixel_ceiling, "Starlette, empty 204, 64 connections")
        line(
            "HTTP GET /t/impression",
            track,
            f"fsync'd before 204; {after - before:,} events on disk, non-2xx "
            f"{track['non2xx']:.0f}; {track['rps'] / pixel_ceiling['rps']:.2f} of the 204 ceiling",
        )
        events_per_s = batched / seconds
        print(
            f"{'HTTP POST tracking batch':<25} {batch['rps']:>10,.0f} /s   p50 {batch['50%']:.2f} ms  "
            f"p99 {batch['99%']:.2f} ms  server CPU {batch['cpu_us'] / BATCH_HITS:.0f} µs/event  "
            f"({BATCH_HITS} hits a request, {BATCH_CONNECTIONS} connections, non-2xx {batch['non2xx']:.0f}: "
            f"{events_per_s:,.0f} events/s on disk, fsync'd before 200; "
            f"{events_per_s / track['rps']:.1f}x the pixels' events/s)"
        )
        print(
            f"load average after the HTTP runs: {os.getloadavg()[0]:.2f} (2 cores shared with wrk)"
        )
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--line-items", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--in-process-only", action="store_true", help="skip the HTTP figures (no wrk, no server)"
    )
    parser.add_argument(
        "--edit-every",
        type=float,
        default=2.0,
        help="also measure /vast while a line item is edited every SECONDS (0: skip)",
    )
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print("load average at start: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    print(
        f"book: {args.line_items:,} live line items, 4 slots, random targeting (bench/synthetic.py)"
    )
    with tempfile.TemporaryDirectory(prefix="backbeat-bench-") as tmp:
        workdir = Path(tmp)
        url, slots = synthetic_database(workdir, args.line_items)
        settings = Settings(
            var_dir=workdir / "var", database_url=url, signing_key=SIGNING_KEY, log_level="WARNING"
        )
        in_process(settings, slots, args.requests)
        if not args.in_process_only:
            over_http(
                settings, workdir, args.seconds, args.workers, args.edit_every, args.line_items
            )
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("load average at end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    print(f"peak memory (bench process, in-process part) {peak_mib:,.0f} MiB")


if __name__ == "__main__":
    main()
