"""Request limits: body size before reading (413), body timeout (408), no key no body (401),
rate limits (429 + Retry-After), the request deadline (503), over real sockets where it
matters (issue 9, item 4)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from test_validation import assert_problem

from backbeat.api.app import create_app
from backbeat.api.middleware import Guard
from backbeat.api.ratelimit import TokenBuckets
from backbeat.config import Settings
from backbeat.db import migrate
from factories import ADMIN, ADMIN_KEY, book_servable


class Recorder:
    """A stand-in app: records whether it ran and how much body it read."""

    def __init__(self, delay: float = 0.0) -> None:
        self.calls = 0
        self.body = b""
        self.delay = delay
        self.state = None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        self.calls += 1
        if scope["method"] in ("POST", "PATCH"):
            message = await receive()
            self.body = message.get("body", b"")
        if self.delay:
            await asyncio.sleep(self.delay)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def call(
    guard: Guard, method: str, path: str, headers: dict[str, str], chunks: list[Any]
) -> tuple[int, dict[str, str], bytes]:
    """Drive the guard like a server; ``chunks`` are bytes, or a float to stall that long."""
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("198.51.100.7", 5000),
        "query_string": b"",
    }
    sent: list[dict] = []
    pending = list(chunks)

    async def receive() -> dict:
        while pending and isinstance(pending[0], float):
            await asyncio.sleep(pending.pop(0))
        if not pending:
            await asyncio.sleep(3600)
        chunk = pending.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(pending)}

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(guard(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, body


def guard_for(app: Any, **overrides: Any) -> Guard:
    values = {
        "max_body_bytes": 1000,
        "body_timeout_seconds": 0.3,
        "request_timeout_seconds": 0.5,
        **overrides,
    }
    return Guard(app, Settings(**values))


AUTH = {"authorization": "Bearer some-key"}


def test_a_declared_oversize_body_is_refused_before_reading():
    app = Recorder()
    status, headers, body = call(
        guard_for(app), "POST", "/v1/campaigns", {**AUTH, "content-length": str(10 * 2**30)}, [b"x"]
    )
    assert status == 413 and app.calls == 0
    assert b"payload-too-large" in body and headers["connection"] == "close"


def test_a_streamed_oversize_body_is_refused_once_past_the_limit():
    app = Recorder()
    status, _, _ = call(
        guard_for(app), "POST", "/v1/campaigns", AUTH, [b"x" * 600, b"y" * 600, b"z"]
    )
    assert status == 413 and app.calls == 0


def test_a_body_within_the_limit_reaches_the_app_intact():
    app = Recorder()
    status, _, _ = call(guard_for(app), "POST", "/v1/campaigns", AUTH, [b"a" * 500, b"b" * 500])
    assert status == 200 and app.body == b"a" * 500 + b"b" * 500


def test_a_stalled_body_is_a_408():
    app = Recorder()
    started = time.monotonic()
    status, _, body = call(guard_for(app), "POST", "/v1/campaigns", AUTH, [b"x", 5.0, b"y"])
    assert status == 408 and b"request-timeout" in body and app.calls == 0
    assert time.monotonic() - started < 2


def test_no_key_no_body_read():
    app = Recorder()
    status, _, body = call(guard_for(app), "POST", "/v1/campaigns", {}, [b"x" * 100])
    assert status == 401 and b"missing-api-key" in body and app.calls == 0


def test_past_the_deadline_management_answers_503_and_tracking_is_not_cut():
    slow = Recorder(delay=2.0)
    started = time.monotonic()
    status, headers, body = call(guard_for(slow), "GET", "/v1/campaigns", AUTH, [])
    assert status == 503 and b"database-unavailable" in body and headers["retry-after"] == "1"
    assert time.monotonic() - started < 1.5
    # the event log's own wait is the tracking bound, not the management deadline
    status, _, _ = call(guard_for(Recorder(delay=0.7)), "GET", "/t/impression", {}, [])
    assert status == 200
    # an ad inserter's batch of pixels is bounded the same way
    batch = call(guard_for(Recorder(delay=0.7)), "POST", "/v1/tracking/batch", AUTH, [b"{}"])
    assert batch[0] == 200


def test_rate_limits_answer_429_with_retry_after():
    app = Recorder()
    guard = guard_for(
        app,
        rate_limit_per_key=1.0,
        rate_limit_burst_per_key=3,
        rate_limit_tracking_per_ip=1.0,
        rate_limit_burst_tracking_per_ip=2,
    )
    statuses = [call(guard, "GET", "/v1/campaigns", AUTH, [])[0] for _ in range(5)]
    assert statuses == [200, 200, 200, 429, 429]
    # another key has its own bucket
    assert call(guard, "GET", "/v1/campaigns", {"authorization": "Bearer other"}, [])[0] == 200
    tracking = [call(guard, "GET", "/t/impression", {}, []) for _ in range(3)]
    assert [status for status, _, _ in tracking] == [200, 200, 429]
    assert int(tracking[-1][1]["retry-after"]) >= 1


def test_token_buckets_refill_at_the_rate_and_stay_bounded():
    now = [0.0]
    buckets = TokenBuckets(rate=2.0, burst=4, max_keys=100, clock=lambda: now[0])
    assert [buckets.allow("a") for _ in range(4)] == [0.0] * 4
    assert buckets.allow("a") == pytest.approx(0.5)
    now[0] += 1.0  # two tokens back
    assert [buckets.allow("a") == 0.0 for _ in range(3)] == [True, True, False]
    for n in range(1000):  # a flood of distinct keys cannot grow the table without bound
        buckets.allow(f"k{n}")
    assert len(buckets._buckets) <= 101


# --- over a real socket -----------------------------------------------------------------


@pytest.fixture
def live_server(tmp_path: Path) -> Any:
    database = f"sqlite:///{tmp_path / 'live.db'}"
    migrate(database)
    settings = Settings(
        var_dir=tmp_path / "var",
        database_url=database,
        admin_key=ADMIN_KEY,
        log_json=False,
        log_level="ERROR",
        body_timeout_seconds=0.5,
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, log_level="error", lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive()
        time.sleep(0.05)
    yield port
    server.should_exit = True
    thread.join(10)


def raw(port: int, request: bytes, *, then: bytes = b"", wait: float = 0.0) -> tuple[bytes, float]:
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        connection.sendall(request)
        if wait:
            time.sleep(wait)
        if then:
            connection.sendall(then)
        answer = connection.recv(65536)
    return answer, time.monotonic() - started


@pytest.mark.slow
def test_a_10_gib_announcement_is_refused_at_once_over_a_socket(live_server):
    head = (
        b"POST /v1/advertisers HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer nope\r\n"
        b"Content-Type: application/json\r\nContent-Length: 10737418240\r\n\r\n{"
    )
    answer, elapsed = raw(live_server, head)
    assert answer.startswith(b"HTTP/1.1 413") and elapsed < 2, answer[:200]
    anonymous = b"POST /v1/advertisers HTTP/1.1\r\nHost: x\r\nContent-Length: 300000000\r\n\r\n"
    answer, _ = raw(live_server, anonymous)
    assert answer.startswith((b"HTTP/1.1 401", b"HTTP/1.1 413")), answer[:200]
    stalled = (
        b"POST /v1/advertisers HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + ADMIN_KEY.encode()
        + b"\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
    )
    answer, elapsed = raw(live_server, stalled)
    assert answer.startswith(b"HTTP/1.1 408") and elapsed < 3, answer[:200]


def test_limits_hold_through_the_app(client):
    book_servable(client)
    huge = client.post(
        "/v1/advertisers",
        content=b"{" + b" " * 2_000_000 + b"}",
        headers={**ADMIN, "Content-Type": "application/json"},
    )
    assert_problem(huge, 413, "payload-too-large")
    assert_problem(client.post("/v1/advertisers", json={"name": "x"}), 401, "missing-api-key")
    assert client.get("/v1/campaigns?limit=501", headers=ADMIN).status_code == 422
