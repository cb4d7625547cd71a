"""Liveness (``/healthz``), readiness (``/readyz``) and Prometheus metrics."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from sqlalchemy import text

from backbeat.api.deps import Services, ServicesDep
from backbeat.api.problems import PROBLEM_MEDIA_TYPE, problem_body
from backbeat.observability import render_metrics

router = APIRouter(tags=["operations"])

READY_TIMEOUT_S = 1.0
# Probes run here, never on the request thread pool a sick database may have filled; a probe
# stuck on a frozen server is abandoned (its thread finishes when the server answers).
_probes = ThreadPoolExecutor(max_workers=4, thread_name_prefix="readyz")


@router.get("/healthz")
async def healthz(services: ServicesDep) -> dict[str, Any]:
    """Liveness: the process answers (it keeps serving from its snapshot whatever else fails)."""
    snapshot = services.ad_server.snapshot
    return {
        "status": "ok",
        "catalog_version": snapshot.version,
        "servable_line_items": len(snapshot.line_items),
    }


def _database(services: Services) -> None:
    with services.engine.connect() as connection:
        connection.execute(text("SELECT 1"))


def _redis(services: Services) -> None:
    ledger = services.ad_server.ledger
    up = getattr(ledger, "up", None)
    if up is not None and not (up() if callable(up) else up):
        raise ConnectionError("redis unreachable (serving on held leases)")


def _event_log(services: Services) -> None:
    writer = services.event_log
    thread = getattr(writer, "_thread", None)
    if isinstance(thread, threading.Thread) and not thread.is_alive():
        raise RuntimeError("event log writer stopped")
    directory = writer.directory
    if not directory.is_dir():
        raise FileNotFoundError("event log directory missing")
    stat = _statvfs(str(directory))
    if stat is not None and stat < 1 << 20:
        raise OSError("event log disk has less than 1 MiB free")


def _statvfs(path: str) -> int | None:
    try:
        result = os.statvfs(path)
    except OSError:
        return None
    return result.f_bavail * result.f_frsize


async def _probe(check: Callable[[Services], None], services: Services) -> dict[str, Any]:
    started = time.perf_counter()
    future = asyncio.get_running_loop().run_in_executor(_probes, check, services)
    try:
        await asyncio.wait_for(future, READY_TIMEOUT_S)
    except TimeoutError:
        status, error = "down", f"no answer within {READY_TIMEOUT_S:g} s"
    except Exception as failure:  # the probe's own fault is the answer
        status, error = "down", type(failure).__name__
    else:
        status, error = "up", None
    result: dict[str, Any] = {
        "status": status,
        "seconds": round(time.perf_counter() - started, 4),
    }
    if error is not None:
        result["error"] = error
    return result


@router.get(
    "/readyz",
    responses={503: {"description": "A dependency is down: do not route traffic here"}},
)
async def readyz(services: ServicesDep) -> JSONResponse:
    """Readiness: the database, Redis (when configured) and the event log all answer."""
    checks = {"database": _database, "event_log": _event_log}
    if services.settings.redis_url:
        checks["redis"] = _redis
    results = dict(
        zip(
            checks,
            await asyncio.gather(*(_probe(check, services) for check in checks.values())),
            strict=True,
        )
    )
    if all(result["status"] == "up" for result in results.values()):
        return JSONResponse({"status": "ready", "checks": results})
    # A problem like every other error answer (as documented), with the checks as a member.
    down = ", ".join(name for name, result in results.items() if result["status"] != "up")
    return JSONResponse(
        problem_body(503, "Not ready", "not-ready", f"down: {down}", "/readyz", checks=results),
        status_code=503,
        media_type=PROBLEM_MEDIA_TYPE,
    )


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {
            "description": "Prometheus text exposition format",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    },
)
async def metrics() -> Response:
    return Response(render_metrics(), media_type="text/plain; version=0.0.4; charset=utf-8")
