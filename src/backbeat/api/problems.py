"""RFC 9457 problem responses: every error has a machine-readable ``reason``."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from backbeat.errors import BackbeatError
from backbeat.observability import log

PROBLEM_TYPE_BASE = "https://backbeat.invalid/problems/"


PROBLEM_MEDIA_TYPE = "application/problem+json"


def problem_body(
    status: int, title: str, reason: str, detail: str, instance: str, **extra: Any
) -> dict[str, Any]:
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
    status: int, title: str, reason: str, detail: str, instance: str, **extra: Any
) -> JSONResponse:
    body = problem_body(status, title, reason, detail, instance, **extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE)


def error_problem(error: BackbeatError, instance: str) -> dict[str, Any]:
    extra = {
        key: value for key, value in error.context.items() if isinstance(value, str | int | None)
    }
    return problem_body(error.status, error.title, error.reason, error.detail, instance, **extra)


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


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(BackbeatError)
    async def _backbeat(request: Request, error: BackbeatError) -> JSONResponse:
        return JSONResponse(
            error_problem(error, request.url.path),
            status_code=error.status,
            media_type=PROBLEM_MEDIA_TYPE,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, error: RequestValidationError) -> JSONResponse:
        body = validation_problem(list(error.errors()), request.url.path)
        return JSONResponse(body, status_code=422, media_type=PROBLEM_MEDIA_TYPE)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, error: StarletteHTTPException) -> JSONResponse:
        reasons = {404: "not-found", 405: "method-not-allowed"}
        reason = reasons.get(error.status_code, f"http-{error.status_code}")
        return problem(
            error.status_code, str(error.detail), reason, str(error.detail), request.url.path
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
