"""API keys: who may call, and an advertiser sees and changes only its own objects."""

from __future__ import annotations

from test_validation import assert_problem, catalog_state

from factories import (
    ADMIN,
    advertiser_key,
    create_advertiser,
    create_campaign,
    create_creative,
    create_line_item,
    create_slot,
)

RESOURCES = ("advertisers", "campaigns", "line-items", "creatives")
NOT_FOUND = {
    "advertisers": "advertiser-not-found",
    "campaigns": "campaign-not-found",
    "line-items": "line-item-not-found",
    "creatives": "creative-not-found",
}


def book(client) -> dict[str, dict]:
    advertiser = create_advertiser(client)
    campaign = create_campaign(client, advertiser["id"])
    line_item = create_line_item(client, campaign["id"])
    creative = create_creative(client, line_item["id"])
    return {
        "advertisers": advertiser,
        "campaigns": campaign,
        "line-items": line_item,
        "creatives": creative,
    }


def test_keys_authenticate_and_only_the_admin_manages_advertisers_slots_and_keys(client):
    advertiser = create_advertiser(client)
    key = advertiser_key(client, advertiser["id"])
    slot = create_slot(client)
    for headers, reason in [
        ({}, "missing-api-key"),
        ({"Authorization": "Bearer"}, "missing-api-key"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "missing-api-key"),
        ({"Authorization": "Bearer bb_not-a-real-key"}, "invalid-api-key"),
        ({"Authorization": ADMIN["Authorization"] + "x"}, "invalid-api-key"),
    ]:
        for method, url in [
            ("GET", "/v1/campaigns"),
            ("POST", "/v1/campaigns"),
            ("GET", "/v1/advertisers/1"),
        ]:
            assert_problem(
                client.request(method, url, headers=headers, json={}), 401, reason, (headers, url)
            )
    assert client.get("/v1/campaigns", headers=key).status_code == 200
    assert (
        client.get(
            "/v1/campaigns", headers={"Authorization": "bearer " + ADMIN["Authorization"][7:]}
        ).status_code
        == 200
    )

    before = catalog_state(client)
    for method, url, body in [
        ("POST", "/v1/advertisers", {"name": "Sneaky"}),
        ("PATCH", f"/v1/advertisers/{advertiser['id']}", {"name": "Renamed"}),
        ("POST", f"/v1/advertisers/{advertiser['id']}/pause", None),
        ("POST", "/v1/slots", {"name": "Mine", "surface": "podcast", "position": "pre_roll"}),
        ("PATCH", f"/v1/slots/{slot['id']}", {"reserve_cpm": "0"}),
        ("POST", f"/v1/slots/{slot['id']}/archive", None),
        ("POST", f"/v1/advertisers/{advertiser['id']}/keys", None),
        ("POST", "/v1/api-keys/1/revoke", None),
        ("POST", "/v1/reports/delivery/run", None),
    ]:
        response = client.request(method, url, headers=key, json=body)
        assert_problem(response, 403, "admin-only", (method, url))
    assert catalog_state(client) == before
    assert client.get(f"/v1/advertisers/{advertiser['id']}", headers=ADMIN).json()["version"] == 1

    # a revoked key stops working at once; the advertiser's other keys keep working
    response = client.post(f"/v1/advertisers/{advertiser['id']}/keys", headers=ADMIN)
    revoked = {
        "key_id": response.json()["id"],
        "headers": {"Authorization": f"Bearer {response.json()['key']}"},
    }
    assert response.json()["key"].startswith("bb_")
    assert client.get("/v1/campaigns", headers=revoked["headers"]).status_code == 200
    assert client.post(f"/v1/api-keys/{revoked['key_id']}/revoke", headers=ADMIN).status_code == 204
    assert client.post(f"/v1/api-keys/{revoked['key_id']}/revoke", headers=ADMIN).status_code == 204
    assert_problem(client.get("/v1/campaigns", headers=revoked["headers"]), 401, "invalid-api-key")
    assert client.get("/v1/campaigns", headers=key).status_code == 200
    assert_problem(
        client.post("/v1/api-keys/999999/revoke", headers=ADMIN), 404, "api-key-not-found"
    )
    assert_problem(client.post("/v1/advertisers/999999/keys", headers=ADMIN), 404, "not-found")

    # keys are stored hashed: the plain key appears nowhere in the database
    from sqlalchemy import select

    from backbeat.catalog.models import ApiKey

    plain = revoked["headers"]["Authorization"][7:]
    with client.app.state.services.sessions() as session:
        stored = session.execute(select(ApiKey.key_hash, ApiKey.prefix)).all()
    assert stored and all(
        plain not in row.key_hash and len(row.prefix) < len(plain) for row in stored
    )


def test_an_advertiser_sees_and_changes_only_its_own_objects(client):
    mine, theirs = book(client), book(client)
    key = advertiser_key(client, mine["advertisers"]["id"])
    slot = create_slot(client)

    for path in RESOURCES:
        listed = client.get(f"/v1/{path}", headers=key).json()
        assert [row["id"] for row in listed["data"]] == [mine[path]["id"]], path
        assert listed["count"] == 1
        # filtering by the other advertiser's parent does not reveal anything either
        other = client.get(f"/v1/{path}?advertiser_id={theirs['advertisers']['id']}", headers=key)
        if path != "advertisers":
            assert other.json()["count"] == 0, path
        assert client.get(f"/v1/{path}", headers=ADMIN).json()["count"] == 2
        assert client.get(f"/v1/{path}/{mine[path]['id']}", headers=key).status_code == 200

    before = catalog_state(client)
    for path in RESOURCES:
        url = f"/v1/{path}/{theirs[path]['id']}"
        reason = NOT_FOUND[path]
        assert_problem(client.get(url, headers=key), 404, reason, url)
        if path == "advertisers":
            continue  # writes to advertisers are admin-only anyway (tested above)
        assert_problem(client.patch(url, json={"name": "Mine now"}, headers=key), 404, reason, url)
        for action in ("pause", "activate", "archive"):
            assert_problem(client.post(f"{url}/{action}", headers=key), 404, reason, (url, action))
    # creating under another advertiser's parent: its parent is simply not found
    for path, body, reason in [
        (
            "campaigns",
            {
                "advertiser_id": theirs["advertisers"]["id"],
                "name": "X",
                "start_at": "2026-01-01T00:00:00Z",
                "end_at": "2027-01-01T00:00:00Z",
                "total_budget": "1",
            },
            "advertiser-not-found",
        ),
        (
            "line-items",
            {"campaign_id": theirs["campaigns"]["id"], "name": "X", "tier": "house", "cpm": "0"},
            "campaign-not-found",
        ),
        (
            "creatives",
            {
                "line_item_id": theirs["line-items"]["id"],
                "name": "X",
                "media_url": "https://a.example/x.mp3",
                "duration_ms": 5000,
            },
            "line-item-not-found",
        ),
    ]:
        assert_problem(client.post(f"/v1/{path}", json=body, headers=key), 404, reason, path)
    report = {"campaign_id": theirs["campaigns"]["id"], "from": "2026-01-01", "to": "2027-01-01"}
    assert_problem(
        client.get("/v1/reports/delivery", params=report, headers=key), 404, "campaign-not-found"
    )
    their_item = {"line_item_id": theirs["line-items"]["id"]}
    assert_problem(
        client.get("/v1/reports/frequency", params=their_item, headers=key),
        404,
        "line-item-not-found",
    )
    assert catalog_state(client) == before
    for path in RESOURCES:
        stored = client.get(f"/v1/{path}/{theirs[path]['id']}", headers=ADMIN).json()
        assert (stored["version"], stored["status"]) == (1, "active"), path

    # the advertiser's own objects: readable, writable, and its campaigns default to itself
    campaign = client.post(
        "/v1/campaigns",
        json={
            "name": "Own",
            "start_at": "2026-01-01T00:00:00Z",
            "end_at": "2027-01-01T00:00:00Z",
            "total_budget": "10",
        },
        headers=key,
    )
    assert (
        campaign.status_code == 201
        and campaign.json()["advertiser_id"] == mine["advertisers"]["id"]
    )
    line_item = create_line_item(client, campaign.json()["id"], headers=key)
    assert line_item["advertiser_id"] == mine["advertisers"]["id"]
    assert (
        create_creative(client, line_item["id"], headers=key)["advertiser_id"]
        == mine["advertisers"]["id"]
    )
    assert (
        client.patch(
            f"/v1/campaigns/{mine['campaigns']['id']}", json={"name": "Renamed"}, headers=key
        ).status_code
        == 200
    )
    assert (
        client.post(f"/v1/line-items/{mine['line-items']['id']}/pause", headers=key).json()[
            "status"
        ]
        == "paused"
    )
    report["campaign_id"] = mine["campaigns"]["id"]
    assert client.get("/v1/reports/delivery", params=report, headers=key).status_code == 200
    own = client.get(
        "/v1/reports/frequency", params={"line_item_id": mine["line-items"]["id"]}, headers=key
    )
    assert own.status_code == 200 and own.json()["reach"] == 0, own.text
    assert [b["min_impressions"] for b in own.json()["buckets"]] == list(range(1, 11))

    # slots are public inventory: listed and read without any key
    public = client.get("/v1/slots")
    assert public.status_code == 200
    assert [row["id"] for row in public.json()["data"]] == [slot["id"]]
    assert client.get(f"/v1/slots/{slot['id']}").json()["reserve_cpm"] == "1.00"
    assert client.get("/v1/slots", headers=key).json()["count"] == 1
