"""An honest OpenAPI document: every status an operation can answer, as problem+json.

FastAPI documents only a route's success and its parameter 422. Backbeat's guard and
handlers can also answer 401/403 (keys and roles), 404 (unknown or another advertiser's
object), 409/412 (conflicts, If-Match), 408/413 (slow or large bodies), 429 (rate limits)
and 503 (database or event log unavailable); this adds them from what each route depends
on, replaces the 422 schema with the problem shape the API really sends, and names the
signed query parameters of tracking URLs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute

from backbeat.api.deps import get_principal
from backbeat.api.middleware import AUTHENTICATED_PREFIXES
from backbeat.api.problems import PROBLEM_MEDIA_TYPE
from backbeat.signing import TRACKING_EVENTS

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem; `reason` is machine-readable",
    "required": ["type", "title", "status", "detail", "instance", "reason"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "reason": {"type": "string", "pattern": "^[a-z0-9]+(-[a-z0-9]+)*$"},
        "request_id": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "loc": {"type": "array", "items": {"type": "string"}},
                    "type": {"type": ["string", "null"]},
                    "msg": {"type": ["string", "null"]},
                },
            },
        },
    },
}
DESCRIPTIONS = {
    "400": "Malformed: a body that is not JSON, a listener id outside the safe alphabet",
    "401": "Missing, unknown or revoked API key",
    "403": "The key's role may not do this",
    "404": "Not found (another advertiser's object is not found either)",
    "405": "Method not allowed on this path (see `Allow`)",
    "408": "The request body did not arrive in time",
    "409": "Conflict: archived, duplicate or concurrently changed",
    "410": "Gone: the tracking URL has expired",
    "412": "If-Match does not match the current version",
    "413": "Request body too large (checked before reading it)",
    "422": "Invalid input",
    "429": "Rate limited; retry after `Retry-After` seconds",
    "503": "A dependency (database, event log) is unavailable; retry after `Retry-After`",
}
RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}}
TRACKING_PARAMETERS = {
    "d": "decision id",
    "li": "line item id",
    "c": "campaign id",
    "cr": "creative id",
    "s": "slot id",
    "p": "price (sealed)",
    "cur": "currency (ISO 4217)",
    "l": "listener id",
    "x": "expiry (Unix seconds)",
    "sig": "signature over the fields above",
}


def problem_response(status: str) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": DESCRIPTIONS.get(status, "Problem"),
        "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }
    if status in ("429", "503"):
        response["headers"] = RETRY_AFTER
    return response


def _api_routes(routes: list[Any]) -> Iterator[APIRoute]:
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from _api_routes(list(inner.routes))


def _depends_on(route: APIRoute, target: Callable[..., Any]) -> bool:
    pending = list(route.dependant.dependencies)
    while pending:
        dependency = pending.pop()
        if dependency.call is target:
            return True
        pending.extend(dependency.dependencies)
    return False


def statuses_for(path: str, method: str, *, authenticated: bool, has_body: bool) -> set[str]:
    """What an operation can answer besides its success, from its shape and its guard."""
    found = {"422"}
    if path.startswith("/v1/"):
        # per-key rate limit; deadline or database down; a parent, slot or campaign not found
        found |= {"404", "429", "503"}
    if authenticated or path.startswith(AUTHENTICATED_PREFIXES):
        found |= {"401", "403", "404"}
    if "{" in path:
        found.add("404")
    if has_body:
        found |= {"400", "408", "413"}
    if authenticated and method in ("post", "patch", "put", "delete"):
        found.add("409")
    if method == "patch":
        found |= {"409", "412"}
    return found


def document_problems(app: FastAPI) -> None:
    """Wrap ``app.openapi`` (after the hot paths are added) to complete every operation."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if getattr(app.state, "complete_openapi", None) is not None:
            return app.state.complete_openapi  # type: ignore[no-any-return]
        schema = generate()
        schema.setdefault("components", {}).setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
        authenticated = {
            (route.path, method.lower())
            for route in _api_routes(list(app.router.routes))
            if _depends_on(route, get_principal)
            for method in route.methods
        }
        for path, item in schema["paths"].items():
            for method, operation in item.items():
                if not isinstance(operation, dict) or "responses" not in operation:
                    continue
                statuses = statuses_for(
                    path,
                    method,
                    authenticated=(path, method) in authenticated,
                    has_body="requestBody" in operation,
                )
                if path == "/t/{event}":
                    statuses |= {"403", "404", "410", "429", "503"}
                    _document_tracking(operation)
                if path in ("/vast", "/t/{event}", "/v1/decisions"):
                    statuses.add("400")  # a listener id outside the safe alphabet
                if path == "/readyz":
                    statuses = {"503"}
                if path in ("/healthz", "/metrics"):
                    statuses = set()
                responses = operation["responses"]
                for status in statuses:
                    responses[status] = problem_response(status)
                for status, response in list(responses.items()):
                    if status[0] in "45" and "content" in response:
                        responses[status] = problem_response(status)
        schema["components"]["schemas"].pop("HTTPValidationError", None)
        schema["components"]["schemas"].pop("ValidationError", None)
        app.state.complete_openapi = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _document_tracking(operation: dict[str, Any]) -> None:
    parameters = operation.setdefault("parameters", [])
    named = {parameter["name"] for parameter in parameters}
    for parameter in parameters:
        if parameter["name"] == "event":
            parameter["schema"] = {"type": "string", "enum": list(TRACKING_EVENTS)}
    for name, description in TRACKING_PARAMETERS.items():
        if name not in named:
            parameters.append(
                {
                    "name": name,
                    "in": "query",
                    "required": True,
                    "description": description,
                    "schema": {"type": "string", "maxLength": 256},
                }
            )
