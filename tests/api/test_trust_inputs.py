"""Hostile input: characters, huge ids, numbers as dates, null targeting, unknown filters,
wrong methods — each a 4xx with a reason and no write, never a 5xx (issue 9, items 3, 6, 8)."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree
from test_validation import assert_problem, catalog_state

from factories import (
    ADMIN,
    advertiser_key,
    book_servable,
    create_advertiser,
    create_campaign,
    create_creative,
    create_line_item,
)

# What XML 1.0 (Char production), JSON and PostgreSQL text all accept, minus controls.
BAD_CHARACTERS = ["\x00", "\x01", "\x1b", "\x7f", "\x85", "\ud800", "\udfff", "\ufffe", "\uffff"]


def xml_accepts(text: str) -> bool:
    """Independent oracle: can lxml put the text in an element?"""
    try:
        etree.Element("x").text = text
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("character", BAD_CHARACTERS, ids=lambda c: f"U+{ord(c):04X}")
def test_unsafe_characters_in_names_are_refused_everywhere(client, character):
    booked = book_servable(client)
    before = catalog_state(client)
    name = f"Sp{character}ot"
    for path, obj in [
        ("advertisers", booked["advertiser"]),
        ("campaigns", booked["campaign"]),
        ("line-items", booked["line_item"]),
        ("creatives", booked["creative"]),
        ("slots", booked["slot"]),
    ]:
        # raw JSON: lone surrogates travel as \\ud800 escapes, as a hostile client sends them
        response = client.patch(
            f"/v1/{path}/{obj['id']}",
            content=json.dumps({"name": name}),
            headers={**ADMIN, "Content-Type": "application/json"},
        )
        assert response.status_code == 422, (path, response.text)
        # lone surrogates already fail JSON decoding as text (string-unicode)
        assert response.json()["reason"] in {"invalid-characters", "string-unicode"}, path
    domain = client.post(
        "/v1/advertisers",
        content=json.dumps({"name": "Fine", "domain": f"a{character}.example"}),
        headers={**ADMIN, "Content-Type": "application/json"},
    )
    assert domain.status_code == 422 and domain.json()["reason"] in {
        "invalid-characters",
        "invalid-domain",
        "string-unicode",
    }
    assert catalog_state(client) == before


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(middle=st.text(max_size=10))
def test_a_name_is_accepted_only_if_xml_can_carry_it_and_serving_never_fails(client, middle):
    """Issue 9 item 3: a creative named with U+FFFF made every /vast that picked it a 500."""
    if not hasattr(client, "_booked"):
        client._booked = book_servable(client)
    booked = client._booked
    name = f"a{middle}z"  # nothing to strip at the ends
    response = client.patch(
        f"/v1/creatives/{booked['creative']['id']}", json={"name": name}, headers=ADMIN
    )
    controls = any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in name)
    if xml_accepts(name) and not controls:
        assert response.status_code == 200, response.text
    else:
        assert response.status_code == 422, response.text
    client.app.state.services.ad_server.refresh()
    vast = client.get(f"/vast?slot={booked['slot']['id']}&listener=x")
    assert vast.status_code == 200


@pytest.mark.parametrize(
    "request_",
    [
        ("POST", "/v1/advertisers/9223372036854775808/keys"),
        ("POST", "/v1/advertisers/2147483648/keys"),
        ("POST", "/v1/api-keys/9223372036854775808/revoke"),
        ("POST", "/v1/api-keys/2147483648/revoke"),
        ("GET", "/v1/campaigns/9223372036854775808"),
        ("GET", "/v1/campaigns/2147483648"),
        ("PATCH", "/v1/line-items/99999999999999999999999"),
        ("POST", "/v1/creatives/2147483648/pause"),
        ("GET", "/v1/slots/9223372036854775808"),
        ("GET", "/v1/campaigns?advertiser_id=9223372036854775808"),
    ],
    ids=lambda r: f"{r[0]} {r[1]}",
)
def test_huge_ids_are_a_4xx_never_a_500(client, request_):
    method, path = request_
    response = client.request(method, path, json={"name": "x"}, headers=ADMIN)
    assert response.status_code in (404, 422), response.text
    assert response.headers["content-type"].startswith("application/problem+json")


@pytest.mark.parametrize(
    "value", [0, 1_700_000_000, 1.5, True, "1700000000", "2026-13-01T00:00:00Z"]
)
def test_datetimes_are_rfc_3339_strings_only(client, value):
    advertiser = create_advertiser(client)
    before = catalog_state(client)
    body = {
        "advertiser_id": advertiser["id"],
        "name": "Numbers",
        "start_at": value,
        "end_at": "2030-01-01T00:00:00Z",
        "total_budget": "10",
    }
    response = client.post("/v1/campaigns", json=body, headers=ADMIN)
    assert response.status_code == 422, response.text
    assert catalog_state(client) == before


def test_targeting_null_is_refused_and_an_empty_object_targets_everyone(client):
    advertiser = create_advertiser(client)
    campaign = create_campaign(client, advertiser["id"])
    body = {"campaign_id": campaign["id"], "name": "Null", "tier": "house", "cpm": "0"}
    assert_problem(
        client.post("/v1/line-items", json={**body, "targeting": None}, headers=ADMIN),
        422,
        "null-not-allowed",
    )
    assert create_line_item(client, campaign["id"], targeting={})["targeting"] == {}


def test_list_filters_filter_or_are_refused(client):
    first = book_servable(client)
    second = book_servable(client)
    # a filter the resource has, matching nothing: an empty page (issue: it returned everything)
    empty = client.get("/v1/creatives?campaign_id=999999", headers=ADMIN).json()
    assert (empty["data"], empty["count"]) == ([], 0)
    by_campaign = client.get(
        f"/v1/creatives?campaign_id={first['campaign']['id']}", headers=ADMIN
    ).json()
    assert [c["id"] for c in by_campaign["data"]] == [first["creative"]["id"]]
    by_advertiser = client.get(
        f"/v1/line-items?advertiser_id={second['advertiser']['id']}", headers=ADMIN
    ).json()
    assert [i["id"] for i in by_advertiser["data"]] == [second["line_item"]["id"]]
    # filters a resource does not have, and typos, are a 422 naming the parameter
    for path in [
        "/v1/campaigns?campaign_id=1",
        "/v1/campaigns?line_item_id=1",
        "/v1/advertisers?advertiser_id=1",
        "/v1/slots?campaign_id=1",
        "/v1/creatives?campaing_id=1",
        "/v1/line-items?sort=name",
    ]:
        response = client.get(path, headers=ADMIN)
        assert_problem(response, 422, "unknown-filter", path)


def test_an_advertiser_key_filtering_by_another_advertiser_sees_nothing(client):
    mine = book_servable(client)
    theirs = book_servable(client)
    key = advertiser_key(client, mine["advertiser"]["id"])
    page = client.get(f"/v1/creatives?campaign_id={theirs['campaign']['id']}", headers=key).json()
    assert page["data"] == [] and page["count"] == 0


def test_a_wrong_method_is_405_with_allow(client):
    response = client.delete("/v1/campaigns", headers=ADMIN)
    assert response.status_code == 405
    assert set(response.headers["allow"].replace(" ", "").split(",")) >= {"GET", "POST"}
    item = client.put("/v1/line-items/1", headers=ADMIN)
    assert set(item.headers["allow"].replace(" ", "").split(",")) >= {"GET", "PATCH"}
    assert response.json()["reason"] == "method-not-allowed"
    # ``bulk`` is a path of its own, not a line item id: its other methods are 405 too
    for method in ("GET", "PATCH", "PUT", "DELETE"):
        bulk = client.request(method, "/v1/line-items/bulk", headers=ADMIN)
        assert bulk.status_code == 405, (method, bulk.text)
        assert bulk.headers["allow"] == "POST"
        assert bulk.json()["reason"] == "method-not-allowed"


def test_problems_carry_the_request_id_and_no_internals(client):
    response = client.get("/v1/campaigns/999", headers={**ADMIN, "X-Request-ID": "trace-42"})
    assert response.headers["x-request-id"] == "trace-42"
    assert response.json()["request_id"] == "trace-42"
    generated = client.get("/v1/campaigns/999", headers=ADMIN)
    assert generated.json()["request_id"] == generated.headers["x-request-id"]
    # a hostile id is replaced, not echoed
    hostile = client.get("/v1/campaigns/999", headers={**ADMIN, "X-Request-ID": "a b<script>"})
    assert hostile.headers["x-request-id"] != "a b<script>"


def test_an_advertiser_key_still_books_its_own_creatives(client):
    advertiser = create_advertiser(client)
    key = advertiser_key(client, advertiser["id"])
    campaign = create_campaign(client, advertiser["id"], headers=key)
    item = create_line_item(client, campaign["id"], headers=key)
    assert create_creative(client, item["id"], headers=key)["line_item_id"] == item["id"]
