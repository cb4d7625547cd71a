"""Plain functions that book objects through the real API and return their JSON."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi.testclient import TestClient

ADMIN_KEY = "test-admin-key-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


def _created(response: Any) -> dict[str, Any]:
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def create_advertiser(client: TestClient, **fields: Any) -> dict[str, Any]:
    body = {"name": f"Advertiser {uuid.uuid4().hex[:8]}", **fields}
    return _created(client.post("/v1/advertisers", json=body, headers=ADMIN))


def advertiser_key(client: TestClient, advertiser_id: int) -> dict[str, str]:
    response = client.post(f"/v1/advertisers/{advertiser_id}/keys", headers=ADMIN)
    return {"Authorization": f"Bearer {_created(response)['key']}"}


def create_campaign(
    client: TestClient, advertiser_id: int, headers: dict[str, str] = ADMIN, **fields: Any
) -> dict[str, Any]:
    body = {
        "advertiser_id": advertiser_id,
        "name": f"Campaign {uuid.uuid4().hex[:8]}",
        "start_at": "2026-01-01T00:00:00Z",
        "end_at": "2030-01-01T00:00:00Z",
        "total_budget": "10000",
        "currency": "USD",
        **fields,
    }
    return _created(client.post("/v1/campaigns", json=body, headers=headers))


def create_line_item(
    client: TestClient, campaign_id: int, headers: dict[str, str] = ADMIN, **fields: Any
) -> dict[str, Any]:
    body = {
        "campaign_id": campaign_id,
        "name": f"Line item {uuid.uuid4().hex[:8]}",
        "tier": "non_guaranteed",
        "cpm": "10.00",
        "pacing": "asap",
        **fields,
    }
    return _created(client.post("/v1/line-items", json=body, headers=headers))


def create_creative(
    client: TestClient, line_item_id: int, headers: dict[str, str] = ADMIN, **fields: Any
) -> dict[str, Any]:
    body = {
        "line_item_id": line_item_id,
        "name": f"Spot {uuid.uuid4().hex[:8]}",
        "media_url": "https://cdn.example.com/ads/spot.mp3",
        "mime_type": "audio/mpeg",
        "duration_ms": 30_000,
        "bitrate_kbps": 128,
        "click_url": "https://advertiser.example.com/landing",
        **fields,
    }
    return _created(client.post("/v1/creatives", json=body, headers=headers))


def create_slot(client: TestClient, **fields: Any) -> dict[str, Any]:
    body = {
        "name": f"Slot {uuid.uuid4().hex[:8]}",
        "surface": "music_free",
        "position": "interstitial",
        "reserve_cpm": "1.00",
        "currency": "USD",
        **fields,
    }
    return _created(client.post("/v1/slots", json=body, headers=ADMIN))


def book_servable(
    client: TestClient,
    *,
    line_item: dict[str, Any] | None = None,
    slot: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An advertiser, campaign, line item with one creative, and a slot: ready to serve."""
    advertiser = create_advertiser(client)
    campaign = create_campaign(client, advertiser["id"])
    item = create_line_item(client, campaign["id"], **(line_item or {}))
    creative = create_creative(client, item["id"])
    booked_slot = create_slot(client, **(slot or {}))
    client.app.state.services.ad_server.refresh()  # type: ignore[attr-defined]
    return {
        "advertiser": advertiser,
        "campaign": campaign,
        "line_item": item,
        "creative": creative,
        "slot": booked_slot,
    }
