"""``GET /vast`` and ``GET /t/{event}`` as plain ASGI handlers in front of the FastAPI app.

These two are the ad server's and the tracker's hot paths: FastAPI's per-request
dependency and parameter machinery costs more CPU than the decision itself, so they
parse with one Pydantic model, answer directly, and leave every other path to FastAPI.
Errors are the same RFC 9457 problems as everywhere else; OpenAPI documents both.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

import orjson
from fastapi import FastAPI
from pydantic import ValidationError

from backbeat.api.problems import (
    PROBLEM_MEDIA_TYPE,
    error_problem,
    problem_body,
    validation_problem,
)
from backbeat.api.routes.serving import VastQuery, build_request, client_identity
from backbeat.errors import BackbeatError
from backbeat.observability import HTTP_LATENCY, HTTP_REQUESTS, REQUEST_ID_HEADER, TALLY, log
from backbeat.serving.request import PodRequest

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

VAST_PATH = "/vast"
TRACKING_PREFIX = "/t/"
VAST_HEADERS = [
    (b"content-type", b"application/xml; charset=utf-8"),
    (b"cache-control", b"no-store"),
]
PROBLEM_HEADERS = [(b"content-type", PROBLEM_MEDIA_TYPE.encode())]
TRACKING_ROUTE = "/t/{event}"
_latency = {route: HTTP_LATENCY.labels(route) for route in (VAST_PATH, TRACKING_ROUTE)}
_requests: dict[tuple[str, str, int], Any] = {}  # labelled counters, resolved once each
# The only request headers the hot paths read (device headers count only with an SSAI key).
_READ_HEADERS = frozenset({b"user-agent", b"authorization", b"x-device-ip", b"x-device-user-agent"})


def _headers(scope: Scope) -> dict[str, str]:
    """The headers the hot paths read, decoded; the rest are never looked at."""
    return {
        name.decode("latin-1"): value.decode("latin-1")
        for name, value in scope["headers"]
        if name in _READ_HEADERS
    }


def _counter(route: str, method: str, status: int) -> Any:
    counter = _requests.get((route, method, status))
    if counter is None:  # resolving labels costs more than counting
        counter = _requests[route, method, status] = HTTP_REQUESTS.labels(
            route, method, str(status)
        )
    return counter


def query_params(raw: bytes) -> dict[str, str]:
    """``dict(parse_qsl(...))`` (last value wins, blanks kept); a split when nothing is escaped.

    Players and our own tracking URLs send plain ``key=value`` pairs: the generic parser
    costs more than a whole decision.
    """
    text = raw.decode("latin-1")
    if "%" in text or "+" in text:
        return dict(parse_qsl(text, keep_blank_values=True))
    params: dict[str, str] = {}
    for pair in text.split("&"):
        if pair:
            key, _, value = pair.partition("=")
            params[key] = value
    return params


# ``GET /vast`` fields the fast path takes as plain strings, with ``VastQuery``'s length limits.
_PLAIN_LIMITS = (
    ("listener", 4096),
    ("country", 2),
    ("region", 6),
    ("device", 64),
    ("platform", 64),
    ("genre", 64),
    ("show", 64),
    ("episode", 64),
    ("connection", 64),
    ("segments", 4096),
)
# Fields that need real validation (numbers, time zones): those requests take the model.
_MODEL_ONLY = frozenset(
    {"tz", "pod_max_ads", "pod_max_duration", "min_ad_duration", "max_ad_duration"}
)
_MAX_SLOT = 2**31 - 1
SINGLE_AD = PodRequest()


def plain_vast_fields(params: dict[str, str]) -> dict[str, Any] | None:
    """``VastQuery.model_validate(params).fields()`` for the common request, or None.

    A player's request is a slot number and a few short strings: this checks exactly what
    the model would (digits in range, length limits) without its cost. Anything else —
    a time zone, a pod, an over-long or non-numeric value — returns None, and the model
    validates it (and words the error), so both paths accept and reject the same queries.
    """
    slot = params.get("slot")
    if (
        slot is None
        or not 0 < len(slot) <= 10
        or not slot.isascii()
        or not slot.isdigit()
        or not _MODEL_ONLY.isdisjoint(params)
    ):
        return None
    number = int(slot)
    if not 1 <= number <= _MAX_SLOT:
        return None
    fields: dict[str, Any] = {"slot": number}
    for key, limit in _PLAIN_LIMITS:
        value = params.get(key)
        if value is not None and len(value) > limit:
            return None
        fields[key] = value
    fields["segments"] = (fields["segments"] or "").split(",")
    return fields


def _peer(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else ""


class HotPaths:
    """Routes the two hot paths itself; everything else goes to the wrapped FastAPI app."""

    # The guard in front may leave ``X-Request-ID`` to us (``REQUEST_ID_HEADER`` in the scope).
    adds_request_id = True

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    @property
    def state(self) -> Any:
        """The FastAPI app's state (its services), so callers can treat this as the app."""
        return self.app.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "HEAD" and self._is_hot(scope["path"]):
            # Link checkers and prefetchers probe with HEAD: answer, but decide and log nothing.
            headers = VAST_HEADERS if scope["path"] == VAST_PATH else []
            if REQUEST_ID_HEADER in scope:
                headers = [*headers, scope[REQUEST_ID_HEADER]]
            status = 200 if scope["path"] == VAST_PATH else 204
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        if scope["type"] == "http" and scope["method"] == "GET":
            path = scope["path"]
            if path == VAST_PATH:
                await self._answer(scope, send, VAST_PATH, self._vast)
                return
            if path.startswith(TRACKING_PREFIX) and "/" not in path[len(TRACKING_PREFIX) :]:
                await self._answer(scope, send, TRACKING_ROUTE, self._track)
                return
        await self.app(scope, receive, send)  # type: ignore[arg-type]

    @staticmethod
    def _is_hot(path: str) -> bool:
        return path == VAST_PATH or (
            path.startswith(TRACKING_PREFIX) and "/" not in path[len(TRACKING_PREFIX) :]
        )

    async def _answer(
        self,
        scope: Scope,
        send: Send,
        route: str,
        handler: Callable[[Scope], Awaitable[tuple[int, list[tuple[bytes, bytes]], bytes]]],
    ) -> None:
        started = time.perf_counter()
        try:
            status, headers, body = await handler(scope)
        except BackbeatError as error:
            status, headers, body = (
                error.status,
                PROBLEM_HEADERS,
                orjson.dumps(error_problem(error, scope["path"])),
            )
        except ValidationError as error:
            problem = validation_problem(list(error.errors()), scope["path"], skip_loc=0)
            status, headers, body = 422, PROBLEM_HEADERS, orjson.dumps(problem)
        except Exception:
            log.exception("unhandled error", path=scope["path"])
            problem = problem_body(
                500,
                "Internal error",
                "internal-error",
                "an unexpected error occurred",
                scope["path"],
            )
            status, headers, body = 500, PROBLEM_HEADERS, orjson.dumps(problem)
        request_id = scope.get(REQUEST_ID_HEADER)
        if body:  # a length, not chunked transfer encoding
            length = (b"content-length", b"%d" % len(body))
            headers = [*headers, length, request_id] if request_id else [*headers, length]
        elif request_id:
            headers = [*headers, request_id]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        TALLY.observe(_latency[route], time.perf_counter() - started)
        TALLY.count(_counter(route, scope["method"], status))

    def _params(self, scope: Scope) -> dict[str, str]:
        return query_params(scope["query_string"])

    async def _vast(self, scope: Scope) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        params = self._params(scope)
        fields = plain_vast_fields(params)
        if fields is None:
            query = VastQuery.model_validate(params)
            fields, pod = query.fields(), query.pod()
        else:
            pod = SINGLE_AD
        services = self.app.state.services
        headers = _headers(scope)
        trusted = services.inserters.trusts(headers)  # device headers only from an SSAI key
        ad_request = build_request(headers, _peer(scope), fields, trusted=trusted)
        decisions = await services.ad_server.decide_async(ad_request, pod)
        return 200, VAST_HEADERS, services.ad_server.vast(decisions)

    async def _track(self, scope: Scope) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        event = scope["path"][len(TRACKING_PREFIX) :]
        headers = _headers(scope)
        peer = _peer(scope)
        trusted = self.app.state.services.inserters.trusts(headers)
        ip, agent = client_identity(headers, peer, trusted=trusted)  # device headers: SSAI only
        await self.app.state.services.tracker.track(
            event, self._params(scope), ip=ip[:64], user_agent=agent
        )
        return 204, [], b""


def document_hot_paths(app: FastAPI) -> None:
    """Add the two hand-routed paths to the OpenAPI document."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = generate()
        properties = VastQuery.model_json_schema()["properties"]
        required = set(VastQuery.model_json_schema().get("required", ()))
        problem = {
            "description": "Problem",
            "content": {PROBLEM_MEDIA_TYPE: {"schema": {"type": "object"}}},
        }
        schema["paths"][VAST_PATH] = {
            "get": {
                "tags": ["serving"],
                "summary": "Audio ads as VAST 4.2",
                "description": "A pod with `sequence` attributes when `pod_max_ads` > 1; an empty "
                '`<VAST version="4.2">` with an Error URI when nothing is eligible.',
                "operationId": "vast",
                "parameters": [
                    {"name": name, "in": "query", "required": name in required, "schema": spec}
                    for name, spec in properties.items()
                ],
                "responses": {
                    "200": {
                        "description": "VAST 4.2",
                        "content": {"application/xml": {"schema": {"type": "string"}}},
                    },
                    "400": {**problem, "description": "invalid-listener"},
                    "404": problem,
                    "422": problem,
                },
            }
        }
        schema["paths"]["/t/{event}"] = {
            "get": {
                "tags": ["tracking"],
                "summary": "Tracking pixel (signed URL from a VAST answer)",
                "operationId": "track",
                "parameters": [
                    {"name": "event", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {
                    "204": {"description": "Recorded durably"},
                    "403": problem,
                    "404": problem,
                    "410": problem,
                    "422": {**problem, "description": "malformed-tracking-url"},
                },
            }
        }
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
