"""Precomputed scores: the batch job fills the store; servers serve from it, else score online."""

from __future__ import annotations

import time

import numpy as np
import pytest

from backbeat.db import make_engine, make_session_factory, migrate
from backbeat.promotion.batch import Item, score_all, score_listeners
from backbeat.promotion.dataset import data_dir, models_dir
from backbeat.promotion.profiles import load_profiles
from backbeat.promotion.registry import CHAMPION, Registry
from backbeat.promotion.store import DatabaseScoreStore, RedisScoreStore
from backbeat.promotion.training import load_model
from factories import ADMIN, create_advertiser
from support.promotion import NOW

ROWS = [("l000001", "r00010", 0.25), ("l000001", "r00011", 0.5), ("l000002", "r00010", 0.125)]


def test_the_database_store_round_trips_and_replaces(database_url):
    migrate(database_url)
    store = DatabaseScoreStore(make_session_factory(make_engine(database_url)))
    assert store.write("v1", ROWS) == 3
    marker = store.marker()
    version, scores = store.load()
    assert version == "v1" and scores == {(a, b): p for a, b, p in ROWS}
    store.write("v2", ROWS[:1])
    assert store.load() == ("v2", {("l000001", "r00010"): 0.25}) and store.marker() != marker


def test_the_redis_store_round_trips_and_replaces(redis_url):
    store = RedisScoreStore(redis_url)
    assert store.write("v1", ROWS) == 3
    assert store.load() == ("v1", {(a, b): p for a, b, p in ROWS})
    store.write("v2", [])
    assert store.load() == ("v2", {})


def test_batch_scores_equal_online_scores_on_two_workers(small_world):
    profiles = load_profiles(data_dir(small_world))
    model = load_model(Registry(models_dir(small_world)).resolve(CHAMPION))
    items = [Item("r00046", 17), Item("r00067", 24), Item("r99999", -1)]
    run = score_all(profiles, items, model, int(NOW), workers=2)
    assert run.listeners == len(profiles.listeners) and len(run.rows) == run.listeners * 3
    single = score_listeners(profiles, items, model, int(NOW), profiles.listeners)
    assert run.rows == single  # same rows in the same order, whatever the workers


def test_the_api_serves_stored_scores_for_the_home_feed_and_falls_back_online(
    world_client, world_settings
):
    advertiser = create_advertiser(world_client)
    body = {"advertiser_id": advertiser["id"], "name": "Stored", "item_id": "r00046", "artist_id": "a0017",
            "surfaces": ["home_feed", "takeover"], "start_at": "2026-09-15T00:00:00Z",
            "end_at": "2026-10-15T00:00:00Z", "budget": "1000", "price": "10"}  # fmt: skip
    assert world_client.post("/v1/promotion-campaigns", json=body, headers=ADMIN).status_code == 201
    scorer = world_client.app.state.promotion
    champion = Registry(models_dir(world_settings.var_dir)).aliases()[CHAMPION]
    scorer.store.write(champion, [("l999998", "r00046", 0.123456)])
    scorer.store_checked = -1e18  # poll the marker now rather than in 10 s
    scorer.poke()
    request = {"listener_id": "l999998", "surface": "home_feed", "country": "US",
               "candidates": [{"item_id": "r00046"}]}  # fmt: skip
    deadline = time.monotonic() + 10
    while True:
        got = world_client.post("/v1/promotion-scores", json=request, headers=ADMIN).json()[
            "scores"
        ]
        if got and got[0]["p_conversion"] == pytest.approx(0.123456) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert got[0]["p_conversion"] == pytest.approx(0.123456)
    assert got[0]["score"] == pytest.approx(0.123456 * 10 / 1000)
    takeover = world_client.post(
        "/v1/promotion-scores", json={**request, "surface": "takeover"}, headers=ADMIN
    )
    assert takeover.json()["scores"][0]["p_conversion"] != pytest.approx(0.123456)  # online
    assert np.isfinite(takeover.json()["scores"][0]["score"])
