"""``RedisLedger`` against a real Redis: caps, budget leases, delivery, outages, replicas.

Tests about several replicas run this file as a worker script in two processes
(``python test_redis_ledger.py worker URL``): each reads a JSON scenario a line on stdin,
builds its own ``RedisLedger``, answers ``ready``, waits for ``go`` so both start together,
runs, and prints its result as one JSON line.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backbeat.catalog.vocabulary import TIER_RANK, Tier
from backbeat.observability import configure_logging, render_metrics
from backbeat.serving.decisions import Decider
from backbeat.serving.redis_ledger import RedisLedger
from backbeat.serving.request import AdRequest
from backbeat.serving.snapshot import (
    CapRule,
    ServableCreative,
    ServableLineItem,
    ServableSlot,
    Snapshot,
)

pytestmark = pytest.mark.redis

T0 = 1_790_000_000.0  # 2026-09-21; campaigns below run 30 days either side
DAY = 86_400.0
CPM_10 = 10_000_000  # a $10 CPM in micros: one impression costs 10,000 micros of budget
IMPRESSION_MICROS = CPM_10 // 1000
CREATIVE = ServableCreative(1, "Spot", "https://cdn.example.com/a.mp3", "audio/mpeg", 30_000, 128, None, ())  # fmt: skip
SLOT = ServableSlot(
    1, "slot", "music_free", "interstitial", reserve_micros=0, currency="USD", auction="first_price"
)


def item(
    id: int,
    *,
    caps: list[tuple[str, int, int | None]] | tuple[()] = (),
    cpm: int = CPM_10,
    tier: str = Tier.NON_GUARANTEED,
    budget: int | None = None,
    daily: int | None = None,
    campaign_id: int | None = None,
    campaign_budget: int = 10**12,
    goal: int | None = None,
) -> ServableLineItem:
    """A servable line item; budgets in micros, caps as ``(scope, count, window seconds)``."""
    return ServableLineItem(
        id=id,
        campaign_id=campaign_id if campaign_id is not None else 1000 + id,
        advertiser_id=id,
        advertiser_name=f"Advertiser {id}",
        name=f"li {id}",
        tier=str(tier),
        tier_rank=TIER_RANK[str(tier)],
        cpm_micros=cpm,
        currency="USD",
        budget_micros=budget,
        daily_budget_micros=daily,
        campaign_budget_micros=campaign_budget,
        goal_impressions=goal,
        pacing="asap",
        caps=tuple(CapRule(scope, count, window) for scope, count, window in caps),
        start_ts=T0 - 30 * DAY,
        end_ts=T0 + 30 * DAY,
        targeting={},
        creatives=(CREATIVE,),
    )


def wait_until(predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = predicate()
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.005)


def prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}:"


def spend_until_exhausted(
    ledger: RedisLedger, line_item: ServableLineItem, now: float, timeout: float = 10.0
) -> tuple[int, str]:
    """Serve ``line_item`` as often as the ledger lets it; impressions and the final reason."""
    served, reason, blocked_since = 0, "", None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reason = ledger.budget_block(line_item, line_item.cpm_micros, now) or ""
        if not reason:
            ledger.commit_spend(line_item, line_item.cpm_micros, now)
            served += 1
            blocked_since = None
            continue
        if reason != "budget-lease-empty":
            blocked_since = blocked_since or time.monotonic()
            if time.monotonic() - blocked_since > 0.3:  # other replicas may give some back
                break
        time.sleep(0.001)
    return served, reason


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_url) as connection:
        yield connection


@pytest.fixture
def ledger(redis_url: str) -> Iterator[RedisLedger]:
    with RedisLedger(redis_url, prefix=prefix()) as shared:
        yield shared


# --- frequency caps ------------------------------------------------------------------


def test_no_redis_call_when_the_first_candidate_has_no_cap(ledger):
    capped, free = item(1, caps=[("li:1", 1, 60)]), item(2)
    assert ledger.acquire_caps("l", [free, capped], T0) == (0, "")
    assert ledger.acquire_caps("l", [item(3), free], T0) == (0, "")
    assert ledger.stats.caps == 0
    assert ledger.acquire_caps("l", [capped, free], T0) == (0, "")
    assert ledger.acquire_caps("l", [capped, free], T0) == (1, "")  # capped: the next one
    assert ledger.acquire_caps("l", [capped], T0) == (None, "frequency-capped")
    assert ledger.stats.caps == 3  # one round trip each, only when a cap was involved


def test_caps_count_per_listener_scope_and_window(ledger, client):
    a = item(1, caps=[("li:1", 2, 60), ("c:9", 3, 3600)], campaign_id=9)
    b = item(2, caps=[("c:9", 3, 3600)], campaign_id=9)
    minute = T0 - T0 % 3600  # the start of an hour, and so of a minute
    fills = [ledger.acquire_caps("l", [a, b], minute + 1)[0] for _ in range(4)]
    assert fills == [0, 0, 1, None]  # a's 2 a minute, then b, then the campaign's 3 an hour
    assert ledger.acquire_caps("other", [a], minute + 1) == (0, "")  # per listener
    assert ledger.acquire_caps("l", [a], minute + 61) == (None, "frequency-capped")  # hourly
    key = f"{ledger.prefix}cap:{{l}}:li:1:60:{int(minute)}"
    assert int(client.get(key)) == 2
    assert 60 < client.ttl(key) <= 60 + 300  # the window's end, plus slack


def test_hourly_and_daily_windows_starting_together_are_separate_counters(ledger):
    midnight = T0 - T0 % DAY
    hourly_and_daily = item(1, caps=[("li:1", 1, 3600), ("li:1", 2, 86400)])
    assert ledger.acquire_caps("l", [hourly_and_daily], midnight)[0] == 0
    assert ledger.acquire_caps("l", [hourly_and_daily], midnight + 3600)[0] == 0
    assert ledger.acquire_caps("l", [hourly_and_daily], midnight + 7200)[0] is None


def test_whole_flight_caps_expire_after_the_flight(ledger, client):
    flight = item(1, caps=[("li:1", 1, None)])
    assert ledger.acquire_caps("l", [flight], T0)[0] == 0
    assert ledger.acquire_caps("l", [flight], T0 + 20 * DAY)[0] is None
    ttl = client.ttl(f"{ledger.prefix}cap:{{l}}:li:1:f")
    assert 37 * DAY - 10 < ttl <= 37 * DAY  # set by the fill at T0: a week after the flight


def test_caps_hold_under_threads_hammering_one_listener(ledger, client):
    capped = item(1, caps=[("li:1", 5, 86400)])
    fills: list[int | None] = []

    def hammer() -> None:
        for _ in range(40):
            fills.append(ledger.acquire_caps("hot", [capped], T0)[0])

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert fills.count(0) == 5 and len(fills) == 320
    assert int(client.get(f"{ledger.prefix}cap:{{hot}}:li:1:86400:{int(T0 // DAY * DAY)}")) == 5


# --- two processes -------------------------------------------------------------------


class Workers:
    """Two worker processes, each with its own ``RedisLedger``, run a scenario together."""

    def __init__(self, url: str, count: int = 2) -> None:
        self.url = url
        self.processes = [
            subprocess.Popen(
                [sys.executable, __file__, "worker", url],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(count)
        ]

    def _send(self, message: dict[str, Any]) -> None:
        for process in self.processes:
            assert process.stdin is not None
            process.stdin.write(json.dumps(message) + "\n")
            process.stdin.flush()

    def _receive(self) -> list[dict[str, Any]]:
        answers = []
        for process in self.processes:
            assert process.stdout is not None
            line = process.stdout.readline()
            assert line, f"worker exited with {process.wait()}"
            answers.append(json.loads(line))
        return answers

    def run(self, scenario: dict[str, Any]) -> list[dict[str, Any]]:
        self._send(scenario)
        assert all(answer == {"ready": True} for answer in self._receive())
        self._send({"go": True})
        return self._receive()

    def close(self) -> None:
        for process in self.processes:
            assert process.stdin is not None
            process.stdin.close()
        for process in self.processes:
            process.wait(timeout=10)


@pytest.fixture(scope="module")
def workers(redis_server) -> Iterator[Workers]:
    redis_server.start()
    pool = Workers(redis_server.url)
    yield pool
    pool.close()


def cap_rules() -> st.SearchStrategy[list[tuple[str, int, int | None]]]:
    rule = st.tuples(
        st.sampled_from(["own", "c:1", "c:2"]),
        st.integers(1, 3),
        st.sampled_from([60, 3600, None]),
    )
    return st.lists(rule, max_size=3)


@st.composite
def cap_scenarios(draw: st.DrawFn) -> dict[str, Any]:
    ids = list(range(1, draw(st.integers(1, 4)) + 1))
    items = {
        n: [(f"li:{n}" if scope == "own" else scope, count, window) for scope, count, window in draw(cap_rules())]
        for n in ids
    }  # fmt: skip
    offsets = sorted(draw(st.lists(st.integers(0, 4000), min_size=5, max_size=40)))
    requests = [
        (
            draw(st.sampled_from(["a", "b"])),
            T0 + offset,
            draw(st.permutations(ids).flatmap(lambda order: st.just(order[: max(1, len(order) - 1)]))),
        )
        for offset in offsets
    ]  # fmt: skip
    return {"op": "caps", "prefix": prefix(), "items": items, "requests": requests}


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario=cap_scenarios())
def test_caps_are_never_exceeded_by_two_processes_sharing_redis(workers, scenario):
    results = workers.run(scenario)
    rules = {int(n): [CapRule(*rule) for rule in caps] for n, caps in scenario["items"].items()}
    fills: dict[tuple[str, str, int | None, int], list[int]] = {}
    for result in results:
        for listener, now, served in result["fills"]:
            if served is None:
                continue
            strictest: dict[tuple[str, str, int | None, int], int] = {}
            for rule in rules[served]:  # two rules on one counter: one count, the lower cap
                key = (listener, rule.scope, rule.window_seconds, rule.window_start(now))
                strictest[key] = min(strictest.get(key, rule.count), rule.count)
            for key, count in strictest.items():
                fills.setdefault(key, []).append(count)
    for counts in fills.values():
        # A fill needed its counter under its own cap when it happened: so however the two
        # processes interleaved, at most c fills on one counter come from caps of c or less.
        for limit in set(counts):
            assert sum(count <= limit for count in counts) <= limit, counts
    timeouts = sum(result["unavailable"] for result in results)
    with redis.Redis.from_url(workers.url) as client:
        for (listener, scope, window, start), counts in fills.items():
            suffix = "f" if window is None else f"{window}:{start}"
            key = f"{scenario['prefix']}cap:{{{listener}}}:{scope}:{suffix}"
            counted = int(client.get(key))
            if timeouts:  # a call that timed out may have counted: caps err on the safe side
                assert counted >= len(counts)
            else:
                assert counted == len(counts)  # every count is a fill, and back


@pytest.mark.parametrize(
    ("budgets", "days", "limit"),
    [
        pytest.param({"budget": 3_005_000}, [T0], 300, id="lifetime"),
        pytest.param({"campaign_budget": 3_005_000}, [T0], 300, id="campaign"),
        pytest.param({"goal": 300}, [T0], 300, id="goal-impressions"),
        pytest.param({"daily": 1_505_000}, [T0, T0 + DAY], 150, id="daily"),
    ],
)
def test_two_processes_racing_never_overspend_and_nearly_exhaust(workers, budgets, days, limit):
    scenario = {"op": "spend", "prefix": prefix(), "item": {"id": 1, **budgets}, "days": days}
    results = workers.run(scenario)
    for day in range(len(days)):
        served = sum(result["served"][day] for result in results)
        assert 0.95 * limit <= served <= limit, (day, results)
    reasons = {result["reasons"][-1] for result in results}
    assert reasons <= {"budget-exhausted", "campaign-budget-exhausted", "goal-reached",
                       "daily-budget-exhausted"}  # fmt: skip
    with redis.Redis.from_url(workers.url) as client:
        served_total = sum(sum(result["served"]) for result in results)
        if "goal" in budgets:
            assert int(client.get(f"{scenario['prefix']}lease:g:1")) == served_total
        elif "budget" in budgets:  # what is leased once both closed is what was reserved
            leased = int(client.get(f"{scenario['prefix']}lease:li:1"))
            assert leased == served_total * IMPRESSION_MICROS
        # Decisions only reserve: with no event log read, nothing is counted.
        assert client.hget(f"{scenario['prefix']}li:1", "i") is None


# --- leases in one process -----------------------------------------------------------


def test_budget_changes_from_the_catalog_apply_to_leases(ledger):
    small = item(1, budget=10 * IMPRESSION_MICROS)
    assert spend_until_exhausted(ledger, small, T0) == (10, "budget-exhausted")
    raised = replace(small, budget_micros=25 * IMPRESSION_MICROS)
    assert spend_until_exhausted(ledger, raised, T0) == (15, "budget-exhausted")
    lowered = replace(raised, budget_micros=5 * IMPRESSION_MICROS)
    assert spend_until_exhausted(ledger, lowered, T0) == (0, "budget-exhausted")


def test_seeded_delivery_is_a_floor_when_redis_has_no_lease(ledger, client):
    ledger.seed(line_items={1: (8 * CPM_10, 8)}, campaigns={})
    budgeted = item(1, budget=10 * IMPRESSION_MICROS)
    assert spend_until_exhausted(ledger, budgeted, T0) == (2, "budget-exhausted")
    assert int(client.get(f"{ledger.prefix}lease:li:1")) == 10 * IMPRESSION_MICROS


def test_zero_price_house_ads_need_no_lease(ledger):
    house = item(1, tier=Tier.HOUSE, cpm=0)
    assert ledger.budget_block(house, 0, T0) is None


def test_delivery_and_attempts_are_global_across_replicas(redis_url, tmp_path):
    from backbeat.eventlog import EventLogWriter
    from backbeat.events import Event, EventType
    from backbeat.serving.decisions import new_decision_id
    from backbeat.serving.redis_reconcile import RedisReconciler

    shared = prefix()
    with (
        RedisLedger(redis_url, prefix=shared) as a,
        RedisLedger(redis_url, prefix=shared) as b,
        EventLogWriter(tmp_path) as log,
    ):
        line_item = item(1, budget=10**9)
        wait_until(lambda: a.budget_block(line_item, CPM_10, T0) is None)
        for _ in range(3):
            decision_id = new_decision_id(T0)
            a.commit_spend(line_item, CPM_10, T0, decision_id)
            fill = Event(type=EventType.FILL, ts=T0, decision_id=decision_id, line_item_id=1,
                         campaign_id=1001, price_micros=CPM_10, currency="USD")  # fmt: skip
            log.append(fill.to_bytes())
        log.flush()
        assert a.delivery(line_item, T0).impressions == 3  # its own fills, not yet read
        assert b.delivery(line_item, T0).impressions == 0
        a.add_attempts({1: 5})
        b.add_attempts({1: 2})
        readers = RedisReconciler(a, tmp_path), RedisReconciler(b, tmp_path)
        assert readers[1].run(T0).reservations == 3  # b leads: it reads a's fills
        assert not readers[0].run(T0).leader
        a.sync()
        b.sync()
        assert b.delivery(line_item, T0) == a.delivery(line_item, T0)  # reserved, once each
        assert b.delivery(line_item, T0).impressions == 3
        assert b.delivery(line_item, T0).today_units == 3 * CPM_10
        assert b.add_attempts({}) == {1: 7}


def test_unused_leases_go_back_on_close(redis_url, client):
    shared = prefix()
    line_item = item(1, budget=10**9, campaign_budget=10**10)
    with RedisLedger(redis_url, prefix=shared) as replica:
        wait_until(lambda: replica.budget_block(line_item, CPM_10, T0) is None)
        replica.commit_spend(line_item, CPM_10, T0)
        assert int(client.get(f"{shared}lease:li:1")) > IMPRESSION_MICROS
    assert int(client.get(f"{shared}lease:li:1")) == IMPRESSION_MICROS
    assert int(client.get(f"{shared}lease:c:1001")) == IMPRESSION_MICROS


# --- outage --------------------------------------------------------------------------


def metric(name: str) -> float:
    """A metric summed over its labels, as exposed on /metrics (0 before any sample)."""
    lines = render_metrics().decode().splitlines()
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith((name + " ", name + "{"))
    )


def test_outage_serves_house_and_held_leases_then_recovers(redis_server, redis_url, client):
    capped = item(1, cpm=30_000_000, caps=[("li:1", 1000, 3600)])
    budgeted = item(2, cpm=20_000_000, budget=10**9)
    house = item(3, tier=Tier.HOUSE, cpm=0)
    snapshot = Snapshot.of(1, [capped, budgeted, house], [SLOT])
    ledger = RedisLedger(redis_url, prefix=prefix())
    decider = Decider(ledger, seed=1)
    served: Counter[int | None] = Counter()
    listeners = iter(range(10**9))

    def decide() -> int | None:
        request = AdRequest(slot_id=1, listener=f"l{next(listeners)}")
        decision = decider.decide(snapshot, SLOT, request, T0)
        served[decision.line_item.id if decision.line_item else None] += 1
        return decision.line_item.id if decision.line_item else None

    try:
        assert wait_until(lambda: decide() == 1)  # capped item's campaign lease is in
        assert wait_until(lambda: ledger.budget_block(budgeted, budgeted.cpm_micros, T0) is None)
        ledger.sync()
        errors_before = metric("backbeat_redis_errors_total")
        redis_server.stop()
        served.clear()
        started = time.perf_counter()
        slowest = 0.0
        for _ in range(1500):
            begun = time.perf_counter()
            decide()
            slowest = max(slowest, time.perf_counter() - begun)
        elapsed = time.perf_counter() - started
        assert served[1] == 0  # capped items cannot be counted, so they do not serve
        assert served[2] > 0  # budgeted items serve from the lease already held...
        assert served[3] > 0, served  # ...and once it is used up, house ads fill
        assert served[None] == 0
        assert elapsed < 1.5 and slowest < 0.2  # no waiting on timeouts per decision
        assert metric("backbeat_redis_up") == 0.0
        assert metric("backbeat_redis_errors_total") > errors_before
        spent_offline = served[2]
        assert spent_offline * 20_000 <= 10**9 // 100  # at most one lease: 1% of the budget

        redis_server.start()  # empty: the restarted server lost every counter
        recovered = time.monotonic()
        assert wait_until(lambda: decide() == 1, timeout=5.0)
        assert time.monotonic() - recovered < 5.0
        assert ledger.up and metric("backbeat_redis_up") == 1.0
        ledger.sync()
        delivered = ledger.delivery(budgeted, T0).spend_units
        assert delivered >= spent_offline * budgeted.cpm_micros
        # The lost lease counter came back at no less than what was already spent.
        leased = wait_until(lambda: client.get(f"{ledger.prefix}lease:li:2"))
        assert int(leased) * 1000 >= delivered
    finally:
        redis_server.start()
        ledger.close()


# --- end to end ----------------------------------------------------------------------


def test_two_app_instances_sharing_redis_respect_a_frequency_cap(redis_url, tmp_path, client):
    from fastapi.testclient import TestClient

    from backbeat.api.app import create_app
    from backbeat.config import Settings
    from backbeat.db import migrate
    from factories import ADMIN_KEY, book_servable

    database = f"sqlite:///{tmp_path / 'backbeat.db'}"
    migrate(database)

    def app_settings(name: str) -> Settings:
        return Settings(
            var_dir=tmp_path / name,
            database_url=database,
            admin_key=ADMIN_KEY,
            signing_key="test-signing-key-0123456789abcdef",
            public_base_url="http://testserver",
            log_json=False,
            log_level="WARNING",
            catalog_poll_seconds=0.1,
            redis_url=redis_url,
        )

    def decide(app: TestClient, listener: str) -> dict[str, Any]:
        response = app.post("/v1/decisions", json={"slot_id": slot_id, "listener": listener})
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    def warmed(app: TestClient, listener: str) -> bool:
        response = app.post("/v1/decisions", json={"slot_id": slot_id, "listener": listener})
        return response.status_code == 200 and bool(response.json()["filled"])

    with (
        TestClient(create_app(app_settings("a"))) as a,
        TestClient(create_app(app_settings("b"))) as b,
    ):
        booked = book_servable(a, line_item={"frequency_caps": [{"count": 2, "period": "day"}]})
        slot_id, campaign_id = booked["slot"]["id"], booked["campaign"]["id"]
        warm = iter(range(1000))
        for app in (a, b):  # catalog picked up (polled) and a budget lease in hand on both
            assert wait_until(lambda app=app: warmed(app, f"warm{next(warm)}"))
        answers = [decide(app, "listener") for _ in range(5) for app in (a, b)]
        assert sum(answer["filled"] for answer in answers) == 2
        assert {answer["no_fill_reason"] for answer in answers[2:]} == {"frequency-capped"}
        assert "backbeat_redis_up 1.0" in a.get("/metrics").text
        # Each app's fills (its own event log, its own reconciler) are reserved in Redis.
        key = f"bb:li:{booked['line_item']['id']}"
        assert wait_until(lambda: client.hget(key, "ri") == b"4")
    # On shutdown both gave unused leases back: leased is what was reserved (no pixel fired).
    fields = client.hgetall(f"bb:li:{booked['line_item']['id']}")
    assert int(fields[b"ri"]) == 2 + 2 and b"i" not in fields  # warm-ups too
    reserved_units = int(client.hget(f"bb:c:{campaign_id}", "ru"))
    assert int(client.get(f"bb:lease:c:{campaign_id}")) == reserved_units // 1000


# --- worker --------------------------------------------------------------------------


def _run_caps(ledger: RedisLedger, scenario: dict[str, Any]) -> dict[str, Any]:
    items = {
        int(n): item(int(n), caps=[tuple(rule) for rule in caps])  # type: ignore[misc]
        for n, caps in scenario["items"].items()
    }
    fills, unavailable = [], 0
    for listener, now, ids in scenario["requests"]:
        position, reason = ledger.acquire_caps(listener, [items[n] for n in ids], now)
        fills.append([listener, now, None if position is None else ids[position]])
        unavailable += reason == "caps-unavailable"
    return {"fills": fills, "unavailable": unavailable}


def _run_spend(ledger: RedisLedger, scenario: dict[str, Any]) -> dict[str, Any]:
    line_item = item(**scenario["item"])
    served, reasons = [], []
    for now in scenario["days"]:
        count, reason = spend_until_exhausted(ledger, line_item, now)
        served.append(count)
        reasons.append(reason)
    return {"served": served, "reasons": reasons}


def _answer(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def _worker(url: str) -> None:
    configure_logging("ERROR")
    run = {"caps": _run_caps, "spend": _run_spend}
    for line in sys.stdin:
        scenario = json.loads(line)
        ledger = RedisLedger(url, prefix=scenario["prefix"])
        _answer({"ready": True})
        sys.stdin.readline()
        try:
            result = run[scenario["op"]](ledger, scenario)
        finally:
            ledger.close()
        _answer(result)


if __name__ == "__main__" and sys.argv[1:2] == ["worker"]:
    sys.path.insert(0, str(Path(__file__).parents[1]))
    _worker(sys.argv[2])


def test_caps_allow_reads_a_rival_the_way_the_auction_saw_it(ledger):
    """The second-price runner-up check: reads counters (counts nothing), and a counter the
    winner just moved is read as it was before the decision."""
    winner = item(1, caps=[("c:9", 2, 3600)], campaign_id=9)
    rival = item(2, caps=[("c:9", 2, 3600), ("li:2", 1, 60)], campaign_id=9)
    assert ledger.caps_allow("l", item(3), T0)  # no caps: no Redis call
    assert ledger.acquire_caps("l", [winner], T0) == (0, "")  # campaign 1 of 2
    assert ledger.caps_allow("l", rival, T0)
    assert ledger.acquire_caps("l", [winner], T0) == (0, "")  # campaign 2 of 2
    assert not ledger.caps_allow("l", rival, T0)  # full for everyone after this decision
    assert ledger.caps_allow("l", rival, T0, winner)  # but not before it
    assert ledger.caps_allow("l", rival, T0, winner)  # reading twice counted nothing
    assert ledger.acquire_caps("other", [rival], T0) == (0, "")
    assert not ledger.caps_allow("other", rival, T0, winner)  # its own 1 a minute is used


def test_the_memory_ledger_forgets_cap_windows_that_ended():
    from backbeat.serving.ledger import MemoryLedger

    memory = MemoryLedger()
    hourly, flight = item(1, caps=[("li:1", 5, 3600)]), item(2, caps=[("li:2", 5, None)])
    for n in range(50):
        memory.acquire_caps(f"l{n}", [hourly], T0)
        memory.acquire_caps(f"l{n}", [flight], T0)
    assert memory.cap_counters() == 100
    memory.prune(T0 + 2 * 3600)
    assert memory.cap_counters() == 50  # whole-flight counters stay
    assert memory.acquire_caps("l1", [flight], T0 + 2 * 3600) == (0, "")
