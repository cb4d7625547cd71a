"""Every operation in the OpenAPI document, called by one advertiser's key against another
advertiser's objects, reaches nothing; every publisher-only action is refused (issue 9)."""

from __future__ import annotations

import re
from typing import Any

from factories import (
    ADMIN,
    advertiser_key,
    book_servable,
    create_slot,
)

# Operations anyone may call: they hold no advertiser's objects.
PUBLIC = {
    ("get", "/v1/slots"),
    ("get", "/v1/slots/{object_id}"),
    ("post", "/v1/decisions"),
}
# Publisher-only actions: an advertiser key gets 403 whatever the target.
PUBLISHER_ONLY = re.compile(
    r"^(post /v1/advertisers|patch /v1/advertisers/\{object_id\}|post /v1/advertisers/\{object_id\}/\w+"
    r"|post /v1/slots.*|patch /v1/slots/.*|post /v1/advertisers/\{advertiser_id\}/keys"
    r"|post /v1/api-keys.*|post /v1/reports/delivery/run)$"
)


def _victim(client: Any) -> dict[str, Any]:
    booked = book_servable(client)
    minted = client.post(f"/v1/advertisers/{booked['advertiser']['id']}/keys", headers=ADMIN)
    booked["key_id"] = minted.json()["id"]
    return booked


def _target_ids(victim: dict[str, Any], slot: dict[str, Any]) -> dict[str, int]:
    return {
        "advertisers": victim["advertiser"]["id"],
        "campaigns": victim["campaign"]["id"],
        "line-items": victim["line_item"]["id"],
        "creatives": victim["creative"]["id"],
        "slots": slot["id"],
        "api-keys": victim["key_id"],
    }


def _body(method: str, path: str, victim: dict[str, Any]) -> dict[str, Any] | None:
    """A valid body aimed at the victim (its objects as parents), so only roles can refuse it."""
    parents = {
        "/v1/campaigns": {
            "advertiser_id": victim["advertiser"]["id"],
            "start_at": "2026-01-01T00:00:00Z",
            "end_at": "2030-01-01T00:00:00Z",
            "total_budget": "10",
        },
        "/v1/line-items": {
            "campaign_id": victim["campaign"]["id"],
            "tier": "non_guaranteed",
            "cpm": "10",
        },
        "/v1/creatives": {
            "line_item_id": victim["line_item"]["id"],
            "media_url": "https://cdn.example.com/a.mp3",
            "duration_ms": 30000,
        },
        "/v1/slots": {"surface": "podcast", "position": "pre_roll"},
        "/v1/api-keys": {"role": "ssai"},
    }
    if method == "patch":
        return {"name": "Taken over"}
    if method != "post" or path.endswith(
        ("/pause", "/activate", "/archive", "/revoke", "/run", "/keys")
    ):
        return None
    if path == "/v1/api-keys":
        return parents[path]
    return {"name": "Taken over", **parents.get(path, {})}


def _secrets(victim: dict[str, Any]) -> list[str]:
    return [
        victim["advertiser"]["name"],
        victim["campaign"]["name"],
        victim["line_item"]["name"],
        victim["creative"]["name"],
    ]


def _snapshot(client: Any, victim: dict[str, Any]) -> dict[str, Any]:
    return {
        kind: client.get(f"/v1/{path}/{victim[kind]['id']}", headers=ADMIN).json()
        for kind, path in [
            ("advertiser", "advertisers"),
            ("campaign", "campaigns"),
            ("line_item", "line-items"),
            ("creative", "creatives"),
        ]
    }


def test_every_operation_refuses_another_advertisers_objects(client):
    attacker = book_servable(client)
    victim = _victim(client)
    slot = create_slot(client)
    key = advertiser_key(client, attacker["advertiser"]["id"])
    ids = _target_ids(victim, slot)
    before = _snapshot(client, victim)
    document = client.get("/openapi.json").json()
    called: list[str] = []
    uncovered: list[str] = []
    for path, item in document["paths"].items():
        if not path.startswith("/v1/"):
            continue
        for method in item:
            operation = f"{method} {path}"
            resource = path.split("/")[2]
            concrete = path
            for name in re.findall(r"\{(\w+)\}", path):
                target = ids.get("advertisers" if name == "advertiser_id" else resource)
                if target is None:
                    uncovered.append(operation)
                    break
                concrete = concrete.replace(f"{{{name}}}", str(target))
            else:
                query = {
                    "campaign_id": victim["campaign"]["id"],
                    "from": "2026-01-01",
                    "to": "2030-01-01",
                }
                params = query if "reports" in path and method == "get" else None
                response = client.request(
                    method.upper(),
                    concrete,
                    headers=key,
                    params=params,
                    json=_body(method, path, victim),
                )
                called.append(operation)
                assert response.status_code < 500, (operation, response.text)
                if (method, path) in PUBLIC:
                    continue
                if PUBLISHER_ONLY.match(operation):
                    assert response.status_code == 403, (
                        operation,
                        response.status_code,
                        response.text,
                    )
                    continue
                if method == "get" and "{" not in path and "reports" not in path:
                    # lists: only the caller's own objects
                    assert response.status_code in (200, 422), (operation, response.text)
                else:
                    assert response.status_code in (403, 404, 422), (
                        operation,
                        response.status_code,
                        response.text,
                    )
                for secret in _secrets(victim):
                    assert secret not in response.text, (operation, secret)
    # every catalog, key and report operation was exercised
    assert len(called) >= 40, called
    assert not [op for op in uncovered if op.split("/")[2] in ids], uncovered
    assert _snapshot(client, victim) == before
