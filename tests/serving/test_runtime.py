"""Serving at wire speed without losing anything (issue 10): listener ids, forged pixels that
cost nothing durable, one loop wake-up per fsync'd batch, coalesced rebuilds, keep-alive."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route
from test_auction import book_bidder, serving_app

from backbeat.config import Settings
from backbeat.demo.run import CLIENT_KEEPALIVE_SECONDS, get_with_retries
from backbeat.eventlog import EventLogReader, EventLogWriter
from backbeat.measurement.tracking import Tracker
from backbeat.signing import UrlSigner
from factories import ADMIN, create_slot

# --- listener ids ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("listener", "status"),
    [
        ("a%1Fb", 400),
        ("x" * 129, 400),
        ("a%20b", 400),
        ("a%26cur%3DUSD", 400),
        ("user@app:7._~-", 200),
    ],
)
def test_listener_ids_are_checked_before_anything_is_signed(tmp_path: Path, listener, status):
    with serving_app(tmp_path, f"sqlite:///{tmp_path / 'backbeat.db'}") as client:
        book_bidder(client, "10.00")
        slot = create_slot(client)
        client.app.state.services.ad_server.refresh()
        response = client.get(f"/vast?slot={slot['id']}&listener={listener}")
        assert response.status_code == status, response.text
        if status == 400:
            assert response.json()["reason"] == "invalid-listener"
            assert response.headers["content-type"].startswith("application/problem+json")


# --- forged pixels are logged without a durable write of their own ----------------------


class RecordingLog:
    def __init__(self) -> None:
        self.awaited: list[bytes] = []
        self.unawaited: list[bytes] = []

    async def append_async(self, payload: bytes) -> None:
        self.awaited.append(payload)

    def append_nowait(self, payload: bytes) -> None:
        self.unawaited.append(payload)


def test_a_forged_pixel_is_logged_without_waiting_for_a_fsync():
    log = RecordingLog()
    signer = UrlSigner(b"k" * 32, "http://t")
    tracker = Tracker(signer=signer, log=log, clock=lambda: 1_790_000_000.0)  # type: ignore[arg-type]
    params = {"d": "ab", "li": "1", "c": "1", "cr": "1", "s": "1", "p": "x", "cur": "USD"}
    with pytest.raises(Exception) as raised:
        asyncio.run(
            tracker.track(
                "impression", {**params, "l": "a", "x": "1", "sig": "no"}, ip="", user_agent=""
            )
        )
    assert getattr(raised.value, "reason", "") == "invalid-signature"
    assert log.awaited == [] and len(log.unawaited) == 1
    assert b'"type":"rejected"' in log.unawaited[0]


def test_unawaited_records_gather_instead_of_waking_the_writer(tmp_path: Path):
    with EventLogWriter(tmp_path, max_delay_s=0.0, lazy_delay_s=0.2) as writer:
        for n in range(100):
            writer.append_nowait(b"forged %d" % n)
        time.sleep(0.05)
        assert writer.batches_written == 0  # nobody waits: no fsync yet
        deadline = time.monotonic() + 5
        while writer.records_written < 100 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert (writer.records_written, writer.batches_written) == (100, 1)
        # A record someone waits for takes the queued ones along at once.
        for n in range(10):
            writer.append_nowait(b"late %d" % n)
        writer.append(b"genuine").result(timeout=5)
        assert writer.records_written == 111
    assert len(list(EventLogReader(tmp_path).records())) == 111


def test_one_loop_wake_up_per_fsyncd_batch(tmp_path: Path):
    async def main() -> tuple[int, int]:
        loop = asyncio.get_running_loop()
        original = loop.call_soon_threadsafe
        wakeups = 0

        def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
            nonlocal wakeups
            wakeups += 1
            return original(*args, **kwargs)

        loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
        with EventLogWriter(tmp_path, max_delay_s=0.005) as writer:
            await asyncio.gather(*(writer.append_async(b"event %d" % n) for n in range(2000)))
            batches = writer.batches_written
        return wakeups, batches

    wakeups, batches = asyncio.run(main())
    assert len(list(EventLogReader(tmp_path).records())) == 2000
    assert wakeups == batches < 100


# --- catalog bursts -------------------------------------------------------------------


@pytest.mark.slow
def test_a_burst_of_patches_rebuilds_the_snapshot_a_few_times_not_each_time(tmp_path: Path):
    with serving_app(tmp_path, f"sqlite:///{tmp_path / 'backbeat.db'}") as client:  # polls 0.2 s
        booked = book_bidder(client, "10.00")
        server = client.app.state.services.ad_server
        time.sleep(0.5)
        before, started = server.rebuilds, time.monotonic()
        item = booked["line_item"]["id"]
        for n in range(300):
            response = client.patch(f"/v1/line-items/{item}", json={"name": f"n{n}"}, headers=ADMIN)
            assert response.status_code == 200, response.text
        elapsed = time.monotonic() - started
        deadline = time.monotonic() + 5
        while server.snapshot.line_items[0].name != "n299" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.snapshot.line_items[0].name == "n299"  # the last change is served
        rebuilds = server.rebuilds - before
        assert 1 <= rebuilds <= elapsed / 0.2 + 3, (rebuilds, elapsed)
        assert rebuilds < 30


# --- keep-alive -----------------------------------------------------------------------


async def _ok(_request):  # type: ignore[no-untyped-def]
    return Response(b"ok")


class _Server:
    """A real uvicorn (httptools) on a free port, in a thread."""

    def __init__(self, keep_alive: float) -> None:
        app = Starlette(routes=[Route("/", _ok)])
        config = uvicorn.Config(
            app, host="127.0.0.1", port=0, log_level="warning", timeout_keep_alive=keep_alive
        )  # type: ignore[arg-type]
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        while not self.server.started:
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/"

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=5)


def test_the_server_keeps_idle_connections_longer_than_the_demo_client():
    assert Settings().keep_alive_seconds > 2 * CLIENT_KEEPALIVE_SECONDS


@pytest.mark.slow
def test_reuse_at_the_idle_edge_with_a_longer_server_keep_alive_never_fails():
    """Scaled down: client pool idle 0.5 s, server 1.5 s, reuses at 0.45–0.55 s idle."""
    with (
        _Server(keep_alive=1.5) as url,
        httpx.Client(limits=httpx.Limits(keepalive_expiry=0.5)) as client,
    ):
        for n in range(10):
            assert client.get(url).status_code == 200
            time.sleep(0.45 + 0.01 * n)


@pytest.mark.slow
def test_the_demo_retries_a_connection_the_server_just_closed():
    """Server idle timeout shorter than the client's (the measured failure): retries cover it."""
    with (
        _Server(keep_alive=0.3) as url,
        httpx.Client(limits=httpx.Limits(keepalive_expiry=5)) as client,
    ):
        for n in range(10):
            assert get_with_retries(client, url).status_code == 200
            time.sleep(0.28 + 0.005 * n)


# --- Redis round trips off the event loop ----------------------------------------------


def test_decisions_on_a_shared_ledger_run_off_the_event_loop(tmp_path: Path):
    from backbeat.serving.ledger import MemoryLedger
    from backbeat.serving.server import AdServer

    class SocketLedger(MemoryLedger):
        blocking = True  # as RedisLedger: a decision does socket I/O

    def server_for(ledger: MemoryLedger) -> tuple[AdServer, list[str]]:
        server = AdServer(
            session_factory=None,  # type: ignore[arg-type]
            ledger=ledger,
            signer=UrlSigner(b"k" * 32, "http://t"),
            clock=time.time,
            tracking_ttl_seconds=60,
        )
        threads: list[str] = []

        def decide(request, pod=None):  # type: ignore[no-untyped-def]
            threads.append(threading.current_thread().name)
            return []

        server.decide = decide  # type: ignore[method-assign]
        return server, threads

    async def main() -> tuple[list[str], list[str], str]:
        shared, off = server_for(SocketLedger())
        local, inline = server_for(MemoryLedger())
        await shared.decide_async(None)  # type: ignore[arg-type]
        await local.decide_async(None)  # type: ignore[arg-type]
        shared.close()
        return off, inline, threading.current_thread().name

    off, inline, loop_thread = asyncio.run(main())
    assert off and off[0] != loop_thread and off[0].startswith("decide")
    assert inline == [loop_thread]  # in memory: no I/O, no thread hop
