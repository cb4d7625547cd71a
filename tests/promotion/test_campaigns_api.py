"""Promotion campaigns follow the catalog's API conventions: validation, ETags, isolation."""

from __future__ import annotations

from typing import Any

import pytest

from factories import ADMIN, advertiser_key, create_advertiser


def campaign_body(advertiser_id: int | None, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "Spring single",
        "item_type": "release",
        "item_id": "r00012",
        "artist_id": "a0003",
        "surfaces": ["home_feed", "takeover"],
        "markets": ["US", "SE"],
        "audiences": ["light", "previously_active"],
        "start_at": "2026-09-01T00:00:00Z",
        "end_at": "2026-10-01T00:00:00Z",
        "budget": "5000.00",
        "currency": "USD",
        "price_model": "cpm",
        "price": "12.50",
    }
    if advertiser_id is not None:
        body["advertiser_id"] = advertiser_id
    return {**body, **fields}


def test_create_read_list_patch_and_status_with_defaults(client):
    advertiser = create_advertiser(client)
    created = client.post(
        "/v1/promotion-campaigns", json=campaign_body(advertiser["id"]), headers=ADMIN
    )
    assert created.status_code == 201, created.text
    campaign = created.json()
    assert created.headers["ETag"] == '"1"'
    assert created.headers["Location"] == f"/v1/promotion-campaigns/{campaign['id']}"
    # Marquee's defaults: one exposure per listener per release, 14-day attribution, 21-day exclusion.
    assert (campaign["exposure_cap"], campaign["attribution_days"], campaign["exclusion_days"]) == (
        1,
        14,
        21,
    )
    assert campaign["budget"] == "5000.00" and campaign["price"] == "12.50"

    listed = client.get("/v1/promotion-campaigns", headers=ADMIN).json()
    assert listed["count"] == 1 and listed["data"][0]["item_id"] == "r00012"

    stale = client.patch(
        f"/v1/promotion-campaigns/{campaign['id']}",
        json={"budget": "6000"},
        headers={**ADMIN, "If-Match": '"7"'},
    )
    assert stale.status_code == 412 and stale.json()["reason"] == "version-mismatch"
    patched = client.patch(
        f"/v1/promotion-campaigns/{campaign['id']}",
        json={"budget": "6000"},
        headers={**ADMIN, "If-Match": '"1"'},
    )
    assert patched.status_code == 200 and patched.json()["budget"] == "6000.00"
    assert patched.headers["ETag"] == '"2"'

    moved = client.patch(
        f"/v1/promotion-campaigns/{campaign['id']}",
        json={"end_at": "2026-08-01T00:00:00Z"},
        headers=ADMIN,
    )
    assert moved.status_code == 422 and moved.json()["reason"] == "end-before-start"

    for action, expected in (("pause", "paused"), ("activate", "active"), ("archive", "archived")):
        response = client.post(f"/v1/promotion-campaigns/{campaign['id']}/{action}", headers=ADMIN)
        assert response.json()["status"] == expected
    again = client.post(f"/v1/promotion-campaigns/{campaign['id']}/activate", headers=ADMIN)
    assert again.status_code == 409 and again.json()["reason"] == "archived"


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"end_at": "2026-08-01T00:00:00Z"}, "end-before-start"),
        ({"budget": "-1"}, "negative-amount"),
        ({"price": "0"}, "zero-price"),
        ({"price": "1.0000001"}, "amount-too-precise"),
        ({"price_model": "cpa"}, "enum"),
        ({"surfaces": ["billboard"]}, "enum"),
        ({"surfaces": []}, "too-short"),
        ({"markets": ["XX"]}, "unknown-country"),
        ({"markets": ["US", "US"]}, "duplicate-values"),
        ({"audiences": ["whales"]}, "enum"),
        ({"item_id": "bad id with spaces"}, "string-pattern-mismatch"),
        ({"exposure_cap": 0}, "greater-than-equal"),
        ({"attribution_days": 365}, "less-than-equal"),
        ({"currency": "XYZ"}, "unknown-currency"),
        ({"colour": "red"}, "extra-forbidden"),
    ],
)
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # validation is above the DB
def test_bad_input_is_a_422_with_a_reason_and_writes_nothing(client, fields, reason):
    advertiser = create_advertiser(client)
    response = client.post(
        "/v1/promotion-campaigns", json=campaign_body(advertiser["id"], **fields), headers=ADMIN
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["reason"] == reason
    assert client.get("/v1/promotion-campaigns", headers=ADMIN).json()["count"] == 0


def test_advertiser_keys_see_and_change_only_their_own_promotions(client):
    first, second = create_advertiser(client), create_advertiser(client)
    first_key, second_key = (
        advertiser_key(client, first["id"]),
        advertiser_key(client, second["id"]),
    )
    own = client.post("/v1/promotion-campaigns", json=campaign_body(None), headers=first_key)
    assert own.status_code == 201 and own.json()["advertiser_id"] == first["id"]
    other = client.post(
        "/v1/promotion-campaigns", json=campaign_body(second["id"]), headers=ADMIN
    ).json()

    assert [
        c["id"] for c in client.get("/v1/promotion-campaigns", headers=first_key).json()["data"]
    ] == [own.json()["id"]]
    for method, path, body in (
        ("GET", f"/v1/promotion-campaigns/{other['id']}", None),
        ("PATCH", f"/v1/promotion-campaigns/{other['id']}", {"budget": "1"}),
        ("POST", f"/v1/promotion-campaigns/{other['id']}/pause", None),
    ):
        response = client.request(method, path, json=body, headers=first_key)
        assert response.status_code == 404, (method, path)
        assert second["name"] not in response.text
    # Booking under someone else's advertiser is not found either.
    forged = client.post(
        "/v1/promotion-campaigns", json=campaign_body(second["id"]), headers=first_key
    )
    assert forged.status_code == 404
    assert (
        client.get(f"/v1/promotion-campaigns/{other['id']}", headers=second_key).status_code == 200
    )
    assert client.get("/v1/promotion-campaigns").status_code == 401


def test_the_list_filters_by_advertiser_and_status_like_the_other_lists(client):
    first, second = create_advertiser(client), create_advertiser(client)
    mine = client.post(
        "/v1/promotion-campaigns", json=campaign_body(first["id"]), headers=ADMIN
    ).json()
    client.post("/v1/promotion-campaigns", json=campaign_body(second["id"]), headers=ADMIN)
    client.post(f"/v1/promotion-campaigns/{mine['id']}/pause", headers=ADMIN)
    by_advertiser = client.get(
        f"/v1/promotion-campaigns?advertiser_id={first['id']}", headers=ADMIN
    ).json()
    assert [(c["id"], c["item_id"]) for c in by_advertiser["data"]] == [(mine["id"], "r00012")]
    paused = client.get("/v1/promotion-campaigns?status=paused", headers=ADMIN).json()
    assert [c["id"] for c in paused["data"]] == [mine["id"]]
