"""RFC 9457 problem responses: every error has a machine-readable ``reason``."""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException

from backbeat.errors import BackbeatError, DatabaseUnavailable
from backbeat.observability import DATABASE_ERRORS, REQUEST_ID, log

PROBLEM_TYPE_BASE = "https://backbeat.invalid/problems/"


PROBLEM_MEDIA_TYPE = "application/problem+json"


def problem_body(
    status: int, title: str, reason: str, detail: str, instance: str, **extra: Any
) -> dict[str, Any]:
    """An RFC 9457 body; ``request_id`` matches the request's log lines and response header."""
    request_id = REQUEST_ID.get()
    if request_id is not None:
        extra.setdefault("request_id", request_id)
    return {
        "type": PROBLEM_TYPE_BASE + reason,
        "title": title,
        "status": status,
        "detail": detail,
        "instance": instance,
        "reason": reason,
        **extra,
    }


def problem(
    status: int,
    title: str,
    reason: str,
    detail: str,
    instance: str,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body = problem_body(status, title, reason, detail, instance, **extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


def error_problem(error: BackbeatError, instance: str) -> dict[str, Any]:
    """The problem body of a deliberate error: only its allow-listed context is shown."""
    extra = {
        key: value
        for key, value in error.context.items()
        if key in error.public_context and isinstance(value, str | int | None)
    }
    return problem_body(error.status, error.title, error.reason, error.detail, instance, **extra)


def error_headers(error: BackbeatError) -> dict[str, str]:
    """``Retry-After`` for 429 and 503 answers (seconds, as RFC 9110 allows)."""
    if error.status == 405:
        return {"Allow": "GET, HEAD"}  # the hand-routed hot paths (others use allowed_methods)
    retry_after = error.context.get("retry_after")
    if retry_after is None and error.status == 503:
        retry_after = 1
    return {} if retry_after is None else {"Retry-After": str(max(1, int(retry_after)))}


def database_error(error: Exception) -> DatabaseUnavailable:
    """A refused, timed-out or exhausted database as the 503 callers can retry."""
    kind = type(error).__name__
    DATABASE_ERRORS.labels(kind).inc()
    log.warning("database unavailable", error_type=kind, error=str(error).splitlines()[0][:200])
    return DatabaseUnavailable("the database is unavailable; retry shortly", retry_after=1)


# Faults of the database server or the pool, never of the request: DBAPI OperationalError
# (refused, terminated, statement timeout), InterfaceError (connection closed) and the pool's
# TimeoutError (all connections busy past ``pool_timeout``).
DATABASE_FAULTS: tuple[type[Exception], ...] = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.TimeoutError,
    sa_exc.DisconnectionError,
)


def validation_problem(
    errors: list[dict[str, Any]], instance: str, *, skip_loc: int = 1
) -> dict[str, Any]:
    """One 422 body for any Pydantic validation failure; ``reason`` is the first error's type."""
    listed = _jsonable_errors(errors)
    first = listed[0] if listed else {"type": "invalid_input", "msg": "invalid input", "loc": []}
    reason = str(first["type"]).replace("_", "-")
    where = ".".join(first.get("loc", [])[skip_loc:]) or "request"
    return problem_body(
        422, "Invalid input", reason, f"{where}: {first['msg']}", instance, errors=listed
    )


def _jsonable_errors(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "loc": [str(part) for part in error.get("loc", ())],
            "type": error.get("type"),
            "msg": error.get("msg"),
        }
        for error in errors
    ]


def allowed_methods(request: Request) -> str:
    """Every method the OpenAPI document offers on this path (Starlette names only the first
    route's, and FastAPI keeps included routers opaque)."""
    path = request.url.path
    methods: set[str] = set()
    paths = request.app.openapi().get("paths", {})
    # A literal path (``/v1/line-items/bulk``) is not an id of the templated one beside it.
    templates = {path: paths[path]} if path in paths else paths
    for template, item in templates.items():
        pattern = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, path):
            methods |= {method.upper() for method in item if method.isalpha()}
    if "GET" in methods:
        methods.add("HEAD")
    return ", ".join(sorted(methods))


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(BackbeatError)
    async def _backbeat(request: Request, error: BackbeatError) -> JSONResponse:
        return JSONResponse(
            error_problem(error, request.url.path),
            status_code=error.status,
            media_type=PROBLEM_MEDIA_TYPE,
            headers=error_headers(error),
        )

    async def _database(request: Request, error: Exception) -> JSONResponse:
        return await _backbeat(request, database_error(error))

    for fault in DATABASE_FAULTS:
        app.add_exception_handler(fault, _database)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, error: RequestValidationError) -> JSONResponse:
        body = validation_problem(list(error.errors()), request.url.path)
        return JSONResponse(body, status_code=422, media_type=PROBLEM_MEDIA_TYPE)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, error: StarletteHTTPException) -> JSONResponse:
        reasons = {404: "not-found", 405: "method-not-allowed"}
        reason = reasons.get(error.status_code, f"http-{error.status_code}")
        headers = dict(error.headers or {})
        if error.status_code == 405:
            headers["Allow"] = allowed_methods(request)
        return problem(
            error.status_code,
            str(error.detail),
            reason,
            str(error.detail),
            request.url.path,
            headers=headers,
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception("unhandled error", path=request.url.path, error_type=type(error).__name__)
        return problem(
            500,
            "Internal error",
            "internal-error",
            "an unexpected error occurred",
            request.url.path,
        )
