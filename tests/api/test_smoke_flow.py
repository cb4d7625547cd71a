"""One booked line item served as valid VAST, tracked, and counted."""

from __future__ import annotations

from urllib.parse import urlsplit

from factories import ADMIN, book_servable
from vast_schema import assert_valid_vast

NS = {"v": "http://www.iab.com/VAST"}


def test_book_serve_track_count(client):
    booked = book_servable(client, line_item={"targeting": {"countries": ["US"]}})
    slot_id = booked["slot"]["id"]
    response = client.get(f"/vast?slot={slot_id}&listener=l1&country=US&device=mobile")
    assert response.status_code == 200
    root = assert_valid_vast(response.content)
    impression = root.findtext("v:Ad/v:InLine/v:Impression", namespaces=NS).strip()
    parts = urlsplit(impression)
    assert client.get(f"{parts.path}?{parts.query}").status_code == 204
    assert client.get(f"{parts.path}?{parts.query}").status_code == 204  # repeated pixel
    run = client.post("/v1/reports/delivery/run", headers=ADMIN)
    assert run.status_code == 200, run.text
    report = client.get(
        "/v1/reports/delivery",
        params={"campaign_id": booked["campaign"]["id"], "from": "2026-01-01", "to": "2027-01-01"},
        headers=ADMIN,
    ).json()
    assert [row["impressions"] for row in report["rows"]] == [1]
    # Alone in a second-price auction, the CPM 10.00 bid pays the slot's 1.00 reserve.
    assert report["rows"][0]["spend"] == "0.001"


def test_no_fill_is_valid_empty_vast(client):
    booked = book_servable(client, line_item={"targeting": {"countries": ["US"]}})
    response = client.get(f"/vast?slot={booked['slot']['id']}&listener=l1&country=FR")
    root = assert_valid_vast(response.content)
    assert root.find("v:Ad", NS) is None
