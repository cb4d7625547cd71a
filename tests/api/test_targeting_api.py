"""Targeting through the API: validated on write (422 with a reason, nothing written),
stored in canonical form, and applied by ``GET /vast`` to country, genre, app (from the
user agent), segments and the listener's local daypart and weekday.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from backbeat.catalog.service import catalog_version
from backbeat.catalog.targeting import MAX_DEPTH, MAX_VALUES_PER_KEY
from backbeat.catalog.vocabulary import WEEKDAYS
from factories import (
    ADMIN,
    create_advertiser,
    create_campaign,
    create_creative,
    create_line_item,
    create_slot,
)

VAST = "{http://www.iab.com/VAST}"


def nested(depth: int) -> dict[str, Any]:
    """``depth`` levels of ``not`` around a plain test."""
    expression: dict[str, Any] = {"countries": ["US"]}
    for _ in range(depth):
        expression = {"not": expression}
    return expression


INVALID: list[tuple[Any, str]] = [
    ({"country": ["US"]}, "unknown-targeting-key"),
    ({"any": [{"countries": ["US"]}, {"daypart": [7]}]}, "unknown-targeting-key"),
    ({"not": {"all": [{"listeners": ["x"]}]}}, "unknown-targeting-key"),
    ({"countries": ["us"]}, "invalid-targeting-value"),
    ({"countries": ["XX"]}, "invalid-targeting-value"),
    ({"regions": ["US-ZZ"]}, "invalid-targeting-value"),
    ({"devices": ["toaster"]}, "invalid-targeting-value"),
    ({"apps": ["Not A Podcast App"]}, "invalid-targeting-value"),
    ({"positions": ["pre-roll"]}, "invalid-targeting-value"),
    ({"slots": [0]}, "invalid-targeting-value"),
    ({"slots": ["7"]}, "invalid-targeting-value"),
    ({"dayparts": [24]}, "invalid-targeting-value"),
    ({"dayparts": [True]}, "invalid-targeting-value"),
    ({"weekdays": ["monday"]}, "invalid-targeting-value"),
    ({"segments": ["has space"]}, "invalid-targeting-value"),
    ({"segments": ["x" * 65]}, "invalid-targeting-value"),
    ({"connections": ["5g"]}, "invalid-targeting-value"),
    ({"all": [{"not": {"genres": ["polka"]}}]}, "invalid-targeting-value"),
    ({"countries": "US"}, "targeting-not-list"),
    ({"countries": []}, "targeting-not-list"),
    ({"all": {"countries": ["US"]}}, "targeting-not-list"),
    ({"any": []}, "targeting-not-list"),
    ({"not": [{"countries": ["US"]}]}, "targeting-not-object"),
    ({"all": [["US"]]}, "targeting-not-object"),
    (["countries", "US"], "targeting-not-object"),
    ("US", "targeting-not-object"),
    (nested(MAX_DEPTH + 1), "targeting-too-deep"),
    ({"any": [{"countries": ["US"]}] * 300}, "targeting-too-large"),
    ({"segments": [f"s{n}" for n in range(MAX_VALUES_PER_KEY + 1)]}, "targeting-too-large"),
]


def catalog_state(client) -> tuple[int, int]:
    with client.app.state.services.sessions() as session:
        version = catalog_version(session)
    return version, client.get("/v1/line-items", headers=ADMIN).json()["count"]


def assert_problem(response, reason: str, context: Any = None) -> None:
    assert response.status_code == 422, (context, response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["reason"] == reason, (context, body)
    assert body["type"].endswith("/" + reason)


def test_invalid_targeting_is_refused_with_its_reason_and_writes_nothing(client):
    campaign = create_campaign(client, create_advertiser(client)["id"])
    kept = create_line_item(client, campaign["id"], targeting={"countries": ["US"]})
    before = catalog_state(client)
    body = {"campaign_id": campaign["id"], "name": "Bad", "tier": "non_guaranteed", "cpm": "5"}
    for targeting, reason in INVALID:
        assert_problem(
            client.post("/v1/line-items", json={**body, "targeting": targeting}, headers=ADMIN),
            reason,
            targeting,
        )
        patch = client.patch(
            f"/v1/line-items/{kept['id']}", json={"targeting": targeting}, headers=ADMIN
        )
        assert_problem(patch, reason, targeting)
    assert catalog_state(client) == before
    stored = client.get(f"/v1/line-items/{kept['id']}", headers=ADMIN).json()
    assert stored["targeting"] == {"countries": ["US"]} and stored["version"] == kept["version"]


def test_nested_expressions_are_accepted_in_canonical_form(client):
    campaign = create_campaign(client, create_advertiser(client)["id"])
    targeting = {
        "countries": ["US", "CA", "US"],
        "not": {"genres": ["true_crime", "news", "news"]},
        "any": [
            {"segments": ["auto-intender", "commuter"]},
            {"all": [{"apps": ["Spotify", "Overcast"]}, {"not": {"connections": ["cellular"]}}]},
        ],
        "dayparts": [9, 7, 8, 7],
        "weekdays": ["fri", "mon"],
        "regions": ["US-NY", "US-CA"],
        "slots": [3, 1],
    }
    item = create_line_item(client, campaign["id"], targeting=targeting)
    assert item["targeting"] == {
        "countries": ["CA", "US"],
        "not": {"genres": ["news", "true_crime"]},
        "any": [
            {"segments": ["auto-intender", "commuter"]},
            {"all": [{"apps": ["Overcast", "Spotify"]}, {"not": {"connections": ["cellular"]}}]},
        ],
        "dayparts": [7, 8, 9],
        "weekdays": ["fri", "mon"],
        "regions": ["US-CA", "US-NY"],
        "slots": [1, 3],
    }
    deepest = create_line_item(client, campaign["id"], targeting=nested(MAX_DEPTH))
    assert deepest["targeting"] == nested(MAX_DEPTH)
    # {} means everyone (null is refused: the schema says object); a PATCH without it keeps it.
    assert create_line_item(client, campaign["id"], targeting={})["targeting"] == {}
    renamed = client.patch(f"/v1/line-items/{item['id']}", json={"name": "Renamed"}, headers=ADMIN)
    assert renamed.status_code == 200 and renamed.json()["targeting"] == item["targeting"]
    cleared = client.patch(f"/v1/line-items/{item['id']}", json={"targeting": {}}, headers=ADMIN)
    assert cleared.status_code == 200 and cleared.json()["targeting"] == {}


def fills(client, slot_id: int, **params: Any) -> bool:
    headers = {"User-Agent": params.pop("user_agent")} if "user_agent" in params else {}
    response = client.get("/vast", params={"slot": slot_id, **params}, headers=headers)
    assert response.status_code == 200, response.text
    return b"<Ad " in response.content


def test_targeting_written_through_the_api_decides_what_serves(client, clock):
    advertiser = create_advertiser(client)
    campaign = create_campaign(client, advertiser["id"])
    local = datetime.fromtimestamp(clock.now, ZoneInfo("Asia/Tokyo"))
    item = create_line_item(
        client,
        campaign["id"],
        targeting={
            "countries": ["US", "GB"],
            "not": {"genres": ["news"]},
            "any": [{"apps": ["Overcast"]}, {"segments": ["commuter"]}],
            "dayparts": [local.hour],
            "weekdays": [WEEKDAYS[local.weekday()]],
        },
    )
    create_creative(client, item["id"])
    slot = create_slot(client)["id"]
    client.app.state.services.ad_server.refresh()

    overcast = "Overcast/3.0 (+http://overcast.fm/; iOS podcast app)"
    spotify = "Spotify/8.8.0 iOS/16.5 (iPhone14,2)"
    good = {"country": "us", "tz": "Asia/Tokyo", "user_agent": overcast}
    assert fills(client, slot, listener="a", **good)
    assert fills(client, slot, listener="b", **{**good, "country": "GB", "genre": "comedy"})
    assert fills(
        client, slot, listener="c", **{**good, "user_agent": spotify, "segments": "x,commuter"}
    )
    misses = [
        {"country": "de"},
        {"genre": "news"},
        {"user_agent": spotify},
        {"user_agent": spotify, "segments": "runner"},
        {"tz": "America/Los_Angeles"},  # another local hour (and day)
        {"tz": None},  # UTC
    ]
    for n, change in enumerate(misses):
        params = {key: value for key, value in {**good, **change}.items() if value is not None}
        assert not fills(client, slot, listener=f"m{n}", **params), change


def test_an_unknown_listener_time_zone_is_refused(client):
    slot = create_slot(client)["id"]
    for tz in ("Mars/Olympus_Mons", "EST5EDT/x", "../etc/passwd"):
        assert_problem(client.get("/vast", params={"slot": slot, "tz": tz}), "invalid-timezone", tz)
