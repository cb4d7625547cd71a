"""The dashboard without a browser: sign-in, sessions, CSRF, CSP, isolation, escaping, numbers."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from ui_support import SIGNING_KEY, csrf_of, page_csrf, sign_in

from backbeat.ui.session import COOKIE
from factories import (
    ADMIN,
    ADMIN_KEY,
    advertiser_key,
    book_servable,
    create_advertiser,
    create_campaign,
    create_line_item,
)

PAGES = ("/ui/", "/ui/campaigns/1", "/ui/line-items/1", "/ui/campaigns/new", "/ui/podcasts")


def bearer(headers: dict[str, str]) -> str:
    return headers["Authorization"].removeprefix("Bearer ")


def json_block(html: str, block_id: str) -> dict:
    found = re.search(
        rf'<script type="application/json" id="{block_id}">(.*?)</script>', html, re.S
    )
    assert found, f"no JSON block {block_id}"
    return json.loads(found.group(1))


def two_advertisers(client) -> dict:
    a, b = create_advertiser(client), create_advertiser(client)
    campaign_a = create_campaign(client, a["id"], name="Alpha summer")
    campaign_b = create_campaign(client, b["id"], name="Bravo secret launch")
    return {
        "a": a,
        "b": b,
        "campaign_a": campaign_a,
        "campaign_b": campaign_b,
        "item_a": create_line_item(client, campaign_a["id"], name="Alpha item"),
        "item_b": create_line_item(client, campaign_b["id"], name="Bravo item"),
        "key_a": advertiser_key(client, a["id"]),
        "key_b": advertiser_key(client, b["id"]),
    }


# --- sign-in and sessions ------------------------------------------------------------


@pytest.mark.parametrize("path", PAGES)
def test_pages_redirect_to_sign_in_without_a_session(client, path):
    response = client.get(path, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/login"


def test_sign_in_page_has_one_key_field_and_a_strict_csp(client):
    response = client.get("/ui/login")
    assert response.status_code == 200
    inputs = re.findall(r"<input[^>]*>", response.text)
    visible = [tag for tag in inputs if 'type="hidden"' not in tag]
    assert len(visible) == 1 and 'name="api_key"' in visible[0]
    policy = response.headers["content-security-policy"]
    directives = dict(part.strip().split(" ", 1) for part in policy.split(";"))
    assert directives["script-src"] == "'self'"
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert directives["frame-ancestors"] == "'none'"
    assert response.headers["x-frame-options"] == "DENY"
    # every script is an external static file or a JSON data block
    for tag in re.findall(r"<script[^>]*>", response.text):
        assert "src=" in tag or 'type="application/json"' in tag


def test_session_cookie_is_httponly_strict_and_holds_no_key(client):
    sign_in(client, ADMIN_KEY)
    cookie = next(c for c in client.cookies.jar if c.name == COOKIE)
    assert cookie.path == "/ui"
    assert cookie.has_nonstandard_attr("HttpOnly")
    assert cookie.get_nonstandard_attr("SameSite").lower() == "strict"
    body = base64.urlsafe_b64decode(cookie.value.split(".")[0] + "==")
    for secret in (ADMIN_KEY, SIGNING_KEY):
        assert secret.encode() not in body and secret not in cookie.value


def test_wrong_key_and_forged_sign_in_form_are_refused(client):
    page = client.get("/ui/login")
    wrong = client.post("/ui/login", data={"api_key": "bb_nope", "csrf": csrf_of(page.text)})
    assert wrong.status_code == 401 and "Unknown or revoked API key" in wrong.text
    assert COOKIE not in client.cookies
    client.cookies.clear()
    forged = client.post("/ui/login", data={"api_key": ADMIN_KEY, "csrf": "x"})
    assert forged.status_code == 403 and COOKIE not in client.cookies


def test_tampered_or_foreign_cookie_is_no_session(client):
    sign_in(client, ADMIN_KEY)
    token = client.cookies[COOKIE]
    body, signature = token.split(".")
    promoted = base64.urlsafe_b64encode(
        base64.urlsafe_b64decode(body + "==").replace(b'"x":', b'"x":9')
    )
    for bad in (f"{promoted.decode().rstrip('=')}.{signature}", token[:-2] + "AA", "garbage"):
        client.cookies.set(COOKIE, bad, path="/ui")
        assert client.get("/ui/", follow_redirects=False).status_code == 303


def test_sign_out_ends_the_session(client):
    sign_in(client, ADMIN_KEY)
    response = client.post("/ui/logout", data={"csrf": page_csrf(client)}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/ui/login"
    assert COOKIE not in client.cookies
    assert client.get("/ui/", follow_redirects=False).status_code == 303


@pytest.mark.parametrize("who", ["admin", "advertiser"])
def test_a_cookie_copied_before_sign_out_is_refused_after_it(client, who):
    key = ADMIN_KEY if who == "admin" else bearer(two_advertisers(client)["key_a"])
    sign_in(client, key)
    copied = client.cookies[COOKIE]
    csrf = page_csrf(client)
    sign_in(client, key)
    other_session_of_same_key = client.cookies[COOKIE]
    client.cookies.set(COOKIE, copied, path="/ui")
    assert client.post("/ui/logout", data={"csrf": csrf}, follow_redirects=False).status_code == 303
    client.cookies.set(COOKIE, copied, path="/ui")  # replayed by whoever copied it
    assert client.get("/ui/", follow_redirects=False).status_code == 303
    again = client.post("/ui/logout", data={"csrf": csrf}, follow_redirects=False)
    assert again.status_code in (303, 401)
    # Signing out one browser leaves the key's other sessions alone.
    client.cookies.set(COOKIE, other_session_of_same_key, path="/ui")
    assert client.get("/ui/", follow_redirects=False).status_code == 200


def test_revoked_key_ends_its_sessions(client):
    booked = two_advertisers(client)
    minted = client.post(f"/v1/advertisers/{booked['a']['id']}/keys", headers=ADMIN).json()
    sign_in(client, minted["key"])
    assert client.get("/ui/").status_code == 200
    assert client.post(f"/v1/api-keys/{minted['id']}/revoke", headers=ADMIN).status_code in (
        200,
        204,
    )
    assert client.get("/ui/", follow_redirects=False).status_code == 303


def test_an_ad_inserter_key_cannot_sign_in(client):
    minted = client.post("/v1/api-keys", json={"role": "ssai"}, headers=ADMIN)
    assert minted.status_code == 201, minted.text
    page = client.get("/ui/login")
    refused = client.post(
        "/ui/login", data={"api_key": minted.json()["key"], "csrf": csrf_of(page.text)}
    )
    assert refused.status_code == 403 and COOKIE not in client.cookies
    assert client.get("/ui/", follow_redirects=False).status_code == 303


def test_the_admin_viewing_one_advertiser_still_books_publisher_tiers(client):
    booked = two_advertisers(client)
    sign_in(client, ADMIN_KEY)
    client.post(
        "/ui/switch", data={"csrf": page_csrf(client), "advertiser_id": str(booked["a"]["id"])}
    )
    path = f"/ui/campaigns/{booked['campaign_a']['id']}/line-items/new"
    made = client.post(
        path,
        data={
            "csrf": page_csrf(client, path),
            "name": "Takeover",
            "tier": "sponsorship",
            "cpm": "20",
            "targeting": "{}",
        },  # fmt: skip
        follow_redirects=False,
    )
    assert made.status_code == 303, made.text
    created = client.post(
        "/ui/campaigns/new",
        data={
            "csrf": page_csrf(client),
            "name": "Made while viewing A",
            "total_budget": "5",
            "start_at": "2026-09-01T00:00",
            "end_at": "2026-10-01T00:00",
        },  # fmt: skip
        follow_redirects=False,
    )
    assert created.status_code == 303, created.text
    campaign_id = int(created.headers["location"].rsplit("/", 1)[1])
    owner = client.get(f"/v1/campaigns/{campaign_id}", headers=ADMIN).json()["advertiser_id"]
    assert owner == booked["a"]["id"]
    # an advertiser key may not book that tier: the API's policy, through the same service
    client.cookies.clear()
    sign_in(client, bearer(booked["key_a"]))
    refused = client.post(
        path,
        data={
            "csrf": page_csrf(client, path),
            "name": "Takeover 2",
            "tier": "sponsorship",
            "cpm": "20",
            "targeting": "{}",
        },  # fmt: skip
    )
    assert refused.status_code == 422
    api = client.post(
        "/v1/line-items",
        json={
            "campaign_id": booked["campaign_a"]["id"],
            "name": "Takeover 3",
            "tier": "sponsorship",
            "cpm": "20",
        },  # fmt: skip
        headers=booked["key_a"],
    )
    assert api.status_code >= 400
    assert field_errors(refused.text).get("tier") == api.json()["reason"]


# --- CSRF ----------------------------------------------------------------------------


def test_form_posts_without_the_sessions_token_are_refused_and_change_nothing(client):
    booked = two_advertisers(client)
    sign_in(client, ADMIN_KEY)
    before = client.get("/v1/campaigns", headers=ADMIN).json()["count"]
    item = booked["item_a"]
    for token in (None, "", "forged", csrf_of(client.get("/ui/login").text)):
        data = {"name": "Sneaky", "advertiser_id": str(booked["a"]["id"]), "total_budget": "1",
                "start_at": "2026-01-01T00:00", "end_at": "2027-01-01T00:00"}  # fmt: skip
        if token is not None:
            data["csrf"] = token
        assert client.post("/ui/campaigns/new", data=data).status_code == 403
        pause = client.post(f"/ui/line-items/{item['id']}/pause", data={"csrf": token or ""})
        assert pause.status_code == 403
    assert client.get("/v1/campaigns", headers=ADMIN).json()["count"] == before
    assert client.get(f"/v1/line-items/{item['id']}", headers=ADMIN).json()["status"] == "active"


def test_csrf_token_is_bound_to_its_session(client):
    from fastapi.testclient import TestClient

    booked = two_advertisers(client)
    sign_in(client, ADMIN_KEY)
    stolen = page_csrf(client)
    with TestClient(client.app) as other:
        sign_in(other, ADMIN_KEY)
        item = booked["item_a"]
        refused = other.post(f"/ui/line-items/{item['id']}/pause", data={"csrf": stolen})
        assert refused.status_code == 403
        accepted = other.post(
            f"/ui/line-items/{item['id']}/pause",
            data={"csrf": page_csrf(other)},
            follow_redirects=False,
        )
        assert accepted.status_code == 303
    assert client.get(f"/v1/line-items/{item['id']}", headers=ADMIN).json()["status"] == "paused"


# --- isolation -----------------------------------------------------------------------


def test_an_advertiser_sees_only_its_own_campaigns(any_client):
    client = any_client
    booked = two_advertisers(client)
    sign_in(client, bearer(booked["key_a"]))
    overview = client.get("/ui/")
    assert "Alpha summer" in overview.text and "Bravo" not in overview.text
    assert client.get(f"/ui/campaigns/{booked['campaign_a']['id']}").status_code == 200
    b_campaign, b_item = booked["campaign_b"]["id"], booked["item_b"]["id"]
    for path in (
        f"/ui/campaigns/{b_campaign}",
        f"/ui/campaigns/{b_campaign}/edit",
        f"/ui/campaigns/{b_campaign}/delivery.csv",
        f"/ui/campaigns/{b_campaign}/line-items/new",
        f"/ui/line-items/{b_item}",
        f"/ui/line-items/{b_item}/edit",
    ):
        response = client.get(path)
        assert response.status_code == 404, path
        assert "Bravo" not in response.text
    token = page_csrf(client)
    for path, data in (
        (f"/ui/line-items/{b_item}/pause", {}),
        (f"/ui/campaigns/{b_campaign}/edit", {"name": "Hijacked"}),
        (f"/ui/line-items/{b_item}/edit", {"name": "Hijacked", "cpm": "1"}),
        (f"/ui/campaigns/{b_campaign}/line-items/new", {"name": "X", "tier": "house", "cpm": "0"}),
    ):
        assert client.post(path, data={"csrf": token, **data}).status_code == 404, path
    after = client.get(f"/v1/campaigns/{b_campaign}", headers=ADMIN).json()
    assert after["name"] == "Bravo secret launch" and after["version"] == 1
    assert (
        client.get(f"/v1/line-items?campaign_id={b_campaign}", headers=ADMIN).json()["count"] == 1
    )
    # admin-only pages and actions
    assert client.get("/ui/podcasts").status_code == 403
    assert client.post("/ui/switch", data={"csrf": token, "advertiser_id": ""}).status_code == 403


def test_the_admin_sees_all_and_can_switch_advertiser(client):
    booked = two_advertisers(client)
    sign_in(client, ADMIN_KEY)
    overview = client.get("/ui/")
    assert "Alpha summer" in overview.text and "Bravo secret launch" in overview.text
    switched = client.post(
        "/ui/switch",
        data={"csrf": page_csrf(client), "advertiser_id": str(booked["b"]["id"])},
        follow_redirects=False,
    )
    assert switched.status_code == 303
    narrowed = client.get("/ui/")
    assert "Bravo secret launch" in narrowed.text and "Alpha summer" not in narrowed.text
    assert client.get(f"/ui/campaigns/{booked['campaign_a']['id']}").status_code == 404
    client.post("/ui/switch", data={"csrf": page_csrf(client), "advertiser_id": ""})
    assert "Alpha summer" in client.get("/ui/").text


def test_no_key_in_the_logs(client, capfd, monkeypatch):
    import backbeat.ui.routes as routes

    logged: list[str] = []

    class Recorder:
        def __getattr__(self, level: str):
            return lambda event, **fields: logged.append(f"{level} {event} {fields!r}")

    monkeypatch.setattr(routes, "log", Recorder())
    booked = two_advertisers(client)
    capfd.readouterr()
    keys = (ADMIN_KEY, bearer(booked["key_a"]), "bb_wrong-key-attempt-0123456789")
    for key in keys:
        client.cookies.clear()
        page = client.get("/ui/login")
        client.post("/ui/login", data={"api_key": key, "csrf": csrf_of(page.text)})
        client.get("/ui/")
    out, err = capfd.readouterr()
    assert len([line for line in logged if "sign-in" in line]) == 3  # each sign-in is logged…
    for key in keys:
        assert all(key not in line for line in logged)  # …without its key
        assert key not in out and key not in err


def test_no_secret_in_any_rendered_page(client):
    booked = two_advertisers(client)
    for key in (ADMIN_KEY, bearer(booked["key_a"])):
        client.cookies.clear()
        sign_in(client, key)
        for path in ("/ui/", f"/ui/campaigns/{booked['campaign_a']['id']}",
                     f"/ui/line-items/{booked['item_a']['id']}", "/ui/campaigns/new",
                     f"/ui/line-items/{booked['item_a']['id']}/edit"):  # fmt: skip
            html = client.get(path).text
            for secret in (
                ADMIN_KEY,
                bearer(booked["key_a"]),
                bearer(booked["key_b"]),
                SIGNING_KEY,
            ):
                assert secret not in html, path


def test_names_are_escaped(client):
    advertiser = create_advertiser(client)
    hostile = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    campaign = create_campaign(client, advertiser["id"], name=hostile)
    sign_in(client, ADMIN_KEY)
    for path in ("/ui/", f"/ui/campaigns/{campaign['id']}"):
        html = client.get(path).text
        assert hostile not in html and "<img src=x" not in html
        assert "&lt;script&gt;alert(" in html


# --- booking -------------------------------------------------------------------------


def api_reason(client, path: str, body: dict) -> str:
    response = client.post(path, json=body, headers=ADMIN)
    assert response.status_code == 422, response.text
    return response.json()["reason"]


def field_errors(html: str) -> dict[str, str]:
    return dict(re.findall(r'id="error-([a-z_]+)" data-reason="([a-z0-9-]+)"', html))


@pytest.mark.parametrize(
    ("form", "api", "field"),
    [
        ({"cpm": "-1"}, {"cpm": "-1"}, "cpm"),
        ({"cpm": "1.1234567"}, {"cpm": "1.1234567"}, "cpm"),
        ({"targeting": '{"planets": ["mars"]}'}, {"targeting": {"planets": ["mars"]}}, "targeting"),
        ({"targeting": '{"countries": ["ZZ"]}'}, {"targeting": {"countries": ["ZZ"]}}, "targeting"),
        ({"goal_impressions": "0"}, {"goal_impressions": 0}, "goal_impressions"),
        (
            {"cap_count_0": "0"},
            {"frequency_caps": [{"count": 0, "period": "day"}]},
            "frequency_caps",
        ),
        ({"name": ""}, {"name": ""}, "name"),
    ],
)
def test_line_item_form_refuses_what_the_api_refuses_next_to_the_field(client, form, api, field):
    advertiser = create_advertiser(client)
    campaign = create_campaign(client, advertiser["id"])
    base = {"name": "Morning drive", "tier": "guaranteed", "cpm": "12.50", "targeting": "{}"}
    expected = api_reason(
        client,
        "/v1/line-items",
        {"campaign_id": campaign["id"], "name": "Morning drive", "tier": "guaranteed",
         "cpm": "12.50", **api},
    )  # fmt: skip
    sign_in(client, ADMIN_KEY)
    path = f"/ui/campaigns/{campaign['id']}/line-items/new"
    response = client.post(path, data={"csrf": page_csrf(client, path), **base, **form})
    assert response.status_code == 422
    assert field_errors(response.text).get(field) == expected
    # the entered values are kept and nothing was written
    assert (
        client.get(f"/v1/line-items?campaign_id={campaign['id']}", headers=ADMIN).json()["count"]
        == 0
    )


def test_invalid_json_targeting_is_reported_at_the_field(client):
    advertiser = create_advertiser(client)
    campaign = create_campaign(client, advertiser["id"])
    sign_in(client, ADMIN_KEY)
    path = f"/ui/campaigns/{campaign['id']}/line-items/new"
    data = {"csrf": page_csrf(client, path), "name": "X", "tier": "house", "cpm": "0",
            "targeting": '{"countries": ["US"'}  # fmt: skip
    response = client.post(path, data=data)
    assert response.status_code == 422
    assert field_errors(response.text) == {"targeting": "invalid-json"}
    assert "{&#34;countries&#34;: [&#34;US&#34;" in response.text  # kept, escaped


def test_campaign_end_before_start_is_shown_at_end_at(client):
    advertiser = create_advertiser(client)
    expected = api_reason(
        client,
        "/v1/campaigns",
        {"advertiser_id": advertiser["id"], "name": "Backwards", "total_budget": "10",
         "start_at": "2026-03-01T00:00:00Z", "end_at": "2026-02-01T00:00:00Z"},
    )  # fmt: skip
    sign_in(client, ADMIN_KEY)
    data = {"csrf": page_csrf(client), "advertiser_id": str(advertiser["id"]), "name": "Backwards",
            "total_budget": "10", "start_at": "2026-03-01T00:00", "end_at": "2026-02-01T00:00"}  # fmt: skip
    response = client.post("/ui/campaigns/new", data=data)
    assert response.status_code == 422
    assert field_errors(response.text) == {"end_at": expected}


def test_book_edit_pause_and_activate_from_the_dashboard(client):
    advertiser = create_advertiser(client)
    key = advertiser_key(client, advertiser["id"])
    sign_in(client, bearer(key))
    token = page_csrf(client)
    created = client.post(
        "/ui/campaigns/new",
        data={
            "csrf": token,
            "name": "Podcast push",
            "total_budget": "2500.50",
            "start_at": "2026-09-01T00:00",
            "end_at": "2026-10-01T00:00",
            "cap_count_0": "4",
            "cap_length_0": "1",
            "cap_period_0": "day",
        },  # fmt: skip
        follow_redirects=False,
    )
    assert created.status_code == 303
    campaign_id = int(created.headers["location"].rsplit("/", 1)[1])
    campaign = client.get(f"/v1/campaigns/{campaign_id}", headers=key).json()
    assert campaign["advertiser_id"] == advertiser["id"]
    assert campaign["total_budget"] == "2500.50"
    assert campaign["start_at"].startswith("2026-09-01T00:00:00")
    assert campaign["frequency_caps"] == [{"count": 4, "period": "day", "length": 1}]

    path = f"/ui/campaigns/{campaign_id}/line-items/new"
    made = client.post(
        path,
        data={
            "csrf": token,
            "name": "Drive time",
            "tier": "guaranteed",
            "cpm": "18",
            "goal_impressions": "50000",
            "pacing": "even",
            "targeting": '{"countries": ["US"], "dayparts": [7, 8, 9]}',
        },  # fmt: skip
        follow_redirects=False,
    )
    assert made.status_code == 303
    item_id = int(made.headers["location"].rsplit("/", 1)[1])
    item = client.get(f"/v1/line-items/{item_id}", headers=key).json()
    assert item["targeting"] == {"countries": ["US"], "dayparts": [7, 8, 9]}
    assert (item["cpm"], item["goal_impressions"], item["budget"]) == ("18.00", 50000, None)

    edit = client.get(f"/ui/line-items/{item_id}/edit")
    version = re.search(r'name="version" value="(\d+)"', edit.text).group(1)
    saved = client.post(
        f"/ui/line-items/{item_id}/edit",
        data={
            "csrf": token,
            "version": version,
            "name": "Drive time US",
            "tier": "guaranteed",
            "cpm": "18",
            "goal_impressions": "60000",
            "budget": "",
            "daily_budget": "100",
            "pacing": "even",
            "targeting": '{"countries": ["US"]}',
        },  # fmt: skip
        follow_redirects=False,
    )
    assert saved.status_code == 303, saved.text[-1500:]
    item = client.get(f"/v1/line-items/{item_id}", headers=key).json()
    assert (item["name"], item["goal_impressions"], item["daily_budget"]) == (
        "Drive time US",
        60000,
        "100.00",
    )
    # a stale version is refused like an If-Match mismatch
    stale = client.post(
        f"/ui/line-items/{item_id}/edit",
        data={"csrf": token, "version": version, "name": "Lost update", "cpm": "18"},
    )
    assert stale.status_code == 422 and field_errors(stale.text) == {"form": "version-mismatch"}

    creative = client.post(
        f"/ui/line-items/{item_id}/creatives",
        data={"csrf": token, "name": "Spot", "media_url": "", "duration_ms": "30000"},
    )
    assert (
        creative.status_code == 422 and field_errors(creative.text)["media_url"] == "missing-media"
    )
    creative = client.post(
        f"/ui/line-items/{item_id}/creatives",
        data={
            "csrf": token,
            "name": "Spot",
            "media_url": "https://cdn.example.com/a.mp3",
            "mime_type": "audio/mpeg",
            "duration_ms": "30000",
        },  # fmt: skip
        follow_redirects=False,
    )
    assert creative.status_code == 303
    creative_id = client.get(f"/v1/creatives?line_item_id={item_id}", headers=key).json()["data"][
        0
    ]["id"]
    edit = client.get(f"/ui/creatives/{creative_id}/edit")
    version = re.search(r'name="version" value="(\d+)"', edit.text).group(1)
    bad = client.post(
        f"/ui/creatives/{creative_id}/edit",
        data={
            "csrf": token,
            "version": version,
            "name": "Spot",
            "duration_ms": "30000",
            "media_url": "ftp://cdn.example.com/a.mp3",
        },  # fmt: skip
    )
    assert bad.status_code == 422 and field_errors(bad.text) == {"media_url": "invalid-url"}
    saved = client.post(
        f"/ui/creatives/{creative_id}/edit",
        data={
            "csrf": token,
            "version": version,
            "name": "Spot v2",
            "duration_ms": "15000",
            "media_url": "https://cdn.example.com/b.mp3",
            "mime_type": "audio/mpeg",
            "categories": "IAB1, IAB2-3",
        },  # fmt: skip
        follow_redirects=False,
    )
    assert saved.status_code == 303
    after = client.get(f"/v1/creatives/{creative_id}", headers=key).json()
    assert (after["name"], after["duration_ms"], after["media_url"], after["categories"]) == (
        "Spot v2", 15000, "https://cdn.example.com/b.mp3", ["IAB1", "IAB2-3"])  # fmt: skip

    for action, status in (("pause", "paused"), ("activate", "active")):
        response = client.post(
            f"/ui/line-items/{item_id}/{action}", data={"csrf": token}, follow_redirects=False
        )
        assert response.status_code == 303
        assert client.get(f"/v1/line-items/{item_id}", headers=key).json()["status"] == status
        response = client.post(
            f"/ui/campaigns/{campaign_id}/{action}", data={"csrf": token}, follow_redirects=False
        )
        assert client.get(f"/v1/campaigns/{campaign_id}", headers=key).json()["status"] == status


# --- numbers -------------------------------------------------------------------------


def test_campaign_chart_table_and_csv_carry_the_reports_numbers(any_client, clock):
    client = any_client
    start = datetime.fromtimestamp(clock.now, UTC).replace(minute=0, second=0) - timedelta(hours=5)
    booked = book_servable(client, line_item={"tier": "guaranteed", "cpm": "4.00"})
    campaign_id = booked["campaign"]["id"]
    client.patch(
        f"/v1/campaigns/{campaign_id}",
        json={"start_at": start.isoformat(), "end_at": (start + timedelta(days=2)).isoformat()},
        headers=ADMIN,
    )
    client.patch(f"/v1/line-items/{booked['line_item']['id']}", json={"goal_impressions": 1000},
                 headers=ADMIN)  # fmt: skip
    client.app.state.services.ad_server.refresh(force=True)
    fired = {}
    for hours_ago, listeners in ((3, 4), (1, 2), (0, 3)):
        clock.now = start.timestamp() + (5 - hours_ago) * 3600 + 60
        for n in range(listeners):
            decision = client.post(
                "/v1/decisions",
                json={"slot_id": booked["slot"]["id"], "listener": f"l{hours_ago}-{n}"},
            ).json()
            for event in ("impression", "start", "complete") if n % 2 == 0 else ("impression",):
                assert client.get(decision["tracking"][event]).status_code == 204
            fired[hours_ago] = fired.get(hours_ago, 0) + 1
    assert client.post("/v1/reports/delivery/run", headers=ADMIN).status_code == 200
    api = client.get(
        "/v1/reports/delivery",
        params={
            "campaign_id": campaign_id,
            "from": start.isoformat(),
            "to": (start + timedelta(hours=6)).isoformat(),
        },  # fmt: skip
        headers=ADMIN,
    ).json()["rows"]
    by_hour = {row["period_start"][:13]: row["impressions"] for row in api}
    assert sorted(by_hour.values()) == sorted(fired.values())  # the API agrees with what was fired

    sign_in(client, ADMIN_KEY)
    page = client.get(f"/ui/campaigns/{campaign_id}?granularity=hour")
    assert page.status_code == 200
    chart = json_block(page.text, "delivery-chart-data")
    per_period = chart["series"]["Delivered per period"]
    cumulative = chart["series"]["Delivered (cumulative)"]
    assert len(chart["labels"]) == 6
    expected = [by_hour.get((start + timedelta(hours=h)).isoformat()[:13], 0) for h in range(6)]
    assert per_period == expected
    assert cumulative == [sum(expected[: h + 1]) for h in range(6)]
    planned = chart["series"]["Planned (cumulative)"]
    assert planned == sorted(planned) and 0 < planned[-1] < 1000  # along the curve, in flight
    funnel = json_block(page.text, "funnel-chart-data")["series"]["Listeners"]
    assert funnel[0] == sum(row["impressions"] for row in api)
    assert funnel[1] == sum(row["starts"] for row in api)
    assert funnel[5] == sum(row["completes"] for row in api)
    spend = sum(Decimal(row["spend"]) for row in api)
    assert f"<strong>{spend * 1000 / funnel[0]:.2f}</strong>" in page.text  # eCPM
    # the table holds the same numbers
    cells = re.findall(r'<td data-col="impressions">(\d+)</td>', page.text)
    assert [int(c) for c in cells] == expected
    # and the CSV is the API's rows
    response = client.get(f"/ui/campaigns/{campaign_id}/delivery.csv?granularity=hour")
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [(r["period_start"][:13], int(r["impressions"]), r["spend"]) for r in rows] == [
        (row["period_start"][:13], row["impressions"], row["spend"]) for row in api
    ]


def test_line_item_frequency_chart_matches_the_api_and_what_was_fired(any_client, clock):
    client = any_client
    booked = book_servable(client, line_item={"tier": "guaranteed", "cpm": "4.00"})
    item_id = booked["line_item"]["id"]
    client.app.state.services.ad_server.refresh(force=True)
    heard = {"heavy": 4, "mid": 2, "light-a": 1, "light-b": 1}  # hand-worked: 1,1,2,4
    for listener, times in heard.items():
        for _ in range(times):
            decision = client.post(
                "/v1/decisions", json={"slot_id": booked["slot"]["id"], "listener": listener}
            ).json()
            assert decision["line_item_id"] == item_id
            for _ in range(2):  # a pixel fired twice counts once
                assert client.get(decision["tracking"]["impression"]).status_code == 204
    assert client.post("/v1/reports/delivery/run", headers=ADMIN).status_code == 200
    api = client.get("/v1/reports/frequency", params={"line_item_id": item_id}, headers=ADMIN)
    body = api.json()
    assert body["reach"] == 4 and body["impressions"] == 8 and body["average_frequency"] == 2.0
    listeners = [b["listeners"] for b in body["buckets"]]
    assert listeners[:5] == [2, 1, 0, 1, 0] and sum(listeners) == 4

    sign_in(client, ADMIN_KEY)
    page = client.get(f"/ui/line-items/{item_id}")
    chart = json_block(page.text, "frequency-chart-data")
    assert chart["series"]["Listeners"] == listeners
    assert chart["labels"][0] == "1" and chart["labels"][-1] == "10+"
    assert "Reach 4 listeners, 2.0 impressions each" in page.text


def test_overview_shows_no_fill_reasons_from_the_decision_log(sqlite_url, tmp_path, clock):
    from fastapi.testclient import TestClient
    from ui_support import make_settings

    from backbeat.api.app import create_app
    from factories import create_slot

    settings = make_settings(sqlite_url, tmp_path / "var", decision_log_sample=1.0)
    with TestClient(create_app(settings, clock=clock)) as client:
        slot = create_slot(client, name="Empty break")
        client.app.state.services.ad_server.refresh(force=True)
        reasons = [
            client.post("/v1/decisions", json={"slot_id": slot["id"], "listener": f"l{n}"}).json()
            for n in range(7)
        ]
        assert all(not r.get("line_item_id") for r in reasons)
        client.app.state.services.event_log.flush()
        sign_in(client, ADMIN_KEY)
        html = client.get("/ui/").text
        table = html[html.index('id="no-fill"') :]
        row = re.search(r"<td>Empty break</td>.*?</tr>", table, re.S).group(0)
        assert re.search(r'<td class="num">7</td>', row), row
        assert re.search(r"no-[a-z-]+: 7", row) or re.search(r"[a-z-]+: 7", row), row


# --- live forecast -------------------------------------------------------------------


def test_live_forecast_is_the_forecast_apis_answer(client, clock):
    import time

    advertiser = create_advertiser(client)
    start = datetime.fromtimestamp(clock.now, UTC) + timedelta(hours=1)
    campaign = create_campaign(
        client, advertiser["id"], start_at=start.isoformat(),
        end_at=(start + timedelta(days=3)).isoformat(),
    )  # fmt: skip
    sign_in(client, ADMIN_KEY)
    params = {"campaign_id": campaign["id"], "tier": "guaranteed", "cpm": "9.50",
              "targeting": '{"countries": ["US"]}', "cap_count_0": "2", "cap_period_0": "day"}  # fmt: skip
    deadline = time.monotonic() + 30
    while (answer := client.get("/ui/forecast.json", params=params)).status_code == 503:
        assert time.monotonic() < deadline, answer.text
        time.sleep(0.2)
    assert answer.status_code == 200, answer.text
    mine = answer.json()
    assert mine["start_at"] == start.isoformat()
    draft = {"start_at": mine["start_at"], "end_at": mine["end_at"], "tier": "guaranteed",
             "cpm": "9.50", "targeting": {"countries": ["US"]},
             "frequency_caps": [{"count": 2, "period": "day", "length": 1}]}  # fmt: skip
    api = client.post("/v1/forecasts", json=draft, headers=ADMIN)
    assert api.status_code == 200, api.text
    for name in ("matched", "possible", "available", "reach"):
        assert mine[name] == round(api.json()[name]["value"])
    # bad targeting is refused with the API's reason; another advertiser's campaign is a 404
    bad = client.get("/ui/forecast.json", params={**params, "targeting": '{"planets": []}'})
    assert bad.status_code == 422
    assert bad.json()["reason"] == api_reason(
        client, "/v1/forecasts", {**draft, "targeting": {"planets": []}}
    )
    other = create_campaign(client, create_advertiser(client)["id"])
    client.cookies.clear()
    sign_in(client, bearer(advertiser_key(client, advertiser["id"])))
    hidden = client.get("/ui/forecast.json", params={**params, "campaign_id": other["id"]})
    assert hidden.status_code == 404


# --- promotion -----------------------------------------------------------------------


def test_promotion_pages_show_only_the_callers_campaigns(client):
    booked = two_advertisers(client)

    def promote(advertiser: dict, name: str) -> dict:
        body = {"advertiser_id": advertiser["id"], "name": name, "item_id": "rel-1",
                "artist_id": "art-1", "start_at": "2026-09-01T00:00:00Z",
                "end_at": "2026-10-01T00:00:00Z", "budget": "100", "price": "2.00"}  # fmt: skip
        response = client.post("/v1/promotion-campaigns", json=body, headers=ADMIN)
        assert response.status_code == 201, response.text
        return response.json()

    mine, theirs = promote(booked["a"], "Alpha album"), promote(booked["b"], "Bravo single")
    sign_in(client, bearer(booked["key_a"]))
    listing = client.get("/ui/promotion")
    assert listing.status_code == 200
    assert "Alpha album" in listing.text and "Bravo single" not in listing.text
    assert client.get(f"/ui/promotion/{mine['id']}").status_code == 200
    hidden = client.get(f"/ui/promotion/{theirs['id']}")
    assert hidden.status_code == 404 and "Bravo" not in hidden.text


# --- podcasts ------------------------------------------------------------------------


def test_podcasts_page_sums_downloads_by_episode_day_and_app(client):
    from datetime import date

    from backbeat.measurement.models import DownloadDaily

    rows = [  # day, show, episode, app, downloads: split by app
        (date(2026, 9, 1), "show-a", "ep-1", "Apple Podcasts", 30),
        (date(2026, 9, 1), "show-a", "ep-1", "Spotify", 12),
        (date(2026, 9, 2), "show-a", "ep-1", "Spotify", 5),
        (date(2026, 9, 2), "show-b", "ep-9", "Overcast", 7),
    ]
    with client.app.state.services.sessions() as session:
        session.add_all(
            DownloadDaily(date=d, show_id=s, episode_id=e, app=a, downloads=n)
            for d, s, e, a, n in rows
        )
        session.commit()
    sign_in(client, ADMIN_KEY)
    html = client.get("/ui/podcasts").text
    episodes = json_block(html, "episodes-chart-data")
    assert episodes["labels"] == ["2026-09-01", "2026-09-02"]
    assert episodes["series"] == {"ep-1": [42, 5], "ep-9": [0, 7]}
    apps = json_block(html, "apps-chart-data")
    assert dict(zip(apps["labels"], apps["series"]["Downloads"], strict=True)) == {
        "Apple Podcasts": 30, "Spotify": 17, "Overcast": 7,
    }  # fmt: skip
    listed = list(csv.reader(io.StringIO(client.get("/ui/podcasts/downloads.csv").text)))
    assert listed[0] == ["date", "show_id", "episode_id", "app", "downloads"]
    assert sorted(tuple(r) for r in listed[1:]) == sorted(
        (d.isoformat(), s, e, a, str(n)) for d, s, e, a, n in rows
    )
    only_b = json_block(client.get("/ui/podcasts?show=show-b").text, "episodes-chart-data")
    assert only_b["series"] == {"ep-9": [7]}


def test_podcasts_page_shows_the_latest_counts_exclusions_by_reason(client):
    from collections import Counter
    from fractions import Fraction

    from backbeat.measurement.downloads.catalog import Catalog, Episode
    from backbeat.measurement.downloads.database import replace_days
    from backbeat.measurement.downloads.report import DownloadReport

    sign_in(client, ADMIN_KEY)
    assert "No download count has been written" in client.get("/ui/podcasts").text
    catalog = Catalog([Episode("ep-1", "show-a", "/a/ep-1.mp3", 10**7, 100, Fraction(1800))])

    def count(excluded: dict[str, int], rejected: dict[str, int], day: str) -> None:
        report = DownloadReport(
            downloads=Counter({(day, "ep-1", None): 40}),
            excluded=Counter(excluded),
            rejected=Counter(rejected),
            days=Counter({day: 40 + sum(excluded.values())}),
            lines=40 + sum(excluded.values()) + sum(rejected.values()),
            accepted=40,
        )
        with client.app.state.services.sessions() as session:
            replace_days(session=session, report=report, catalog=catalog)
            session.commit()

    count({"bot-user-agent": 3}, {}, "2026-09-01")
    count({"bot-user-agent": 9, "too-few-bytes": 21, "pre-fetch": 2}, {"unparseable": 4},
          "2026-09-02")  # fmt: skip
    html = client.get("/ui/podcasts").text
    table = re.search(r'<table id="excluded-requests">(.*?)</table>', html, re.S).group(1)
    rows = re.findall(r"<th>([^<]+)</th><td class=\"num\">([\d,]+)</td>", table)
    assert rows == [("too-few-bytes", "21"), ("bot-user-agent", "9"), ("pre-fetch", "2")]
    assert "<th>unparseable</th>" in html and "76 log lines for 2026-09-02" in html
