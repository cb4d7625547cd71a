"""Ad pods through ``GET /vast`` (and ``POST /v1/decisions``): a VAST 4.2 pod with
``sequence`` 1..n that respects the break's count and durations and separates advertisers
and competing categories; bad pod parameters are a 422.
"""

from __future__ import annotations

from typing import Any

from backbeat.serving.decisions import top_category
from factories import (
    create_advertiser,
    create_campaign,
    create_creative,
    create_line_item,
    create_slot,
)
from vast_schema import assert_valid_vast

NS = {"v": "http://www.iab.com/VAST"}


def book(
    client,
    cpm: str,
    seconds: int,
    categories: list[str] | None = None,
    advertiser: dict[str, Any] | None = None,
    advertiser_category: str | None = None,
) -> dict[str, Any]:
    advertiser = advertiser or create_advertiser(
        client, **({"category": advertiser_category} if advertiser_category else {})
    )
    campaign = create_campaign(client, advertiser["id"])
    item = create_line_item(client, campaign["id"], cpm=cpm)
    create_creative(client, item["id"], duration_ms=seconds * 1000, categories=categories or [])
    return {"advertiser": advertiser, "line_item": item, "category": advertiser_category}


def seconds(duration: str) -> float:
    hours, minutes, rest = duration.split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(rest)


def pod(client, slot_id: int, **params: Any) -> list[dict[str, Any]]:
    response = client.get("/vast", params={"slot": slot_id, "listener": "l", **params})
    assert response.status_code == 200, response.text
    root = assert_valid_vast(response.content)
    ads = []
    for ad in root.findall("v:Ad", NS):
        inline = ad.find("v:InLine", NS)
        ads.append(
            {
                "line_item": int(ad.get("id").removeprefix("li-")),
                "sequence": ad.get("sequence"),
                "advertiser": inline.find("v:Advertiser", NS).text,
                "categories": [element.text for element in inline.findall("v:Category", NS)],
                "seconds": seconds(inline.find(".//v:Linear/v:Duration", NS).text),
            }
        )
    return ads


def test_a_vast_pod_respects_count_durations_and_separation(client):
    first = book(client, "20", 30, ["IAB2-1"])
    book(client, "19", 15, advertiser=first["advertiser"])  # same advertiser
    book(client, "18", 30, ["IAB2-3"])  # competes with IAB2-1
    book(client, "17.5", 20, advertiser_category="IAB2")  # the advertiser competes
    second = book(client, "17", 20, ["IAB3-1", "IAB20-2"])
    book(client, "16", 90)  # longer than the longest ad allowed
    book(client, "15", 5)  # shorter than the shortest
    third = book(client, "14", 15, ["IAB20"])  # IAB20 competes with IAB20-2
    fourth = book(client, "13", 15)
    book(client, "12", 20)  # would pass the break's 80 seconds
    fifth = book(client, "11", 15)
    book(client, "10", 10)  # a fifth ad is one too many
    slot = create_slot(client)["id"]
    client.app.state.services.ad_server.refresh()

    ads = pod(
        client, slot, pod_max_ads=4, pod_max_duration=80, min_ad_duration=10, max_ad_duration=60
    )
    expected = [first, second, fourth, fifth]
    assert [ad["line_item"] for ad in ads] == [booked["line_item"]["id"] for booked in expected]
    assert third["line_item"]["id"] not in [ad["line_item"] for ad in ads]
    assert [ad["sequence"] for ad in ads] == ["1", "2", "3", "4"]
    assert sum(ad["seconds"] for ad in ads) == 80  # the break is full to the second
    assert all(10 <= ad["seconds"] <= 60 for ad in ads)
    assert len({ad["advertiser"] for ad in ads}) == len(ads)
    tops = [top_category(category) for ad in ads for category in ad["categories"]]
    assert len(tops) == len(set(tops))

    # The JSON decision is the same pod.
    response = client.post(
        "/v1/decisions",
        json={
            "slot_id": slot,
            "listener": "m",
            "pod_max_ads": 4,
            "pod_max_duration": 80,
            "min_ad_duration": 10,
            "max_ad_duration": 60,
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert [(ad["line_item_id"], ad["sequence"]) for ad in body["ads"]] == [
        (booked["line_item"]["id"], n) for n, booked in enumerate(expected, start=1)
    ]

    # Without pod parameters: one ad and no sequence.
    [single] = pod(client, slot)
    assert single["line_item"] == first["line_item"]["id"] and single["sequence"] is None
    # A pod that nothing fits is an empty, valid VAST.
    assert pod(client, slot, pod_max_ads=3, min_ad_duration=95) == []


def test_invalid_pod_parameters_are_refused(client):
    slot = create_slot(client)["id"]
    client.app.state.services.ad_server.refresh()
    cases = [
        ({"min_ad_duration": 31, "max_ad_duration": 30}, "invalid-pod"),
        ({"pod_max_ads": 0}, None),
        ({"pod_max_ads": 11}, None),
        ({"pod_max_ads": "two"}, None),
        ({"pod_max_duration": 0}, None),
        ({"pod_max_duration": 3601}, None),
        ({"min_ad_duration": -5}, None),
        ({"max_ad_duration": 1.5}, None),
    ]
    for params, reason in cases:
        response = client.get("/vast", params={"slot": slot, "pod_max_ads": 2, **params})
        assert response.status_code == 422, (params, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        if reason is not None:
            assert response.json()["reason"] == reason
        json_body = {"slot_id": slot, "pod_max_ads": 2, **params}
        assert client.post("/v1/decisions", json=json_body).status_code == 422, params
    # min == max is a valid, if narrow, pod.
    assert (
        client.get(
            "/vast", params={"slot": slot, "min_ad_duration": 30, "max_ad_duration": 30}
        ).status_code
        == 200
    )
