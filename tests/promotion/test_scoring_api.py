"""POST /v1/promotion-scores: expected values best first, exclusions with reasons, bad input."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

from backbeat.promotion import features
from backbeat.promotion.dataset import data_dir, models_dir, read_columns
from backbeat.promotion.ids import format_id
from backbeat.promotion.profiles import load_profiles
from backbeat.promotion.registry import CHAMPION, Registry
from backbeat.promotion.training import load_model
from factories import ADMIN, advertiser_key, create_advertiser
from support.promotion import NOW

DAY = 86_400


@pytest.fixture
def database_url(tmp_path):
    """Scoring reads memory only: SQLite suffices (campaigns and reports run on both)."""
    return f"sqlite:///{tmp_path / 'backbeat.db'}"


def wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.05)


@pytest.fixture
def world(small_world):
    """Promoted releases with their artists, and a listener who streamed one of them lately."""
    root = data_dir(small_world)
    releases = read_columns(root / "releases.parquet")
    promoted = np.flatnonzero(releases["promoted"])
    listens = read_columns(root / "listens")
    recent = listens["ts"] >= NOW - 21 * DAY
    streamed = {int(r) for r in listens["release"][recent]}
    exposures = read_columns(root / "exposures.parquet")
    for item in (int(r) for r in promoted if int(r) in streamed):
        for listener in np.unique(listens["listener"][recent & (listens["release"] == item)]):
            seen = set(exposures["release"][exposures["listener"] == listener].tolist())
            seen |= set(listens["release"][recent & (listens["listener"] == listener)].tolist()) - {
                item
            }
            others = [int(r) for r in promoted if int(r) != item and int(r) not in seen]
            if len(others) >= 4 and item not in seen:
                break
        else:
            continue
        break
    others = others[:4]
    return {
        "items": [
            (format_id("release", r), format_id("artist", int(releases["artist"][r])))
            for r in others
        ],
        "streamed": (
            format_id("release", item),
            format_id("artist", int(releases["artist"][item])),
        ),
        "listener": format_id("listener", int(listener)),
    }


def book(client, advertiser_id: int, item: tuple[str, str], **fields: Any) -> dict[str, Any]:
    body = {
        "advertiser_id": advertiser_id,
        "name": f"Promote {item[0]} {fields}",
        "item_type": "release",
        "item_id": item[0],
        "artist_id": item[1],
        "surfaces": ["home_feed"],
        "start_at": "2026-09-15T00:00:00Z",
        "end_at": "2026-10-15T00:00:00Z",
        "budget": "1000",
        "price_model": "cpm",
        "price": "20",
        **fields,
    }
    response = client.post("/v1/promotion-campaigns", json=body, headers=ADMIN)
    assert response.status_code == 201, response.text
    return response.json()


def score(client, listener: str, items: list[str], **fields: Any):
    body = {
        "listener_id": listener,
        "surface": "home_feed",
        "country": "US",
        "candidates": [{"item_id": item} for item in items],
        "explain": True,
        **fields,
    }
    return client.post("/v1/promotion-scores", json=body, headers=ADMIN)


def synced(client, count: int) -> None:
    scorer = client.app.state.promotion
    wait_for(lambda: sum(len(c) for c in scorer.snapshot.by_item.values()) >= count)


def test_scores_are_expected_values_best_first_and_match_the_champion(
    world_client, world, small_world
):
    advertiser = create_advertiser(world_client)
    cpm = [book(world_client, advertiser["id"], item) for item in world["items"][:3]]
    cpc = book(world_client, advertiser["id"], world["items"][3], price_model="cpc", price="0.40")
    synced(world_client, 4)
    listener = world["listener"]
    items = [item for item, _ in world["items"]]
    response = score(world_client, listener, items)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["excluded"] == []
    scores = body["scores"]
    assert [s["score"] for s in scores] == sorted((s["score"] for s in scores), reverse=True)
    assert {s["item_id"] for s in scores} == set(items)

    # Independently: features at the request time from the raw data, the champion's prediction.
    champion = Registry(models_dir(small_world)).resolve(CHAMPION)
    model = load_model(champion)
    profiles = load_profiles(data_dir(small_world))
    history = profiles.history(listener)
    artists = np.array([int(a[1:]) for _, a in world["items"]])
    genres = np.array([profiles.genre(int(a)) for a in artists])
    matrix = features.compute(
        history, np.full(4, int(NOW)), artists, genres, np.zeros(4), profiles.popularity
    )
    expected_p = dict(zip(items, model.predict(matrix), strict=True))
    clicks_per_conversion = champion.manifest["clicks_per_conversion"]
    by_item = {s["item_id"]: s for s in scores}
    for campaign in cpm:
        got = by_item[campaign["item_id"]]
        assert got["campaign_id"] == campaign["id"]
        assert got["p_conversion"] == pytest.approx(expected_p[campaign["item_id"]], rel=1e-6)
        assert got["score"] == pytest.approx(got["p_conversion"] * 20 / 1000, rel=1e-6)
    got = by_item[cpc["item_id"]]
    assert got["score"] == pytest.approx(
        got["p_conversion"] * 0.40 * min(1.0, clicks_per_conversion), rel=1e-6
    )

    quiet = score(world_client, listener, items, explain=False).json()
    assert "excluded" not in quiet and quiet["scores"] == scores


def test_left_out_items_say_why(world_client, world):
    advertiser = create_advertiser(world_client)
    (a, b, c, d) = world["items"][:4]
    book(world_client, advertiser["id"], a, markets=["SE"])  # not targeted in the US
    book(
        world_client,
        advertiser["id"],
        b,
        start_at="2026-12-01T00:00:00Z",
        end_at="2027-01-01T00:00:00Z",
    )
    book(world_client, advertiser["id"], c, budget="0")
    book(world_client, advertiser["id"], d, audiences=["super"])
    book(world_client, advertiser["id"], world["streamed"])
    synced(world_client, 5)
    items = [a[0], b[0], c[0], d[0], world["streamed"][0], "r99999", a[0]]
    body = score(world_client, world["listener"], items).json()
    reasons = {(e["item_id"], e["reason"]) for e in body["excluded"]}
    assert reasons == {
        (a[0], "not-targeted"),
        (b[0], "out-of-flight"),
        (c[0], "out-of-budget"),
        (d[0], "not-in-audience"),
        (world["streamed"][0], "recently-streamed"),
        ("r99999", "unknown-item"),
        (a[0], "duplicate-candidate"),
    }
    assert body["scores"] == []
    takeover = score(world_client, world["listener"], [d[0]], surface="takeover").json()
    assert takeover["excluded"] == [{"item_id": d[0], "reason": "not-targeted"}]


def test_an_exposure_caps_the_item_and_pausing_removes_it(world_client, world):
    advertiser = create_advertiser(world_client)
    item = world["items"][0]
    campaign = book(world_client, advertiser["id"], item)
    synced(world_client, 1)
    listener = world["listener"]
    assert score(world_client, listener, [item[0]]).json()["scores"][0]["item_id"] == item[0]
    event = {"type": "exposure", "event_id": "exp-1", "listener_id": listener, "item_id": item[0],
             "campaign_id": campaign["id"], "surface": "home_feed"}  # fmt: skip
    assert (
        world_client.post(
            "/v1/promotion-events", json={"events": [event]}, headers=ADMIN
        ).status_code
        == 202
    )
    assert score(world_client, listener, [item[0]]).json()["excluded"] == [
        {"item_id": item[0], "reason": "capped"}
    ]
    # Another listener is not capped.
    assert score(world_client, "l999999", [item[0]]).json()["scores"]

    world_client.post(f"/v1/promotion-campaigns/{campaign['id']}/pause", headers=ADMIN)
    wait_for(
        lambda: (
            score(world_client, "l999999", [item[0]]).json()["excluded"]
            == [{"item_id": item[0], "reason": "paused"}]
        )
    )


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"candidates": [{"item_id": f"r{i:05d}"} for i in range(501)]}, "too-long"),
        ({"candidates": []}, "too-short"),
        ({"candidates": [{"item_id": "bad id"}]}, "string-pattern-mismatch"),
        ({"candidates": [{"id": "r00001"}]}, "missing"),
        ({"country": "XX"}, "unknown-country"),
        ({"surface": "billboard"}, "enum"),
        ({"listener_id": ""}, "string-too-short"),
        ({"explain": "maybe"}, "bool-parsing"),
        ({"extra": 1}, "extra-forbidden"),
    ],
)
def test_bad_requests_are_4xx_with_a_reason(client, change, reason):
    body = {"listener_id": "l000001", "surface": "home_feed", "country": "US",
            "candidates": [{"item_id": "r00001"}], **change}  # fmt: skip
    response = client.post("/v1/promotion-scores", json=body, headers=ADMIN)
    assert response.status_code == 422, response.text
    assert response.json()["reason"] == reason


def test_only_the_platform_key_may_score_or_report_events(client):
    advertiser = create_advertiser(client)
    key = advertiser_key(client, advertiser["id"])
    body = {
        "listener_id": "l1",
        "surface": "home_feed",
        "country": "US",
        "candidates": [{"item_id": "r1"}],
    }
    assert client.post("/v1/promotion-scores", json=body).status_code == 401
    assert client.post("/v1/promotion-scores", json=body, headers=key).status_code == 403
    event = {
        "type": "conversion",
        "event_id": "c1",
        "listener_id": "l1",
        "item_id": "r1",
        "conversion_type": "new",
    }
    assert (
        client.post("/v1/promotion-events", json={"events": [event]}, headers=key).status_code
        == 403
    )


def test_a_scorer_without_model_or_data_still_answers(client):
    advertiser = create_advertiser(client)
    book(client, advertiser["id"], ("r00001", "a0001"))
    synced(client, 1)
    body = score(client, "l000001", ["r00001", "r00002"]).json()
    assert body["scores"] == []
    assert {(e["item_id"], e["reason"]) for e in body["excluded"]} == {
        ("r00001", "no-model"),
        ("r00002", "unknown-item"),
    }


def test_overspending_lowers_a_campaigns_scores_until_the_budget_is_gone(world_client, world):
    advertiser = create_advertiser(world_client)
    item = world["items"][0]
    # 1.00 over 30 days from 15 September: about 0.17 is due at the request time (20 Sept).
    campaign = book(world_client, advertiser["id"], item, budget="1.00")
    synced(world_client, 1)
    scorer = world_client.app.state.promotion
    before = score(world_client, "l999999", [item[0]]).json()["scores"][0]
    assert before["score"] == pytest.approx(before["p_conversion"] * 20 / 1000, rel=1e-6)
    events = [{"type": "exposure", "event_id": f"x{i}", "listener_id": f"l{900000 + i}",
               "item_id": item[0], "campaign_id": campaign["id"]} for i in range(20)]  # fmt: skip
    assert (
        world_client.post(
            "/v1/promotion-events", json={"events": events}, headers=ADMIN
        ).status_code
        == 202
    )
    assert scorer.spent(campaign["id"]) == pytest.approx(20 * 0.02)  # 0.40 against ~0.17 due
    wait_for(lambda: scorer.pacer.multiplier(campaign["id"]) < 0.5)
    after = score(world_client, "l999999", [item[0]]).json()["scores"][0]
    assert after["p_conversion"] == pytest.approx(before["p_conversion"])
    assert after["score"] < 0.5 * before["score"]
    more = [
        {**event, "event_id": f"y{i}", "listener_id": f"l{800000 + i}"}
        for i, event in enumerate(events * 2)
    ]
    world_client.post("/v1/promotion-events", json={"events": more}, headers=ADMIN)
    gone = score(world_client, "l999999", [item[0]]).json()
    assert gone["excluded"] == [{"item_id": item[0], "reason": "out-of-budget"}]
