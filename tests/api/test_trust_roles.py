"""Roles: advertiser keys book only their tiers above the floor; ad inserter keys own the
device headers; nobody else does (issue 9, items 2 and 8)."""

from __future__ import annotations

import hashlib
from urllib.parse import parse_qs, urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_validation import assert_problem, catalog_state

from factories import (
    ADMIN,
    advertiser_key,
    book_servable,
    create_advertiser,
    create_campaign,
    create_creative,
    create_line_item,
    create_slot,
)


def listener_of(decision: dict) -> str:
    return parse_qs(urlsplit(decision["tracking"]["impression"]).query)["l"][0]


def hashed(ip: str, agent: str) -> str:
    return "h:" + hashlib.sha256(f"{ip}\x1f{agent}".encode()).hexdigest()[:24]


@pytest.mark.parametrize("tier", ["house", "sponsorship"])
def test_an_advertiser_key_cannot_book_or_move_into_the_publishers_tiers(client, tier):
    advertiser = create_advertiser(client)
    key = advertiser_key(client, advertiser["id"])
    campaign = create_campaign(client, advertiser["id"], headers=key)
    before = catalog_state(client)
    body = {"campaign_id": campaign["id"], "name": "Cheap", "tier": tier, "cpm": "0.01"}
    assert_problem(client.post("/v1/line-items", json=body, headers=key), 403, "tier-not-allowed")
    assert catalog_state(client) == before
    item = create_line_item(client, campaign["id"], headers=key)  # non_guaranteed: allowed
    moved = client.patch(f"/v1/line-items/{item['id']}", json={"tier": tier}, headers=key)
    assert_problem(moved, 403, "tier-not-allowed")
    assert client.get(f"/v1/line-items/{item['id']}", headers=key).json()["tier"] == item["tier"]
    # the publisher books them, and the advertiser may not retune them afterwards
    publisher_item = create_line_item(client, campaign["id"], tier=tier, cpm="0.01")
    for attempt in (
        client.patch(f"/v1/line-items/{publisher_item['id']}", json={"cpm": "50"}, headers=key),
        client.post(f"/v1/line-items/{publisher_item['id']}/pause", headers=key),
    ):
        assert_problem(attempt, 403, "publisher-tier")
    # guaranteed is the advertiser's to book
    assert create_line_item(client, campaign["id"], headers=key, tier="guaranteed")["id"]


def test_an_advertiser_key_books_at_or_above_the_lowest_reserve(client):
    create_slot(client, reserve_cpm="2.50")
    create_slot(client, reserve_cpm="4.00")
    create_slot(client, reserve_cpm="0.50", currency="EUR")  # another currency: no floor for USD
    advertiser = create_advertiser(client)
    key = advertiser_key(client, advertiser["id"])
    campaign = create_campaign(client, advertiser["id"], headers=key)
    body = {"campaign_id": campaign["id"], "name": "Low", "tier": "non_guaranteed"}
    assert_problem(
        client.post("/v1/line-items", json={**body, "cpm": "2.49"}, headers=key),
        422,
        "cpm-below-reserve",
    )
    item = create_line_item(client, campaign["id"], headers=key, cpm="2.50")
    lowered = client.patch(f"/v1/line-items/{item['id']}", json={"cpm": "1"}, headers=key)
    assert_problem(lowered, 422, "cpm-below-reserve")
    # the admin is not bound by the floor
    assert create_line_item(client, campaign["id"], cpm="0.01")["cpm"] == "0.01"


def test_the_cheap_house_ad_attack_no_longer_takes_the_slot(client):
    """Issue 9 item 2: an advertiser's $0.01 house item took 49 of 50 requests."""
    booked = book_servable(client, line_item={"tier": "house", "cpm": "0.00"})
    attacker = create_advertiser(client)
    key = advertiser_key(client, attacker["id"])
    campaign = create_campaign(client, attacker["id"], headers=key)
    body = {"campaign_id": campaign["id"], "name": "Squatter", "tier": "house", "cpm": "0.01"}
    assert client.post("/v1/line-items", json=body, headers=key).status_code == 403
    client.app.state.services.ad_server.refresh()
    served = [
        client.post(
            "/v1/decisions", json={"slot_id": booked["slot"]["id"], "listener": f"l{n}"}
        ).json()
        for n in range(20)
    ]
    assert {decision["ads"][0]["line_item_id"] for decision in served if decision["filled"]} == {
        booked["line_item"]["id"]
    }


def test_slots_are_the_publishers(client):
    slot = create_slot(client)
    advertiser = create_advertiser(client)
    key = advertiser_key(client, advertiser["id"])
    attempts = [
        client.post(
            "/v1/slots",
            json={"name": "Mine", "surface": "podcast", "position": "pre_roll"},
            headers=key,
        ),
        client.patch(f"/v1/slots/{slot['id']}", json={"reserve_cpm": "0"}, headers=key),
        client.post(f"/v1/slots/{slot['id']}/archive", headers=key),
    ]
    for attempt in attempts:
        assert_problem(attempt, 403, "admin-only")
    assert client.get(f"/v1/slots/{slot['id']}").json()["reserve_cpm"] == slot["reserve_cpm"]


def test_device_headers_count_only_from_an_ad_inserter_key(client):
    booked = book_servable(client)
    slot_id = booked["slot"]["id"]
    device = {"X-Device-IP": "203.0.113.7", "X-Device-User-Agent": "Overcast/3.0"}
    body = {"slot_id": slot_id}
    # anyone else: the headers and the JSON ip/user_agent are ignored (the caller is the device)
    anonymous = client.post("/v1/decisions", json=body, headers={**device, "User-Agent": "me"})
    assert listener_of(anonymous.json()) == hashed("testclient", "me")
    spoofed = client.post(
        "/v1/decisions",
        json={**body, "ip": "198.51.100.9", "user_agent": "x"},
        headers={"User-Agent": "me"},
    )
    assert listener_of(spoofed.json()) == hashed("testclient", "me")
    advertiser = create_advertiser(client)
    as_advertiser = client.post(
        "/v1/decisions",
        json=body,
        headers={**device, **advertiser_key(client, advertiser["id"]), "User-Agent": "me"},
    )
    assert listener_of(as_advertiser.json()) == hashed("testclient", "me")
    # an ad inserter key: believed, on the JSON decision and on /vast
    minted = client.post("/v1/api-keys", json={"role": "ssai"}, headers=ADMIN)
    assert minted.status_code == 201 and minted.json()["role"] == "ssai"
    inserter = {"Authorization": f"Bearer {minted.json()['key']}"}
    trusted = client.post("/v1/decisions", json=body, headers={**device, **inserter})
    assert listener_of(trusted.json()) == hashed("203.0.113.7", "Overcast/3.0")
    vast = client.get(f"/vast?slot={slot_id}", headers={**device, **inserter})
    assert f"l={hashed('203.0.113.7', 'Overcast/3.0')}" in vast.text.replace("&amp;", "&")
    # an inserter key is not a management key, and revoking it stops the trust at once
    assert_problem(client.get("/v1/campaigns", headers=inserter), 403, "ssai-key")
    assert (
        client.post(f"/v1/api-keys/{minted.json()['id']}/revoke", headers=ADMIN).status_code == 204
    )
    revoked = client.post(
        "/v1/decisions", json=body, headers={**device, **inserter, "User-Agent": "me"}
    )
    assert listener_of(revoked.json()) == hashed("testclient", "me")


def test_only_the_admin_mints_inserter_keys(client):
    advertiser = create_advertiser(client)
    key = advertiser_key(client, advertiser["id"])
    assert_problem(
        client.post("/v1/api-keys", json={"role": "ssai"}, headers=key), 403, "admin-only"
    )
    assert_problem(
        client.post("/v1/api-keys", json={"role": "admin"}, headers=ADMIN), 422, "literal-error"
    )


def test_creatives_of_an_advertiser_key_still_work_under_its_own_items(client):
    advertiser = create_advertiser(client)
    key = advertiser_key(client, advertiser["id"])
    campaign = create_campaign(client, advertiser["id"], headers=key)
    item = create_line_item(client, campaign["id"], headers=key)
    assert create_creative(client, item["id"], headers=key)["advertiser_id"] == advertiser["id"]


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    tier=st.sampled_from(["sponsorship", "guaranteed", "non_guaranteed", "house"]),
    cents=st.integers(min_value=0, max_value=600),
)
def test_an_advertiser_booking_is_accepted_exactly_within_its_tiers_and_floor(client, tier, cents):
    """Property: accepted iff the tier is the advertiser's and the CPM is at least the lowest
    active reserve (hand-set here at 2.50 and 4.00: the floor is 2.50)."""
    if not hasattr(client, "_roles_book"):
        create_slot(client, reserve_cpm="2.50")
        create_slot(client, reserve_cpm="4.00")
        advertiser = create_advertiser(client)
        key = advertiser_key(client, advertiser["id"])
        client._roles_book = (key, create_campaign(client, advertiser["id"], headers=key))
    key, campaign = client._roles_book
    cpm = f"{cents // 100}.{cents % 100:02d}"
    body = {"campaign_id": campaign["id"], "name": f"P {tier} {cpm}", "tier": tier, "cpm": cpm}
    response = client.post("/v1/line-items", json=body, headers=key)
    if tier in ("sponsorship", "house"):
        expected = 403
    elif cents < 250:
        expected = 422
    else:
        expected = 201
    assert response.status_code == expected, response.text
