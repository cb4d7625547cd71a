"""The Redis ledger spends budgets in counted impressions (issue 10), against a real Redis.

Decisions reserve out of the budget leases; the reconciler reads fills and impressions from
the event log into Redis, turns reservations into counted spend and releases those past
their render window. What is counted is checked against the log itself, read here
independently (distinct decision ids with an impression), never against the ledger's own
counters alone.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
from test_money import _impression_url
from test_redis_ledger import CPM_10, IMPRESSION_MICROS, SLOT, T0, item, prefix, wait_until

from backbeat.catalog.vocabulary import Tier
from backbeat.eventlog import EventLogReader, EventLogWriter
from backbeat.events import Event, EventType
from backbeat.serving import redis_leases, redis_reconcile
from backbeat.serving.decisions import Decider, new_decision_id
from backbeat.serving.redis_ledger import RedisLedger
from backbeat.serving.redis_reconcile import RedisReconciler
from backbeat.serving.request import AdRequest
from backbeat.serving.snapshot import ServableLineItem, Snapshot
from factories import ADMIN, create_slot

pytestmark = pytest.mark.redis

WINDOW = 60.0  # render window of these tests, in ledger (simulated) seconds


def fill(decision_id: str, line_item: ServableLineItem, price: int) -> bytes:
    """The record ``AdServer`` logs for a filled decision."""
    return Event(
        type=EventType.FILL, ts=T0, decision_id=decision_id, line_item_id=line_item.id,
        campaign_id=line_item.campaign_id, price_micros=price, currency="USD",
    ).to_bytes()  # fmt: skip


def impression(decision_id: str, line_item: ServableLineItem, price: int, ts: float) -> bytes:
    """The record the tracker logs for an impression pixel."""
    return Event(
        type=EventType.IMPRESSION, ts=ts, decision_id=decision_id, line_item_id=line_item.id,
        campaign_id=line_item.campaign_id, price_micros=price, currency="USD",
    ).to_bytes()  # fmt: skip


def counted_in_log(directory: Path, item_id: int) -> tuple[int, int]:
    """Impressions and spend (CPM micros) as the delivery report counts them: once per decision."""
    prices: dict[str, int] = {}
    for record in EventLogReader(directory).records():
        event = Event.from_bytes(record.payload)
        if event.type == EventType.IMPRESSION and event.line_item_id == item_id:
            prices.setdefault(event.decision_id or "", event.price_micros or 0)
    return len(prices), sum(prices.values())


@dataclass
class Replica:
    """One server: its ledger, its own event-log writer (segments) and its reconciler."""

    ledger: RedisLedger
    log: EventLogWriter
    reconciler: RedisReconciler
    decider: Decider = field(init=False)

    def __post_init__(self) -> None:
        self.decider = Decider(self.ledger, seed=7)


def start(redis_url: str, shared: str, directory: Path) -> Replica:
    ledger = RedisLedger(redis_url, prefix=shared, render_window_s=WINDOW)
    return Replica(ledger, EventLogWriter(directory), RedisReconciler(ledger, directory))


@pytest.fixture
def quick(monkeypatch):
    """Ask again soon for a budget that was used up, and take a crashed leader's lock soon."""
    monkeypatch.setattr(redis_leases, "EXHAUSTED_RETRY_SECONDS", 0.02)
    monkeypatch.setattr(redis_reconcile, "LOCK_SECONDS", 0.5)


@pytest.mark.parametrize(
    ("budget", "stop"),
    [
        pytest.param("budget", "restart", id="budget-restart"),
        pytest.param("goal", "restart", id="goal-restart"),
        pytest.param("budget", "crash", id="budget-crash"),
    ],
)
def test_n_impressions_of_budget_end_as_n_counted_with_30_percent_never_rendering(
    redis_url, tmp_path, quick, budget, stop
):
    """Two replicas, one restarted (or crashed) half-way; 30% of served ads never render."""
    n = 60
    line_item = (
        item(1, budget=n * IMPRESSION_MICROS)
        if budget == "budget"
        else item(1, tier=Tier.GUARANTEED, goal=n)
    )
    snapshot = Snapshot.of(1, [line_item], [SLOT])
    shared, rng = prefix(), random.Random(10)
    replicas = [start(redis_url, shared, tmp_path), start(redis_url, shared, tmp_path)]
    retired: list[Replica] = []
    now, listeners, stranded = T0, iter(range(10**9)), 0
    try:
        for round_ in range(400):
            for replica in replicas:
                for _ in range(5):
                    request = AdRequest(slot_id=1, listener=f"l{next(listeners)}")
                    decision = replica.decider.decide(snapshot, SLOT, request, now)
                    if decision.line_item is None:
                        break
                    replica.log.append(fill(decision.id, line_item, decision.price_micros))
                    if rng.random() < 0.7:  # it plays; its pixel reaches any replica, maybe twice
                        for _ in range(1 + (rng.random() < 0.2)):
                            pixel = impression(decision.id, line_item, decision.price_micros, now)
                            rng.choice(replicas).log.append(pixel)
            for replica in replicas:
                replica.log.flush()
            for replica in replicas:
                replica.reconciler.run(now)
                replica.ledger.sync()
            counted, spend = counted_in_log(tmp_path, 1)
            assert counted <= n  # never overspent, at any point...
            with redis.Redis.from_url(redis_url) as client:  # ...nor leased beyond the budget
                leased = client.get(f"{shared}lease:{'li' if budget == 'budget' else 'g'}:1")
                assert int(leased or 0) <= (n * IMPRESSION_MICROS if budget == "budget" else n)
            if round_ == 20:  # half-way or so: one replica goes, a new one takes its place
                gone = replicas.pop(0)
                if stop == "restart":
                    gone.ledger.close()  # unused leases go back
                else:
                    # A crash: no goodbye. What it had leased and not spent stays leased.
                    gone.ledger._stop.set()
                    gone.ledger._wake.set()
                    gone.ledger._thread.join()
                    stranded = sum(
                        max(lease.available, 0) // (CPM_10 if lease.scale > 1 else 1)
                        for key, lease in gone.ledger._leases.items()
                        if key.endswith(("lease:li:1", "lease:g:1"))
                    )
                gone.log.close()
                retired.append(gone)
                replicas.append(start(redis_url, shared, tmp_path))
            if counted == n - stranded and round_ > 25:
                break
            now += 7.0  # reservations that never rendered pass their window after 9 rounds
        assert counted == n - stranded, (counted, stranded)
        assert spend == counted * CPM_10
        # The ledger agrees with the log: counted spend, and nothing reserved at the end.
        now += 2 * WINDOW
        for replica in replicas:
            replica.reconciler.run(now)
        with redis.Redis.from_url(redis_url) as client:
            fields = {k.decode(): int(v) for k, v in client.hgetall(f"{shared}li:1").items()}
            assert (fields["i"], fields["u"]) == (counted, spend)
            assert fields.get("ri", 0) == 0 and fields.get("ru", 0) == 0
            assert client.hlen(f"{shared}resv") == 0
            rendered = int(client.hget(f"{shared}render", "rendered"))
            expired = int(client.hget(f"{shared}render", "expired"))
            assert rendered <= counted and expired > 0.15 * (counted + expired)
        if stop == "crash":
            assert 0 < stranded <= n // 10  # the underspend bound: what it held in leases
    finally:
        for replica in replicas:
            replica.ledger.close()
            replica.log.close()


def test_each_path_of_the_reconciler_worked_by_hand(redis_url, tmp_path):
    """Fills, replays, an impression read before its fill, expiry, a late pixel, a stale fill,
    and a Redis that lost everything: counters and what is leased, step by step."""
    shared, line_item = prefix(), item(1, budget=1000 * IMPRESSION_MICROS)
    one = IMPRESSION_MICROS
    leased_before = 50 * one  # as if replicas had leased 50 impressions
    pixels = EventLogWriter(tmp_path)  # its segments sort first: read before the fills'
    fills = EventLogWriter(tmp_path)
    assert pixels.writer_id < fills.writer_id
    ids = {name: new_decision_id(T0) for name in "ABCDE"}

    def write(log: EventLogWriter, payload: bytes) -> None:
        log.append(payload)
        log.flush()

    with (
        RedisLedger(redis_url, prefix=shared, render_window_s=WINDOW) as ledger,
        redis.Redis.from_url(redis_url) as client,
    ):
        client.set(f"{shared}lease:li:1", leased_before)
        reconciler = RedisReconciler(ledger, tmp_path)

        def state() -> tuple[int, ...]:
            li = {k.decode(): int(v) for k, v in client.hgetall(f"{shared}li:1").items()}
            render = {k.decode(): int(v) for k, v in client.hgetall(f"{shared}render").items()}
            leased = int(client.get(f"{shared}lease:li:1") or 0)
            return (li.get("i", 0), li.get("u", 0), li.get("ri", 0), li.get("ru", 0),
                    (leased - leased_before) // one, render.get("rendered", 0),
                    render.get("expired", 0))  # fmt: skip

        for name in "ABC":
            write(fills, fill(ids[name], line_item, CPM_10))
        reconciler.run(T0)  # a first pass: Redis had no position for this log
        assert state() == (0, 0, 3, 3 * CPM_10, 0, 0, 0)  # reserved; leases already hold them
        for _ in range(2):  # a replayed pixel counts once
            write(pixels, impression(ids["A"], line_item, CPM_10, T0 + 1))
        reconciler.run(T0 + 1)
        assert state() == (1, CPM_10, 2, 2 * CPM_10, 0, 1, 0)
        write(pixels, impression(ids["D"], line_item, CPM_10, T0 + 2))
        write(fills, fill(ids["D"], line_item, CPM_10))
        run = reconciler.run(T0 + 2)  # the pixel is read first, then its fill: no reservation
        assert (run.impressions, run.reservations) == (1, 0)
        assert state() == (2, 2 * CPM_10, 2, 2 * CPM_10, 0, 1, 0)
        run = reconciler.run(T0 + WINDOW + 1)  # B and C never played: their leases go back
        assert run.released == 2
        assert state() == (2, 2 * CPM_10, 0, 0, -2, 1, 2)
        write(pixels, impression(ids["B"], line_item, CPM_10, T0 + WINDOW + 2))  # B, late
        reconciler.run(T0 + WINDOW + 2)
        assert state() == (3, 3 * CPM_10, 0, 0, -1, 1, 2)
        write(fills, fill(ids["E"], line_item, CPM_10))  # read only after its window: released
        reconciler.run(T0 + WINDOW + 3)
        assert state() == (3, 3 * CPM_10, 0, 0, -2, 1, 3)
        assert counted_in_log(tmp_path, 1) == (3, 3 * CPM_10)
        # Pacing reads counted + reserved, the reserved at the render rate seen so far:
        # 1 rendered and 3 expired make (1 + 1) / (1 + 3 + 1) = 0.4, so of 2 new
        # reservations round(2 * 0.6) = 1 is expected never to play.
        for _ in range(2):
            write(fills, fill(new_decision_id(T0 + WINDOW + 3), line_item, CPM_10))
        reconciler.run(T0 + WINDOW + 3)
        ledger.delivery(line_item, T0 + WINDOW + 3)  # pacing asks: its counters are read
        ledger.sync()
        delivery = ledger.delivery(line_item, T0 + WINDOW + 3)
        assert (delivery.impressions, delivery.spend_units) == (3 + 2 - 1, 5 * CPM_10)

        # Redis loses everything: a first pass over the whole log counts the same, and sets
        # what is leased to what is counted and reserved.
        client.delete(*client.keys(f"{shared}*"))
        leased_before = 0
        RedisReconciler(ledger, tmp_path).run(T0 + WINDOW + 4)
        assert state()[:5] == (3, 3 * CPM_10, 2, 2 * CPM_10, 5)
    pixels.close()
    fills.close()


def test_a_restarted_replica_spends_no_budget_again_with_redis(redis_url, tmp_path, quick):
    """The measured failure, on the Redis ledger: a budget of 2 impressions filled 2, and 2
    more after a restart. Now: 2, none after the restart, and the one that never played is
    served again once its render window has passed."""
    from test_auction import book_bidder, serving_app

    database_url = f"sqlite:///{tmp_path / 'backbeat.db'}"
    now = [T0]
    listeners = iter(range(10**6))

    def fills(client, slot_id: int, want: int) -> list[str]:
        """Ask until ``want`` ads filled (leases arrive in the background) or a second passes."""
        urls: list[str] = []

        def more() -> bool:
            url = _impression_url(client, slot_id, f"l{next(listeners)}")
            if url:
                urls.append(url)
            return len(urls) >= want

        wait_until(more, timeout=1.5)
        return urls

    settings = {"redis_url": redis_url}
    with serving_app(tmp_path, database_url, clock=lambda: now[0], **settings) as client:
        booked = book_bidder(client, "10.00")
        item_id = booked["line_item"]["id"]
        patched = client.patch(f"/v1/line-items/{item_id}", json={"budget": "0.02"}, headers=ADMIN)
        assert patched.status_code == 200, patched.text  # two impressions at CPM 10
        slot = create_slot(client, reserve_cpm="1.00", auction="first_price")
        client.app.state.services.ad_server.refresh()
        served = fills(client, slot["id"], 2)
        assert len(served) == 2
        assert fills(client, slot["id"], 1) == []  # the budget is reserved in full
        assert client.get(served[0]).status_code == 204  # one of the two plays
    now[0] += 30
    with serving_app(tmp_path, database_url, clock=lambda: now[0], **settings) as client:
        assert fills(client, slot["id"], 1) == []  # both still spent after the restart
    now[0] += 600  # past the render window: the ad that never played is released
    with serving_app(tmp_path, database_url, clock=lambda: now[0], **settings) as client:
        assert len(fills(client, slot["id"], 1)) == 1
        assert fills(client, slot["id"], 1) == []
    assert counted_in_log(tmp_path / "var" / "events", item_id) == (1, CPM_10)


def test_local_state_of_ended_flights_and_read_fills_is_forgotten(redis_url):
    """Bounded memory: entries, counters and empty leases of flights long over go, and the
    record of our own fills lives at most one render window without a reconciler."""
    from dataclasses import replace

    with RedisLedger(redis_url, prefix=prefix(), render_window_s=WINDOW) as ledger:
        ended = replace(item(1, budget=10**9), end_ts=T0 + 10)
        assert wait_until(lambda: ledger.budget_block(ended, CPM_10, T0) is None)
        ledger.commit_spend(ended, CPM_10, T0, new_decision_id(T0))
        ledger.delivery(ended, T0)
        assert ledger._unread and ledger._counters and ledger._leases
        ledger._now = T0 + WINDOW + 1
        ledger.sync()
        assert not ledger._unread  # past its window: released or counted by now
        ledger._now = T0 + 10 + 8 * 86_400  # a week after the flight
        ledger.delivery(item(2), ledger._now)  # today's entry of a live item stays
        ledger._prune()
        assert list(ledger._entries) == [2]
        assert not [key for key in ledger._leases if key.endswith(("li:1", "c:1001"))]
        assert not [key for key in ledger._counters if key.startswith(f"{ledger.prefix}li:1#")]


def test_a_malformed_record_is_skipped_and_never_stops_the_reader(redis_url, tmp_path):
    shared, line_item = prefix(), item(1, budget=10**9)
    with (
        RedisLedger(redis_url, prefix=shared) as ledger,
        EventLogWriter(tmp_path) as log,
    ):
        for bad in (
            b'{"type":"fill","decision_id":"a|b","line_item_id":1,"campaign_id":1,"price_micros":1}',
            b'{"type":"fill","decision_id":"ab","line_item_id":"x","price_micros":1}',
            b'{"type":"impression","decision_id":"ab","line_item_id":1,"price_micros":-5}',
            b'{"type":"impression", not json',
        ):
            log.append(bad)
        log.append(fill(new_decision_id(T0), line_item, CPM_10))
        log.flush()
        run = RedisReconciler(ledger, tmp_path).run(T0)
        assert (run.leader, run.records, run.reservations, run.impressions) == (True, 5, 1, 0)


def test_a_redis_that_lost_its_data_hands_out_no_budget_twice(redis_url, tmp_path):
    """Redis restarted without persistence: held leases are dropped, floors cover what was
    counted and reserved until the leader has read the log back in."""
    shared, n = prefix(), 10
    line_item = item(1, budget=n * IMPRESSION_MICROS)
    snapshot = Snapshot.of(1, [line_item], [SLOT])
    listeners = iter(range(10**6))
    with (
        RedisLedger(redis_url, prefix=shared, render_window_s=WINDOW) as ledger,
        EventLogWriter(tmp_path) as log,
        redis.Redis.from_url(redis_url) as client,
    ):
        reconciler, decider = RedisReconciler(ledger, tmp_path), Decider(ledger, seed=1)

        def serve(rounds: int) -> int:
            served = 0
            for _ in range(rounds):
                request = AdRequest(slot_id=1, listener=f"l{next(listeners)}")
                decision = decider.decide(snapshot, SLOT, request, T0)
                if decision.line_item is not None:
                    served += 1
                    log.append(fill(decision.id, line_item, CPM_10))
                    if served % 2:  # half of them play
                        log.append(impression(decision.id, line_item, CPM_10, T0))
                    log.flush()
                ledger.sync()
                reconciler.run(T0)
            return served

        before = serve(40)
        assert before == n  # all reserved or counted: nothing is left
        client.delete(*client.keys(f"{shared}*"))  # the data is gone
        ledger.sync()  # notices it
        after = serve(40)
        assert after == 0, after
        assert counted_in_log(tmp_path, 1) == (5, 5 * CPM_10)
