"""Versions and ETags make concurrent writes safe; status changes; archive is final."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from fastapi.testclient import TestClient
from test_validation import assert_problem, catalog_state, quiet_errors  # noqa: F401

from backbeat.api.app import create_app
from backbeat.catalog.auth import ADMIN as ADMIN_PRINCIPAL
from backbeat.catalog.service import CAMPAIGNS, get_object, update_object
from backbeat.db import make_engine, make_session_factory, migrate
from factories import ADMIN, book_servable, create_creative, create_line_item


def test_etags_follow_the_version_and_a_stale_if_match_changes_nothing(client):
    booked = book_servable(client)
    url = f"/v1/campaigns/{booked['campaign']['id']}"
    created = client.get(url, headers=ADMIN)
    assert created.headers["etag"] == '"1"' and created.json()["version"] == 1

    first = client.patch(url, json={"name": "v2"}, headers={**ADMIN, "If-Match": '"1"'})
    assert first.status_code == 200 and first.headers["etag"] == '"2"'
    assert first.json()["version"] == 2

    before = catalog_state(client)
    stored = client.get(url, headers=ADMIN).json()
    for stale in ('"1"', "1", 'W/"1"', '"3"'):
        response = client.patch(
            url, json={"name": "lost update"}, headers={**ADMIN, "If-Match": stale}
        )
        assert_problem(response, 412, "version-mismatch", stale)
        assert response.json()["current_version"] == 2
    assert client.get(url, headers=ADMIN).json() == stored
    assert catalog_state(client) == before

    for if_match, expected in (('W/"2"', 3), ("3", 4), ("*", 5)):
        response = client.patch(
            url, json={"name": f"v{expected}"}, headers={**ADMIN, "If-Match": if_match}
        )
        assert response.status_code == 200 and response.headers["etag"] == f'"{expected}"', if_match
    # status changes are writes too: they move the ETag, and a no-op does not
    paused = client.post(f"{url}/pause", headers=ADMIN)
    assert paused.headers["etag"] == '"6"' and paused.json()["status"] == "paused"
    assert client.post(f"{url}/pause", headers=ADMIN).headers["etag"] == '"6"'
    assert client.get(url, headers=ADMIN).json()["name"] == "v5"


@pytest.mark.usefixtures("quiet_errors")
def test_racing_updates_never_lose_a_write(settings, clock):
    # A client of its own that reports server errors as responses, so a race is observable.
    with TestClient(create_app(settings, clock=clock), raise_server_exceptions=False) as client:
        booked = book_servable(client)
        url = f"/v1/line-items/{booked['line_item']['id']}"
        results: Counter[int] = Counter()
        for round_ in range(8):
            version = client.get(url, headers=ADMIN).json()["version"]
            barrier = threading.Barrier(3)
            statuses: list[int] = []

            def write(
                n: int,
                version: int = version,
                barrier: threading.Barrier = barrier,
                statuses: list[int] = statuses,
            ) -> None:
                barrier.wait()
                response = client.patch(
                    url, json={"cpm": f"{n}.00"}, headers={**ADMIN, "If-Match": f'"{version}"'}
                )
                statuses.append(response.status_code)

            threads = [threading.Thread(target=write, args=(round_ * 3 + n + 1,)) for n in range(3)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=60)
            results.update(statuses)
            assert len(statuses) == 3
            assert statuses.count(200) == 1, statuses  # each writer sent the same If-Match
            assert set(statuses) <= {200, 409, 412}, statuses
            after = client.get(url, headers=ADMIN).json()
            assert after["version"] == version + 1
        assert results[200] == 8


def test_a_stale_write_is_a_conflict(database_url):
    from backbeat.catalog.models import Advertiser, Campaign
    from backbeat.errors import Conflict

    migrate(database_url)
    engine = make_engine(database_url)
    sessions = make_session_factory(engine)
    try:
        with sessions() as session:
            advertiser = Advertiser(name="Acme")
            session.add(advertiser)
            session.flush()
            from datetime import UTC, datetime
            from decimal import Decimal

            campaign = Campaign(
                advertiser_id=advertiser.id,
                name="c",
                start_at=datetime(2026, 1, 1, tzinfo=UTC),
                end_at=datetime(2027, 1, 1, tzinfo=UTC),
                total_budget=Decimal(1),
                currency="USD",
            )
            session.add(campaign)
            session.commit()
            campaign_id = campaign.id
        slow, fast = sessions(), sessions()
        try:
            # the slow writer reads version 1 and holds it ...
            held = get_object(
                session=slow, resource=CAMPAIGNS, object_id=campaign_id, principal=ADMIN_PRINCIPAL
            )
            assert held.version == 1
            # ... while a fast writer commits version 2
            update_object(
                session=fast,
                resource=CAMPAIGNS,
                object_id=campaign_id,
                changes={"name": "fast"},
                principal=ADMIN_PRINCIPAL,
                expected_version=1,
            )
            fast.commit()
            with pytest.raises(Conflict) as raised:
                update_object(
                    session=slow,
                    resource=CAMPAIGNS,
                    object_id=campaign_id,
                    changes={"name": "slow"},
                    principal=ADMIN_PRINCIPAL,
                    expected_version=1,
                )
            assert (raised.value.status, raised.value.reason) == (409, "concurrent-update")
        finally:
            slow.close()
            fast.close()
        with sessions() as session:
            assert session.get(Campaign, campaign_id).name == "fast"
    finally:
        engine.dispose()


def vast_fills(client, slot_id: int, listener: str = "l") -> bool:
    client.app.state.services.ad_server.refresh()
    response = client.get(f"/vast?slot={slot_id}&listener={listener}")
    assert response.status_code == 200
    return b"<Ad " in response.content


def test_pause_stops_serving_activate_resumes_and_archive_is_final(client):
    booked = book_servable(client)
    slot_id = booked["slot"]["id"]
    assert vast_fills(client, slot_id)
    for path, key in [
        ("line-items", "line_item"),
        ("campaigns", "campaign"),
        ("advertisers", "advertiser"),
        ("creatives", "creative"),
        ("slots", "slot"),
    ]:
        url = f"/v1/{path}/{booked[key]['id']}"
        assert client.post(f"{url}/pause", headers=ADMIN).json()["status"] == "paused"
        if path == "slots":
            client.app.state.services.ad_server.refresh()
            assert_problem(client.get(f"/vast?slot={slot_id}&listener=l"), 404, "slot-not-found")
        else:
            assert not vast_fills(client, slot_id), path
        assert client.post(f"{url}/activate", headers=ADMIN).json()["status"] == "active"
        assert vast_fills(client, slot_id), path

    # archiving is final: no serving, no reactivation, no edits, no children
    item_url = f"/v1/line-items/{booked['line_item']['id']}"
    archived = client.post(f"{item_url}/archive", headers=ADMIN)
    assert archived.status_code == 200 and archived.json()["status"] == "archived"
    assert not vast_fills(client, slot_id)
    before = catalog_state(client)
    stored = client.get(item_url, headers=ADMIN).json()
    assert_problem(client.post(f"{item_url}/activate", headers=ADMIN), 409, "archived")
    assert_problem(client.post(f"{item_url}/pause", headers=ADMIN), 409, "archived")
    assert_problem(client.patch(item_url, json={"cpm": "99"}, headers=ADMIN), 409, "archived")
    body = {
        "line_item_id": booked["line_item"]["id"],
        "name": "late",
        "media_url": "https://a.example/x.mp3",
        "duration_ms": 5000,
    }
    assert_problem(client.post("/v1/creatives", json=body, headers=ADMIN), 409, "parent-archived")
    assert client.post(f"{item_url}/archive", headers=ADMIN).status_code == 200  # idempotent
    assert client.get(item_url, headers=ADMIN).json() == stored
    assert catalog_state(client) == before
    assert not vast_fills(client, slot_id)

    # a sibling under the same campaign still serves; archiving the campaign stops it
    sibling = create_line_item(client, booked["campaign"]["id"])
    create_creative(client, sibling["id"])
    assert vast_fills(client, slot_id)
    assert (
        client.post(f"/v1/campaigns/{booked['campaign']['id']}/archive", headers=ADMIN).status_code
        == 200
    )
    assert not vast_fills(client, slot_id)
    assert_problem(
        client.post(
            "/v1/line-items",
            json={
                "campaign_id": booked["campaign"]["id"],
                "name": "x",
                "tier": "house",
                "cpm": "0",
            },
            headers=ADMIN,
        ),
        409,
        "parent-archived",
    )
