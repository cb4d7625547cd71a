"""Every refused write is a 4xx with a machine-readable ``reason``, and writes nothing."""

from __future__ import annotations

from typing import Any

import pytest

from backbeat import observability
from backbeat.catalog.service import catalog_version
from factories import ADMIN, book_servable, create_advertiser

PATHS = ("advertisers", "campaigns", "line-items", "creatives", "slots")


@pytest.fixture
def quiet_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    """Skip logging unexpected errors: the console renderer's rich tracebacks take seconds."""
    monkeypatch.setattr(observability.log, "exception", lambda *_args, **_kwargs: None)


def catalog_state(client) -> tuple[int, dict[str, int]]:
    """The catalog version (bumped by every write) and the size of every list."""
    with client.app.state.services.sessions() as session:
        version = catalog_version(session)
    counts = {path: client.get(f"/v1/{path}", headers=ADMIN).json()["count"] for path in PATHS}
    return version, counts


def assert_problem(response, status: int, reason: str, context: Any = None) -> None:
    assert response.status_code == status, (context, response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/problem+json"), context
    body = response.json()
    assert body["reason"] == reason, (context, body)
    assert body["status"] == status and body["type"].endswith("/" + reason), context


def campaign_body(advertiser_id: int, **changes: Any) -> dict[str, Any]:
    body = {
        "advertiser_id": advertiser_id,
        "name": "Spring",
        "start_at": "2026-03-01T00:00:00Z",
        "end_at": "2026-06-01T00:00:00Z",
        "total_budget": "5000.00",
        "currency": "USD",
    }
    return {**body, **changes}


def without(body: dict[str, Any], field: str) -> dict[str, Any]:
    return {key: value for key, value in body.items() if key != field}


def test_invalid_creates_are_refused_and_write_nothing(client):
    booked = book_servable(client)
    campaign = campaign_body(booked["advertiser"]["id"])
    line_item = {
        "campaign_id": booked["campaign"]["id"],
        "name": "Drive time",
        "tier": "guaranteed",
        "cpm": "12.50",
        "budget": "100",
        "targeting": {"countries": ["US"]},
    }
    creative = {
        "line_item_id": booked["line_item"]["id"],
        "name": "Spot",
        "media_url": "https://cdn.example.com/spot.mp3",
        "duration_ms": 30_000,
    }
    slot = {"name": "Pre-roll", "surface": "podcast", "position": "pre_roll", "reserve_cpm": "2"}
    cases: list[tuple[str, dict[str, Any], int, str]] = [
        # campaigns: flight, money, currency, shape
        ("campaigns", {**campaign, "end_at": "2026-02-01T00:00:00Z"}, 422, "end-before-start"),
        ("campaigns", {**campaign, "end_at": campaign["start_at"]}, 422, "end-before-start"),
        ("campaigns", {**campaign, "end_at": "2026-03-01T01:00:00+02:00"}, 422, "end-before-start"),
        ("campaigns", {**campaign, "total_budget": "-0.01"}, 422, "negative-amount"),
        ("campaigns", {**campaign, "total_budget": -5}, 422, "negative-amount"),
        ("campaigns", {**campaign, "total_budget": "1.0000001"}, 422, "amount-too-precise"),
        ("campaigns", {**campaign, "total_budget": "1e12"}, 422, "amount-too-large"),
        ("campaigns", {**campaign, "currency": "XYZ"}, 422, "unknown-currency"),
        ("campaigns", {**campaign, "currency": "usd"}, 422, "string-pattern-mismatch"),
        ("campaigns", {**campaign, "start_at": "2026-03-01T00:00:00"}, 422, "timezone-aware"),
        ("campaigns", {**campaign, "colour": "red"}, 422, "extra-forbidden"),
        ("campaigns", {**campaign, "status": "paused"}, 422, "extra-forbidden"),
        ("campaigns", without(campaign, "name"), 422, "missing"),
        ("campaigns", {**campaign, "name": "   "}, 422, "string-too-short"),
        ("campaigns", {**campaign, "advertiser_id": 2**31 - 1}, 404, "advertiser-not-found"),
        ("campaigns", without(campaign, "advertiser_id"), 422, "missing-advertiser-id"),
        # line items: money, targeting, caps
        ("line-items", {**line_item, "cpm": "-1"}, 422, "negative-amount"),
        ("line-items", {**line_item, "budget": "-100"}, 422, "negative-amount"),
        ("line-items", {**line_item, "cpm": "0.0000001"}, 422, "amount-too-precise"),
        (
            "line-items",
            {**line_item, "targeting": {"country": ["US"]}},
            422,
            "unknown-targeting-key",
        ),
        (
            "line-items",
            {**line_item, "targeting": {"countries": ["XX"]}},
            422,
            "invalid-targeting-value",
        ),
        (
            "line-items",
            {**line_item, "targeting": {"devices": ["phone"]}},
            422,
            "invalid-targeting-value",
        ),
        (
            "line-items",
            {**line_item, "targeting": {"genres": ["polka"]}},
            422,
            "invalid-targeting-value",
        ),
        ("line-items", {**line_item, "targeting": {"countries": []}}, 422, "targeting-not-list"),
        ("line-items", {**line_item, "targeting": {"countries": "US"}}, 422, "targeting-not-list"),
        ("line-items", {**line_item, "targeting": ["US"]}, 422, "targeting-not-object"),
        ("line-items", {**line_item, "tier": "premium"}, 422, "enum"),
        ("line-items", {**line_item, "pacing": "fast"}, 422, "enum"),
        ("line-items", {**line_item, "goal_impressions": 0}, 422, "greater-than-equal"),
        (
            "line-items",
            {**line_item, "frequency_cap": {"count": 0, "period": "day"}},
            422,
            "greater-than-equal",
        ),
        (
            "line-items",
            {**line_item, "frequency_cap": {"count": 1, "period": "fortnight"}},
            422,
            "enum",
        ),
        (
            "line-items",
            {**line_item, "frequency_cap": {"count": 1, "period": "day", "x": 1}},
            422,
            "extra-forbidden",
        ),
        ("line-items", {**line_item, "campaign_id": 2**31 - 1}, 404, "campaign-not-found"),
        # creatives: media, URLs, audio types
        ("creatives", without(creative, "media_url"), 422, "missing-media"),
        ("creatives", {**creative, "media_url": ""}, 422, "missing-media"),
        ("creatives", {**creative, "media_url": None}, 422, "missing-media"),
        ("creatives", {**creative, "media_url": "ftp://cdn.example.com/a.mp3"}, 422, "invalid-url"),
        ("creatives", {**creative, "media_url": "spot.mp3"}, 422, "invalid-url"),
        (
            "creatives",
            {**creative, "media_url": "https://cdn.example.com/a b.mp3"},
            422,
            "invalid-url",
        ),
        ("creatives", {**creative, "media_url": "https:///a.mp3"}, 422, "invalid-url"),
        ("creatives", {**creative, "click_url": "javascript:alert(1)"}, 422, "invalid-url"),
        ("creatives", {**creative, "click_url": "https://x.example.com/[a]"}, 422, "invalid-url"),
        ("creatives", {**creative, "mime_type": "video/mp4"}, 422, "unsupported-mime-type"),
        ("creatives", {**creative, "duration_ms": 0}, 422, "greater-than-equal"),
        ("creatives", {**creative, "line_item_id": 2**31 - 1}, 404, "line-item-not-found"),
        # slots and advertisers
        ("slots", {**slot, "reserve_cpm": "-1"}, 422, "negative-amount"),
        ("slots", {**slot, "currency": "ZZZ"}, 422, "unknown-currency"),
        ("slots", {**slot, "surface": "television"}, 422, "enum"),
        ("advertisers", {"name": "Acme", "category": "food"}, 422, "string-pattern-mismatch"),
        ("advertisers", {"name": "Acme", "id": 5}, 422, "extra-forbidden"),
        ("advertisers", {}, 422, "missing"),
    ]
    before = catalog_state(client)
    for path, body, status, reason in cases:
        assert_problem(
            client.post(f"/v1/{path}", json=body, headers=ADMIN), status, reason, (path, body)
        )
    assert catalog_state(client) == before
    # the same bodies, once corrected, are accepted: the cases above fail for their stated reason
    for path, body in [
        ("campaigns", campaign),
        ("line-items", line_item),
        ("creatives", creative),
        ("slots", slot),
        ("advertisers", {"name": "Acme", "category": "IAB1-2"}),
    ]:
        assert client.post(f"/v1/{path}", json=body, headers=ADMIN).status_code == 201, path


def test_invalid_updates_are_refused_and_change_nothing(client):
    booked = book_servable(client)
    ids = {
        "advertisers": booked["advertiser"]["id"],
        "campaigns": booked["campaign"]["id"],  # flight 2026-01-01 .. 2030-01-01
        "line-items": booked["line_item"]["id"],
        "creatives": booked["creative"]["id"],
        "slots": booked["slot"]["id"],
    }
    cases: list[tuple[str, dict[str, Any], str]] = [
        # one end of the flight alone, checked against the stored other end
        ("campaigns", {"end_at": "2025-12-31T23:59:59Z"}, "end-before-start"),
        ("campaigns", {"end_at": "2026-01-01T00:00:00Z"}, "end-before-start"),
        ("campaigns", {"start_at": "2031-01-01T00:00:00Z"}, "end-before-start"),
        ("campaigns", {"start_at": "2030-01-01T01:00:00+01:00"}, "end-before-start"),
        (
            "campaigns",
            {"start_at": "2027-01-01T00:00:00Z", "end_at": "2026-06-01T00:00:00Z"},
            "end-before-start",
        ),
        ("campaigns", {"total_budget": "-1"}, "negative-amount"),
        ("campaigns", {"total_budget": "0.1234567"}, "amount-too-precise"),
        ("campaigns", {"name": None}, "null-not-allowed"),
        ("campaigns", {"start_at": None}, "null-not-allowed"),
        ("campaigns", {"end_at": None}, "null-not-allowed"),
        ("campaigns", {"total_budget": None}, "null-not-allowed"),
        ("campaigns", {"currency": "EUR"}, "extra-forbidden"),
        ("campaigns", {"advertiser_id": 1}, "extra-forbidden"),
        ("campaigns", {"version": 9}, "extra-forbidden"),
        ("line-items", {"cpm": "-1"}, "negative-amount"),
        ("line-items", {"budget": "-0.000001"}, "negative-amount"),
        ("line-items", {"cpm": None}, "null-not-allowed"),
        ("line-items", {"tier": None}, "null-not-allowed"),
        ("line-items", {"pacing": None}, "null-not-allowed"),
        ("line-items", {"name": None}, "null-not-allowed"),
        ("line-items", {"targeting": {"countries": ["XX"]}}, "invalid-targeting-value"),
        (
            "line-items",
            {"targeting": {"countries": ["US"], "weather": ["rain"]}},
            "unknown-targeting-key",
        ),
        ("line-items", {"targeting": {"devices": []}}, "targeting-not-list"),
        ("line-items", {"campaign_id": 1}, "extra-forbidden"),
        ("creatives", {"media_url": ""}, "missing-media"),
        ("creatives", {"media_url": None}, "missing-media"),
        ("creatives", {"media_url": "ftp://cdn.example.com/a.mp3"}, "invalid-url"),
        ("creatives", {"click_url": "not a url"}, "invalid-url"),
        ("creatives", {"duration_ms": None}, "null-not-allowed"),
        ("creatives", {"mime_type": None}, "null-not-allowed"),
        ("creatives", {"mime_type": "text/plain"}, "unsupported-mime-type"),
        ("slots", {"reserve_cpm": "-2"}, "negative-amount"),
        ("slots", {"reserve_cpm": None}, "null-not-allowed"),
        ("slots", {"currency": "EUR"}, "extra-forbidden"),
        ("advertisers", {"name": None}, "null-not-allowed"),
        ("advertisers", {"name": ""}, "string-too-short"),
    ]
    originals = {
        path: client.get(f"/v1/{path}/{ids[path]}", headers=ADMIN).json() for path in PATHS
    }
    before = catalog_state(client)
    for path, body, reason in cases:
        response = client.patch(f"/v1/{path}/{ids[path]}", json=body, headers=ADMIN)
        assert_problem(response, 422, reason, (path, body))
    campaign_url = f"/v1/campaigns/{ids['campaigns']}"
    for if_match in ("abc", '"v1"', "-1", '"1", "2"', "12345678901"):
        response = client.patch(
            campaign_url, json={"name": "x"}, headers={**ADMIN, "If-Match": if_match}
        )
        assert_problem(response, 422, "invalid-if-match", if_match)
    assert_problem(
        client.patch("/v1/campaigns/999999", json={"name": "x"}, headers=ADMIN),
        404,
        "campaign-not-found",
    )
    assert catalog_state(client) == before
    for path in PATHS:
        assert client.get(f"/v1/{path}/{ids[path]}", headers=ADMIN).json() == originals[path], path
    # a valid one-sided change is accepted and a clear null is allowed where the field is optional
    response = client.patch(campaign_url, json={"end_at": "2026-01-01T00:00:01Z"}, headers=ADMIN)
    assert response.status_code == 200 and response.json()["version"] == 2
    response = client.patch(
        f"/v1/line-items/{ids['line-items']}",
        json={"budget": None, "frequency_cap": None, "targeting": {}},
        headers=ADMIN,
    )
    assert response.status_code == 200, response.text
    assert (response.json()["budget"], response.json()["targeting"]) == (None, {})
    # targeting is an object: null is refused (the schema says so), {} targets everyone
    assert_problem(
        client.patch(
            f"/v1/line-items/{ids['line-items']}", json={"targeting": None}, headers=ADMIN
        ),
        422,
        "null-not-allowed",
    )


def test_list_paging_parameters_are_validated(client):
    for query, reason in [
        ("limit=0", "greater-than-equal"),
        ("limit=501", "less-than-equal"),
        ("offset=-1", "greater-than-equal"),
        ("limit=ten", "int-parsing"),
        ("status=deleted", "enum"),
        ("campaign_id=0", "greater-than-equal"),
    ]:
        assert_problem(client.get(f"/v1/line-items?{query}", headers=ADMIN), 422, reason, query)
    for n in range(3):
        create_advertiser(client, name=f"Paged {n}")
    page = client.get("/v1/advertisers?limit=2&offset=1", headers=ADMIN).json()
    assert (page["count"], page["limit"], page["offset"], len(page["data"])) == (3, 2, 1, 2)
    assert [row["name"] for row in page["data"]] == ["Paged 1", "Paged 2"]


@pytest.mark.usefixtures("quiet_errors")
def test_a_duplicate_name_is_a_conflict_and_writes_nothing(client):
    create_advertiser(client, name="Acme")
    before = catalog_state(client)
    assert_problem(
        client.post("/v1/advertisers", json={"name": "Acme"}, headers=ADMIN), 409, "duplicate"
    )
    other = create_advertiser(client, name="Other")
    response = client.patch(f"/v1/advertisers/{other['id']}", json={"name": "Acme"}, headers=ADMIN)
    assert_problem(response, 409, "duplicate")
    assert catalog_state(client)[1]["advertisers"] == before[1]["advertisers"] + 1
