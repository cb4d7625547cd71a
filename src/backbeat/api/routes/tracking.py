"""``GET /t/{event}``: impression, quartile, complete, click and error pixels."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from backbeat.api.deps import ServicesDep
from backbeat.api.routes.serving import client_identity

router = APIRouter(tags=["tracking"])


@router.get("/t/{event}", status_code=204, response_class=Response)
async def track(event: str, request: Request, services: ServicesDep) -> Response:
    """Answer 204 once the event is durably in the event log; forged or expired URLs get 403/410."""
    ip, user_agent = client_identity(request, None, None)
    await services.tracker.track(event, request.query_params, ip=ip, user_agent=user_agent)
    return Response(status_code=204)
