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


def problem(
    status: int, title: str, reason: str, detail: str, instance: str, **extra: Any
) -> JSONResponse:
    body = {
        "type": PROBLEM_TYPE_BASE + reason,
        "title": title,
        "status": status,
        "detail": detail,
        "instance": instance,
        "reason": reason,
        **extra,
    }
    return JSONResponse(body, status_code=status, media_type="application/problem+json")


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
        extra = {
            key: value
            for key, value in error.context.items()
            if isinstance(value, str | int | None)
        }
        return problem(
            error.status, error.title, error.reason, error.detail, request.url.path, **extra
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, error: RequestValidationError) -> JSONResponse:
        errors = _jsonable_errors(list(error.errors()))
        first = errors[0] if errors else {"type": "invalid_input", "msg": "invalid input"}
        reason = str(first["type"]).replace("_", "-")
        where = ".".join(first.get("loc", [])[1:]) or "request"
        return problem(
            422,
            "Invalid input",
            reason,
            f"{where}: {first['msg']}",
            request.url.path,
            errors=errors,
        )

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
