"""Liveness and Prometheus metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from backbeat.api.deps import ServicesDep
from backbeat.observability import render_metrics

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz(services: ServicesDep) -> dict[str, Any]:
    snapshot = services.ad_server.snapshot
    return {
        "status": "ok",
        "catalog_version": snapshot.version,
        "servable_line_items": len(snapshot.line_items),
    }


@router.get("/metrics")
async def metrics() -> Response:
    return Response(render_metrics(), media_type="text/plain; version=0.0.4; charset=utf-8")
