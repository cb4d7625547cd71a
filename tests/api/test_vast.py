"""Serving over HTTP: VAST 4.2 documents, the JSON decision, priority, flight, caps and budgets."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from decimal import Decimal
from urllib.parse import parse_qs, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_validation import assert_problem, quiet_errors  # noqa: F401

from backbeat.serving.vast import format_duration
from factories import (
    ADMIN,
    book_servable,
    create_advertiser,
    create_campaign,
    create_creative,
    create_line_item,
    create_slot,
)
from vast_schema import assert_valid_vast

NS = {"v": "http://www.iab.com/VAST"}
QUARTILES = ["start", "firstQuartile", "midpoint", "thirdQuartile", "complete"]


def refresh(client) -> None:
    client.app.state.services.ad_server.refresh()


def text(root, path: str) -> str:
    found = root.find(path, NS)
    assert found is not None, path
    return (found.text or "").strip()


def query(url: str) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(urlsplit(url).query).items()}


def decide(client, slot_id: int, listener: str | None = "l", **fields) -> dict:
    body = {"slot_id": slot_id, **fields}
    if listener is not None:
        body["listener"] = listener
    response = client.post("/v1/decisions", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def served_line_items(
    client, slot_id: int, n: int, listener: str | None = None
) -> list[int | None]:
    return [
        decide(client, slot_id, listener or f"listener-{k}").get("line_item_id") for k in range(n)
    ]


def test_a_fill_is_valid_vast_42_audio_with_every_required_element(client):
    booked = book_servable(client)
    slot_id, creative = booked["slot"]["id"], booked["creative"]
    first = client.get(f"/vast?slot={slot_id}&listener=l1&country=us&device=Mobile")
    assert first.status_code == 200
    assert first.headers["content-type"].startswith("application/xml")
    root = assert_valid_vast(first.content)
    assert root.get("version") == "4.2"
    ads = root.findall("v:Ad", NS)
    assert len(ads) == 1
    ad = ads[0]
    assert ad.get("adType") == "audio" and ad.get("id") == f"li-{booked['line_item']['id']}"
    inline = ad.find("v:InLine", NS)
    assert text(inline, "v:AdSystem") == "Backbeat"
    assert text(inline, "v:AdTitle") == creative["name"]
    assert text(inline, "v:Advertiser") == booked["advertiser"]["name"]
    serving_id = text(inline, "v:AdServingId")
    impression = text(inline, "v:Impression")
    assert query(impression)["d"] == serving_id
    assert query(impression)["li"] == str(booked["line_item"]["id"])
    assert urlsplit(impression).path == "/t/impression" and "sig" in query(impression)
    linear = inline.find("v:Creatives/v:Creative/v:Linear", NS)
    assert text(linear, "v:Duration") == "00:00:30.000"
    media = linear.find("v:MediaFiles/v:MediaFile", NS)
    assert (media.text or "").strip() == creative["media_url"]
    assert (media.get("type"), media.get("bitrate"), media.get("delivery")) == (
        "audio/mpeg",
        "128",
        "progressive",
    )
    tracking = {
        t.get("event"): (t.text or "").strip()
        for t in linear.findall("v:TrackingEvents/v:Tracking", NS)
    }
    assert sorted(tracking) == sorted(QUARTILES)
    for event, url in tracking.items():
        assert urlsplit(url).path == f"/t/{event}" and query(url)["d"] == serving_id
    assert text(linear, "v:VideoClicks/v:ClickThrough") == creative["click_url"]
    assert urlsplit(text(linear, "v:VideoClicks/v:ClickTracking")).path == "/t/click"
    assert text(inline, "v:Error").startswith("http://testserver/t/error?")

    # every request is its own decision with its own serving id
    ids = {serving_id}
    for n in range(4):
        again = assert_valid_vast(client.get(f"/vast?slot={slot_id}&listener=l{n}").content)
        ids.add(text(again, "v:Ad/v:InLine/v:AdServingId"))
    assert len(ids) == 5

    # the JSON decision states the same facts
    decision = decide(client, slot_id, "l9")
    assert decision["filled"] is True and decision["no_fill_reason"] is None
    assert (decision["line_item_id"], decision["campaign_id"]) == (
        booked["line_item"]["id"],
        booked["campaign"]["id"],
    )
    assert decision["creative"] | {"categories": []} == {
        "id": creative["id"],
        "title": creative["name"],
        "media_url": creative["media_url"],
        "mime_type": "audio/mpeg",
        "duration_ms": 30_000,
        "bitrate_kbps": 128,
        "click_through": creative["click_url"],
        "categories": [],
    }
    assert (decision["currency"], decision["tier"]) == ("USD", "non_guaranteed")
    # the price is the platform's: not shown to an unauthenticated caller ...
    assert "price_cpm" not in decision
    # ... but to the admin: alone in the slot's second-price auction, the CPM 10.00 bid pays
    # the 1.00 reserve
    priced = client.post(
        "/v1/decisions",
        json={"slot_id": slot_id, "listener": "l10"},
        headers=ADMIN,
    ).json()
    assert Decimal(priced["price_cpm"]) == Decimal("1")
    assert set(decision["tracking"]) >= {"impression", *QUARTILES, "click", "error"}
    assert query(decision["tracking"]["impression"])["d"] == decision["decision_id"] not in ids


def test_a_creative_without_click_or_bitrate_omits_them_and_stays_valid(client):
    booked = book_servable(client, slot={"surface": "podcast", "position": "mid_roll"})
    item = booked["line_item"]
    client.post(f"/v1/creatives/{booked['creative']['id']}/archive", headers=ADMIN)
    create_creative(
        client,
        item["id"],
        click_url=None,
        bitrate_kbps=None,
        duration_ms=15_500,
        mime_type="audio/ogg",
    )
    refresh(client)
    root = assert_valid_vast(client.get(f"/vast?slot={booked['slot']['id']}&listener=x").content)
    linear = root.find("v:Ad/v:InLine/v:Creatives/v:Creative/v:Linear", NS)
    assert text(linear, "v:Duration") == "00:00:15.500"
    media = linear.find("v:MediaFiles/v:MediaFile", NS)
    assert media.get("type") == "audio/ogg" and media.get("bitrate") is None
    assert linear.find("v:VideoClicks", NS) is None
    assert (
        root.find(".//v:ClickThrough", NS) is None and root.find(".//v:ClickTracking", NS) is None
    )


def test_no_fill_and_bad_requests(client):
    booked = book_servable(client, line_item={"targeting": {"countries": ["US"]}})
    slot_id = booked["slot"]["id"]
    response = client.get(f"/vast?slot={slot_id}&listener=l1&country=FR")
    assert response.status_code == 200
    root = assert_valid_vast(response.content)
    assert root.get("version") == "4.2" and root.find("v:Ad", NS) is None
    error_url = text(root, "v:Error")
    assert urlsplit(error_url).path == "/t/error" and query(error_url)["li"] == "0"
    parts = urlsplit(error_url)
    assert client.get(f"{parts.path}?{parts.query}&code=303").status_code == 204

    decision = decide(client, slot_id, "l1", country="FR")
    assert decision["filled"] is False and decision["no_fill_reason"] == "no-targeting-match"
    assert "line_item_id" not in decision and set(decision["tracking"]) == {"error"}
    assert decide(client, slot_id, "l1", country="us")["filled"] is True

    for url in ("/vast?slot=999999&listener=l", "/vast?slot=999999"):
        assert_problem(client.get(url), 404, "slot-not-found", url)
    assert_problem(client.post("/v1/decisions", json={"slot_id": 999999}), 404, "slot-not-found")
    for country in ("U1", "1!", "é"):
        assert_problem(
            client.get(f"/vast?slot={slot_id}&country={country}"), 422, "invalid-country", country
        )
        assert_problem(
            client.post("/v1/decisions", json={"slot_id": slot_id, "country": country}),
            422,
            "invalid-country",
        )
    assert_problem(client.get(f"/vast?slot={slot_id}&country=USA"), 422, "string-too-long")
    assert_problem(client.get("/vast?listener=l"), 422, "missing")
    assert_problem(client.get("/vast?slot=abc"), 422, "int-parsing")
    assert_problem(
        client.post("/v1/decisions", json={"slot_id": slot_id, "colour": 1}), 422, "extra-forbidden"
    )


def test_device_headers_identify_the_listener_when_no_id_is_sent(client):
    booked = book_servable(client, line_item={"frequency_cap": {"count": 1, "period": "day"}})
    slot_id = booked["slot"]["id"]
    # only an ad inserter's key makes the device headers count (tests/api/test_trust_roles.py)
    minted = client.post("/v1/api-keys", json={"role": "ssai"}, headers=ADMIN)
    client.headers["Authorization"] = f"Bearer {minted.json()['key']}"
    inserter = {
        "X-Device-IP": "203.0.113.7",
        "X-Device-User-Agent": "Overcast/3.0 (+http://overcast.fm/)",
    }
    expected = (
        "h:"
        + hashlib.sha256(b"203.0.113.7\x1fOvercast/3.0 (+http://overcast.fm/)").hexdigest()[:24]
    )

    first = client.get(f"/vast?slot={slot_id}", headers=inserter)
    impression = text(assert_valid_vast(first.content), "v:Ad/v:InLine/v:Impression")
    assert query(impression)["l"] == expected
    # the same device is capped; the ad inserter's own address and agent do not matter
    again = client.get(f"/vast?slot={slot_id}", headers={**inserter, "User-Agent": "ssai/1.0"})
    assert b"<Ad " not in again.content
    other_device = client.get(
        f"/vast?slot={slot_id}", headers={**inserter, "X-Device-IP": "203.0.113.8"}
    )
    assert b"<Ad " in other_device.content
    other_agent = client.get(
        f"/vast?slot={slot_id}", headers={**inserter, "X-Device-User-Agent": "Pocket Casts"}
    )
    assert b"<Ad " in other_agent.content
    # an explicit listener id wins over the headers
    named = client.get(f"/vast?slot={slot_id}&listener=abc", headers=inserter)
    assert query(text(assert_valid_vast(named.content), "v:Ad/v:InLine/v:Impression"))["l"] == "abc"
    # JSON callers may pass the device's address and agent in the body
    decision = decide(client, slot_id, None, ip="198.51.100.1", user_agent="AntennaPod/3")
    hashed = "h:" + hashlib.sha256(b"198.51.100.1\x1fAntennaPod/3").hexdigest()[:24]
    assert query(decision["tracking"]["impression"])["l"] == hashed
    assert (
        decide(client, slot_id, None, ip="198.51.100.1", user_agent="AntennaPod/3")["filled"]
        is False
    )


def test_priority_tier_then_cpm_then_reserve(client):
    slot = create_slot(client, reserve_cpm="5.00")
    other_slot = create_slot(client, reserve_cpm="0")
    campaign = create_campaign(client, create_advertiser(client)["id"])
    only_here = {"targeting": {"slots": [slot["id"]]}, "goal_impressions": 1}
    items = {}
    for name, tier, cpm in [
        ("house", "house", "0.50"),
        ("ng_low", "non_guaranteed", "20.00"),
        ("ng_high", "non_guaranteed", "100.00"),
        ("guaranteed", "guaranteed", "50.00"),
        ("sponsorship", "sponsorship", "6.00"),
        ("below_reserve", "sponsorship", "4.99"),
    ]:
        fields = {**only_here, "tier": tier, "cpm": cpm}
        if name == "house":
            fields.pop("goal_impressions")
        items[name] = create_line_item(client, campaign["id"], **fields)["id"]
        create_creative(client, items[name])
    refresh(client)
    by_id = {value: key for key, value in items.items()}
    served = [by_id.get(line_item) for line_item in served_line_items(client, slot["id"], 6)]
    assert served == ["sponsorship", "guaranteed", "ng_high", "ng_low", "house", "house"]
    # the item below this slot's reserve never served here, but it is not broken: no other slot
    # admits it by targeting, so nothing fills the unreserved slot
    assert served_line_items(client, other_slot["id"], 1) == [None]
    client.patch(
        f"/v1/line-items/{items['below_reserve']}",
        json={"targeting": {"slots": [other_slot["id"]]}},
        headers=ADMIN,
    )
    refresh(client)
    assert served_line_items(client, other_slot["id"], 1) == [items["below_reserve"]]


def test_out_of_flight_and_inactive_parents_do_not_serve(client, clock):
    def iso(ts: float) -> str:
        return datetime.fromtimestamp(ts, UTC).isoformat()

    advertiser = create_advertiser(client)
    slot = create_slot(client)
    campaign = create_campaign(
        client, advertiser["id"], start_at=iso(clock.now + 3600), end_at=iso(clock.now + 7200)
    )
    item = create_line_item(client, campaign["id"])
    create_creative(client, item["id"])
    refresh(client)
    decision = decide(client, slot["id"])
    assert decision["filled"] is False and decision["no_fill_reason"] == "outside-flight"
    clock.advance(3600)  # the flight starts (inclusive)
    assert decide(client, slot["id"])["line_item_id"] == item["id"]
    clock.advance(3599)
    assert decide(client, slot["id"])["filled"] is True
    clock.advance(1)  # the flight ends (exclusive)
    assert decide(client, slot["id"])["filled"] is False
    client.app.state.services.ad_server.refresh(force=True)
    assert decide(client, slot["id"])["filled"] is False


def test_frequency_cap_per_listener_and_period(client, clock):
    booked = book_servable(client, line_item={"frequency_cap": {"count": 3, "period": "hour"}})
    slot_id = booked["slot"]["id"]
    clock.advance(3600 - clock.now % 3600)  # the start of a cap window
    assert [decide(client, slot_id, "a")["filled"] for _ in range(5)] == [True] * 3 + [False] * 2
    assert decide(client, slot_id, "a")["no_fill_reason"] == "frequency-capped"
    assert decide(client, slot_id, "b")["filled"] is True
    clock.advance(3599)
    assert decide(client, slot_id, "a")["filled"] is False
    clock.advance(1)
    assert [decide(client, slot_id, "a")["filled"] for _ in range(4)] == [True] * 3 + [False]


def test_budgets_and_goals_bound_delivery(client):
    advertiser = create_advertiser(client)
    slots = [create_slot(client, reserve_cpm="0")["id"] for _ in range(3)]

    def book(campaign_id: int, slot_id: int, **fields) -> int:
        item = create_line_item(client, campaign_id, targeting={"slots": [slot_id]}, **fields)
        create_creative(client, item["id"])
        return item["id"]

    # Guaranteed line items pay their own CPM, so budgets translate into impressions exactly:
    # line item budget 0.025 at CPM 10: floor(0.025 * 1000 / 10) = 2 impressions
    fixed = {"tier": "guaranteed", "cpm": "10.00"}
    budgeted = book(
        create_campaign(client, advertiser["id"])["id"], slots[0], budget="0.025", **fixed
    )
    # campaign budget 0.03 shared by two line items at CPM 10: 3 impressions in all
    shared = create_campaign(client, advertiser["id"], total_budget="0.03")["id"]
    pair = {book(shared, slots[1], **fixed), book(shared, slots[1], **fixed)}
    # a goal of 4 impressions at CPM 2.50
    goal = book(
        create_campaign(client, advertiser["id"])["id"], slots[2], cpm="2.50", goal_impressions=4
    )
    refresh(client)

    assert served_line_items(client, slots[0], 5) == [budgeted] * 2 + [None] * 3
    assert decide(client, slots[0], "late")["no_fill_reason"] == "budget-exhausted"
    shared_served = served_line_items(client, slots[1], 6)
    assert len([n for n in shared_served if n in pair]) == 3 and shared_served[3:] == [None] * 3
    assert decide(client, slots[1], "late")["no_fill_reason"] == "campaign-budget-exhausted"
    assert served_line_items(client, slots[2], 6) == [goal] * 4 + [None] * 2
    assert decide(client, slots[2], "late")["no_fill_reason"] == "goal-reached"
    # raising the budget lets delivery resume, from what was already spent
    client.patch(f"/v1/line-items/{budgeted}", json={"budget": "0.05"}, headers=ADMIN)
    refresh(client)
    assert served_line_items(client, slots[0], 5) == [budgeted] * 3 + [None] * 2


@pytest.mark.usefixtures("quiet_errors")
def test_control_characters_never_break_a_vast_document(client):
    booked = book_servable(client)
    for path, object_id in (
        ("advertisers", booked["advertiser"]["id"]),
        ("creatives", booked["creative"]["id"]),
    ):
        response = client.patch(
            f"/v1/{path}/{object_id}", json={"name": "Spot\u0001\u001b"}, headers=ADMIN
        )
        if response.status_code != 200:  # refusing the name is a fix too
            assert_problem(response, 422, response.json()["reason"])
    refresh(client)
    response = client.get(f"/vast?slot={booked['slot']['id']}&listener=l")
    assert response.status_code == 200
    assert_valid_vast(response.content)


@given(st.integers(0, 10 * 3600 * 1000 - 1))
def test_durations_are_vast_timecodes(milliseconds):
    formatted = format_duration(milliseconds)
    hours, minutes, rest = formatted.split(":")
    seconds, millis = rest.split(".")
    assert (len(hours), len(minutes), len(seconds), len(millis)) == (2, 2, 2, 3)
    assert int(minutes) < 60 and int(seconds) < 60
    assert ((int(hours) * 60 + int(minutes)) * 60 + int(seconds)) * 1000 + int(
        millis
    ) == milliseconds


_QUERY_KEYS = [
    "slot", "listener", "country", "region", "device", "platform", "genre", "show", "episode",
    "connection", "segments", "tz", "pod_max_ads", "cb", "ip", "user_agent",
]  # fmt: skip
_QUERY_VALUES = st.one_of(
    st.sampled_from(
        ["", "0", "1", "007", "2147483647", "2147483648", "-3", "1_0", " 5", "٣", "²", "US", "USA"]
    ),
    st.text(max_size=5),
    st.text(min_size=60, max_size=70),
    st.integers(0, 10**12).map(str),
)


@given(st.dictionaries(st.sampled_from(_QUERY_KEYS), _QUERY_VALUES, max_size=8))
def test_the_plain_query_fast_path_agrees_with_the_model(params):
    """``GET /vast``'s hand parser takes a query only when the model would give the same fields."""
    from pydantic import ValidationError

    from backbeat.api.hot_paths import SINGLE_AD, plain_vast_fields
    from backbeat.api.routes.serving import VastQuery

    fast = plain_vast_fields(params)
    try:
        query = VastQuery.model_validate(params)
    except ValidationError:
        assert fast is None  # the model rejects it: the fast path must leave it to the model
        return
    if fast is not None:
        model = query.fields()
        assert fast == {key: value for key, value in model.items() if key in fast}
        assert all(value is None for key, value in model.items() if key not in fast)  # tz, pod
        assert query.pod() == SINGLE_AD


def test_a_typical_player_query_takes_the_fast_path_and_a_pod_does_not():
    from backbeat.api.hot_paths import plain_vast_fields, query_params

    fields = plain_vast_fields(query_params(b"slot=3&listener=l-9&country=se&device=Car&cb=1"))
    assert fields is not None
    assert (fields["slot"], fields["country"], fields["device"]) == (3, "se", "Car")
    assert fields["segments"] == [""] and "cb" not in fields
    assert plain_vast_fields(query_params(b"slot=3&pod_max_ads=2")) is None
    assert plain_vast_fields(query_params(b"slot=3&tz=Europe/Paris")) is None
