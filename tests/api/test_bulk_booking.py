"""POST /v1/line-items/bulk: all or nothing, every bad item with its index, advertiser isolation."""

from __future__ import annotations

from factories import ADMIN, advertiser_key, create_advertiser, create_campaign


def item(campaign_id: int, n: int, **fields):
    return {
        "campaign_id": campaign_id,
        "name": f"Sub-campaign {n}",
        "tier": "guaranteed",
        "cpm": "12.50",
        "goal_impressions": 10_000 + n,
        "targeting": {"countries": ["US"], "devices": ["mobile"]},
        **fields,
    }


def line_items_of(client, campaign_id: int) -> list[dict]:
    response = client.get(f"/v1/line-items?campaign_id={campaign_id}&limit=500", headers=ADMIN)
    assert response.status_code == 200
    return response.json()["data"]


def test_books_many_in_one_request(client):
    campaign = create_campaign(client, create_advertiser(client)["id"])
    body = {"line_items": [item(campaign["id"], n) for n in range(120)]}
    response = client.post("/v1/line-items/bulk", json=body, headers=ADMIN)
    assert response.status_code == 201, response.text
    answer = response.json()
    assert answer["errors"] == [] and answer["indexes"] == list(range(120))
    stored = line_items_of(client, campaign["id"])
    assert sorted(li["goal_impressions"] for li in stored) == [10_000 + n for n in range(120)]
    assert {li["id"] for li in stored} == {li["id"] for li in answer["line_items"]}


def test_every_bad_item_is_reported_and_nothing_is_written(client):
    advertiser = create_advertiser(client)
    campaign = create_campaign(client, advertiser["id"])
    archived = create_campaign(client, advertiser["id"])
    assert client.post(f"/v1/campaigns/{archived['id']}/archive", headers=ADMIN).status_code == 200
    items = [item(campaign["id"], n) for n in range(6)]
    items[1]["targeting"] = {"countries": ["XX"]}
    items[2]["cpm"] = "-3"
    items[3]["colour"] = "red"
    items[4]["campaign_id"] = archived["id"]
    items[5]["campaign_id"] = 987654
    response = client.post("/v1/line-items/bulk", json={"line_items": items}, headers=ADMIN)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["reason"] == "invalid-line-items"
    reasons = {error["index"]: error["reason"] for error in body["errors"]}
    assert reasons == {
        1: "invalid-targeting-value",
        2: "negative-amount",
        3: "extra-forbidden",
        4: "parent-archived",
        5: "campaign-not-found",
    }
    assert line_items_of(client, campaign["id"]) == []  # item 0 was good, but nothing is written

    # skip_invalid books the good one and lists the rest.
    response = client.post(
        "/v1/line-items/bulk", json={"line_items": items, "skip_invalid": True}, headers=ADMIN
    )
    assert response.status_code == 201, response.text
    assert response.json()["indexes"] == [0]
    assert sorted(e["index"] for e in response.json()["errors"]) == [1, 2, 3, 4, 5]
    assert [li["name"] for li in line_items_of(client, campaign["id"])] == ["Sub-campaign 0"]


def test_advertiser_keys_book_only_under_their_own_campaigns(client):
    mine, theirs = create_advertiser(client), create_advertiser(client)
    my_campaign = create_campaign(client, mine["id"])
    their_campaign = create_campaign(client, theirs["id"])
    key = advertiser_key(client, mine["id"])
    body = {
        "line_items": [
            item(my_campaign["id"], 0, tier="non_guaranteed"),
            item(their_campaign["id"], 1, tier="non_guaranteed"),
            item(my_campaign["id"], 2, tier="sponsorship"),
        ]
    }
    response = client.post("/v1/line-items/bulk", json=body, headers=key)
    assert response.status_code == 422
    errors = {error["index"]: error for error in response.json()["errors"]}
    assert errors[1]["reason"] == "campaign-not-found"  # as if it did not exist
    assert theirs["name"] not in response.text and str(their_campaign["name"]) not in response.text
    assert errors[2]["reason"] == "tier-not-allowed"
    assert line_items_of(client, my_campaign["id"]) == []
    assert line_items_of(client, their_campaign["id"]) == []
    response = client.post(
        "/v1/line-items/bulk", json={"line_items": body["line_items"][:1]}, headers=key
    )
    assert response.status_code == 201, response.text
    assert response.json()["line_items"][0]["advertiser_id"] == mine["id"]


def test_request_shape_limits(client):
    assert (
        client.post("/v1/line-items/bulk", json={"line_items": []}, headers=ADMIN).status_code
        == 422
    )
    too_many = {"line_items": [{}] * 1001}
    assert client.post("/v1/line-items/bulk", json=too_many, headers=ADMIN).status_code == 422
    assert client.post("/v1/line-items/bulk", json={"line_items": [{}]}).status_code == 401
