"""Plain ASGI middleware: request metrics, and the guard (ids, limits, deadline) in front."""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any

from backbeat.api.problems import PROBLEM_MEDIA_TYPE, error_headers, error_problem
from backbeat.api.ratelimit import TokenBuckets, retry_after_seconds
from backbeat.catalog.auth import bearer_of, hash_key
from backbeat.config import Settings
from backbeat.errors import (
    BackbeatError,
    DatabaseUnavailable,
    PayloadTooLarge,
    RequestTimeout,
    TooManyRequests,
    Unauthenticated,
)
from backbeat.observability import (
    HTTP_LATENCY,
    HTTP_REQUESTS,
    RATE_LIMITED,
    REQUEST_ID,
    REQUEST_ID_HEADER,
    REQUESTS_REFUSED,
    log,
    new_request_id,
)


class MetricsMiddleware:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_with_status(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            HTTP_LATENCY.labels(template).observe(time.perf_counter() - started)
            HTTP_REQUESTS.labels(template, scope["method"], str(status)).inc()


# --- the guard in front of everything ------------------------------------------------

BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Management resources that always need a key: a request without one is refused before its
# body is read, so an anonymous caller cannot make the server buffer anything.
AUTHENTICATED_PREFIXES = (
    "/v1/advertisers",
    "/v1/campaigns",
    "/v1/line-items",
    "/v1/creatives",
    "/v1/slots",
    "/v1/api-keys",
    "/v1/reports",
    "/v1/tracking",
)
# Long on purpose (a recount of the whole event log, bulk booking and forecasts, budget
# optimisation), or bounded like a pixel by the event log's fsync (an ad inserter's tracking
# batch, which asks the database only to word a refused key): exempt from the deadline.
UNBOUNDED_SUFFIXES = ("/run", "/bulk")
UNBOUNDED_PREFIXES = ("/v1/budget-allocations", "/v1/tracking/")
_REQUEST_ID = re.compile(rb"[A-Za-z0-9._\-]{1,64}")


class Guard:
    """Outermost ASGI layer: request ids, rate limits, body limits and the request deadline.

    - every request gets an id (a sane incoming ``X-Request-ID`` or a new one): in its log
      lines, in any problem body and in the ``X-Request-ID`` response header;
    - tracking hits (``/t/…``) are rate-limited per client address (an ad inserter's
      ``X-Device-IP`` when its key is trusted), management calls (``/v1/…``) per API key
      (per address without one): 429 with ``Retry-After``;
    - a body is refused (413) from ``Content-Length`` before reading, or while streaming
      once it passes the limit; it must arrive within ``body_timeout_seconds`` (408);
    - a management request still unanswered after ``request_timeout_seconds`` (a frozen
      database) is answered 503 ``database-unavailable`` while its thread finishes alone.
    """

    def __init__(self, app: Any, settings: Settings) -> None:
        self.app = app
        self.max_body = settings.max_body_bytes
        self.body_timeout = settings.body_timeout_seconds
        self.deadline = settings.request_timeout_seconds
        self.per_key = TokenBuckets(settings.rate_limit_per_key, settings.rate_limit_burst_per_key)
        self.per_ip = TokenBuckets(
            settings.rate_limit_tracking_per_ip, settings.rate_limit_burst_tracking_per_ip
        )

    @property
    def state(self) -> Any:
        """The wrapped app's state (its services), so callers can treat this as the app."""
        return self.app.state

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _incoming_request_id(scope) or new_request_id()
        token = REQUEST_ID.set(request_id)
        header = (b"x-request-id", request_id.encode())
        if (
            scope["method"] in ("GET", "HEAD")
            and getattr(self.app, "adds_request_id", False)
            and _is_hot(scope["path"])
        ):
            # The hot paths add the header to their own answer: no wrapped ``send`` per pixel.
            scope[REQUEST_ID_HEADER] = header
            try:
                await self._handle(scope, receive, send)
            finally:
                REQUEST_ID.reset(token)
            return

        async def send_with_id(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        try:
            await self._handle(scope, receive, send_with_id)
        finally:
            REQUEST_ID.reset(token)

    async def _handle(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path: str = scope["path"]
        if scope["method"] not in ("GET", "HEAD") and _is_hot(path):
            await _refuse(scope, send, _MethodNotAllowed("use GET", reason="method-not-allowed"))
            return
        if path.startswith("/t/"):
            if self.per_ip.enabled:
                wait = self.per_ip.allow(self._tracking_address(scope))
                if wait:
                    await self._rate_limited(scope, send, wait, "tracking-ip")
                    return
            await self.app(scope, receive, send)
            return
        if not path.startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        authorization = _header(scope, b"authorization")
        key = bearer_of(authorization.decode("latin-1")) if authorization else None
        if self.per_key.enabled:
            caller = "k:" + hash_key(key)[:32] if key else "ip:" + _peer(scope)
            wait = self.per_key.allow(caller)
            if wait:
                await self._rate_limited(scope, send, wait, "api-key")
                return
        if scope["method"] in BODY_METHODS:
            if key is None and path.startswith(AUTHENTICATED_PREFIXES):
                await _refuse(
                    scope,
                    send,
                    Unauthenticated("send `Authorization: Bearer <key>`", reason="missing-api-key"),
                )
                return
            try:
                body = await self._read_body(scope, receive)
            except (PayloadTooLarge, RequestTimeout) as error:
                REQUESTS_REFUSED.labels(error.reason).inc()
                await _refuse(scope, send, error, close=True)
                return
            if body is None:
                return  # the client went away
            receive = _replay(body, receive)
        if path.endswith(UNBOUNDED_SUFFIXES) or path.startswith(UNBOUNDED_PREFIXES):
            await self.app(scope, receive, send)
            return
        await self._within_deadline(scope, receive, send)

    def _tracking_address(self, scope: dict[str, Any]) -> str:
        services = getattr(self.app.state, "services", None)
        if services is not None and _header(scope, b"authorization"):
            headers = {"authorization": _header(scope, b"authorization").decode("latin-1")}
            device = _header(scope, b"x-device-ip")
            if device and services.inserters.trusts(headers):
                return device.decode("latin-1")[:64]
        return _peer(scope)

    async def _rate_limited(
        self, scope: dict[str, Any], send: Any, wait: float, limit: str
    ) -> None:
        RATE_LIMITED.labels(limit).inc()
        seconds = retry_after_seconds(wait)
        error = TooManyRequests(
            f"rate limit exceeded; retry in {seconds} s", retry_after=seconds, limit=limit
        )
        await _refuse(scope, send, error)

    async def _read_body(self, scope: dict[str, Any], receive: Any) -> bytes | None:
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            raise PayloadTooLarge(
                f"the body may have at most {self.max_body} bytes",
                limit=self.max_body,
                size=int(declared),
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.body_timeout
        chunks: list[bytes] = []
        size = 0
        while True:
            remaining = deadline - loop.time()
            try:
                if remaining <= 0:
                    raise TimeoutError
                message = await asyncio.wait_for(receive(), remaining)
            except TimeoutError:
                raise RequestTimeout(
                    f"the body did not arrive within {self.body_timeout:g} s"
                ) from None
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise PayloadTooLarge(
                    f"the body may have at most {self.max_body} bytes", limit=self.max_body
                )
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _within_deadline(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        started = False
        abandoned = False

        async def guarded_send(message: dict[str, Any]) -> None:
            nonlocal started
            if abandoned:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        task = asyncio.ensure_future(self.app(scope, receive, guarded_send))
        done, _ = await asyncio.wait({task}, timeout=self.deadline)
        if task in done:
            task.result()
            return
        abandoned = True
        task.add_done_callback(_quietly)
        log.warning("request past its deadline", path=scope["path"], deadline_s=self.deadline)
        REQUESTS_REFUSED.labels("deadline").inc()
        if not started:
            error = DatabaseUnavailable(
                f"no answer within {self.deadline:g} s; the database may be unavailable",
                retry_after=1,
            )
            await _refuse(scope, send, error)


class _MethodNotAllowed(BackbeatError):
    status = 405
    title = "Method not allowed"
    reason = "method-not-allowed"


def _is_hot(path: str) -> bool:
    return path == "/vast" or (path.startswith("/t/") and "/" not in path[3:])


def _quietly(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("abandoned request failed", error_type=type(task.exception()).__name__)


def _replay(body: bytes, receive: Any) -> Any:
    delivered = False

    async def replay() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _header(scope: dict[str, Any], name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value  # type: ignore[no-any-return]
    return None


def _incoming_request_id(scope: dict[str, Any]) -> str | None:
    value = _header(scope, b"x-request-id")
    return value.decode() if value and _REQUEST_ID.fullmatch(value) else None


def _peer(scope: dict[str, Any]) -> str:
    client = scope.get("client")
    return str(client[0]) if client else ""


async def _refuse(
    scope: dict[str, Any], send: Any, error: BackbeatError, *, close: bool = False
) -> None:
    body = json.dumps(error_problem(error, scope["path"])).encode()
    headers = [
        (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
        (b"content-length", str(len(body)).encode()),
        *((name.lower().encode(), value.encode()) for name, value in error_headers(error).items()),
    ]
    if close:
        headers.append((b"connection", b"close"))
    if REQUEST_ID_HEADER in scope:  # a hot path's unwrapped ``send``
        headers.append(scope[REQUEST_ID_HEADER])
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
    HTTP_REQUESTS.labels("guard", scope["method"], str(error.status)).inc()
