"""The in-memory ledger spends a budget in counted impressions even when ads never render
(issue 10): the same scenario as the Redis ledger's test, one server restarted half-way."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st
from test_decider_properties import T0, UNIT, ad_slot, line_item

from backbeat.catalog.vocabulary import AuctionType
from backbeat.eventlog import EventLogReader, EventLogWriter
from backbeat.events import Event, EventType
from backbeat.serving.decisions import Decider
from backbeat.serving.ledger import Delivery, MemoryLedger
from backbeat.serving.reconcile import Reconciler
from backbeat.serving.request import AdRequest
from backbeat.serving.snapshot import CapRule, Snapshot
from backbeat.signing import TrackingClaims

WINDOW = 60.0


def test_n_impressions_of_budget_end_as_n_counted_across_a_restart(tmp_path):
    n, price = 50, 10 * UNIT
    item = line_item(1, cpm_micros=price, budget_micros=n * price // 1000)
    slot = ad_slot(auction=AuctionType.FIRST_PRICE)
    snapshot = Snapshot.of(1, [item], [slot])
    rng, now, listeners = random.Random(3), T0, iter(range(10**9))
    ledger = MemoryLedger(render_window_s=WINDOW)
    reconciler = Reconciler(ledger, tmp_path)
    log = EventLogWriter(tmp_path)
    for round_ in range(100):
        for _ in range(5):
            decision = Decider(ledger).decide(
                snapshot, slot, AdRequest(1, f"l{next(listeners)}"), now
            )
            if decision.line_item is None:
                break
            log.append(Event(type=EventType.FILL, ts=now, decision_id=decision.id, line_item_id=1,
                             campaign_id=item.campaign_id, price_micros=price,
                             currency="USD").to_bytes())  # fmt: skip
            if rng.random() < 0.7:  # it plays (sometimes its pixel twice)
                for _ in range(1 + (rng.random() < 0.2)):
                    log.append(Event(type=EventType.IMPRESSION, ts=now, decision_id=decision.id,
                                     line_item_id=1, campaign_id=item.campaign_id,
                                     price_micros=price, currency="USD").to_bytes())  # fmt: skip
        log.flush()
        reconciler.run(now)
        counted = len({
            event.decision_id
            for record in EventLogReader(tmp_path).records()
            if (event := Event.from_bytes(record.payload)).type == EventType.IMPRESSION
        })  # fmt: skip
        assert counted <= n
        if round_ == 5:  # restart: a fresh ledger rebuilt from the log before serving
            ledger = MemoryLedger(render_window_s=WINDOW)
            reconciler = Reconciler(ledger, tmp_path)
            reconciler.run(now)
        if counted == n:
            break
        now += 7.0
    log.close()
    assert counted == n
    assert ledger.delivery(item, now).spend_units == n * price  # nothing reserved is left
    assert ledger.expired > 0.15 * (ledger.expired + ledger.rendered)


def test_skipping_own_segments_leaves_the_ledger_as_reading_them_does(tmp_path):
    """A worker never reads its own segments: its fills are reservations from decision time
    and its impressions are handed over once durable (``count_acknowledged``). Its ledger
    ends the same as one that reads every record back, replayed pixels and all."""
    price = 10 * UNIT
    item = line_item(1, cpm_micros=price, budget_micros=1000 * price)
    own, peer = EventLogWriter(tmp_path), EventLogWriter(tmp_path)
    skipping, reading = MemoryLedger(render_window_s=WINDOW), MemoryLedger(render_window_s=WINDOW)
    skipper, reader = Reconciler(skipping, tmp_path), Reconciler(reading, tmp_path)
    skipper.skip_own_segments(own.writer_id)
    rng, now = random.Random(5), T0
    for n in range(80):
        mine = rng.random() < 0.5
        decision_id = f"{int(now * 1000):012x}{n:016x}"
        if mine:  # decided here: both ledgers hold the reservation made at decision time
            for held in (skipping, reading):
                held.commit_spend(item, price, now, decision_id)
        writer = own if mine else peer
        writer.append(Event(type=EventType.FILL, ts=now, decision_id=decision_id, line_item_id=1,
                            campaign_id=item.campaign_id, price_micros=price,
                            currency="USD").to_bytes())  # fmt: skip
        for _ in range(rng.choice((0, 0, 1, 1, 2))):  # it plays, maybe with a replayed pixel
            impression = Event(type=EventType.IMPRESSION, ts=now, decision_id=decision_id,
                               line_item_id=1, campaign_id=item.campaign_id, price_micros=price,
                               currency="USD")  # fmt: skip
            if rng.random() < 0.5:  # tracked here: durable, then handed to the ledger
                own.append(impression.to_bytes()).result()
                claims = TrackingClaims(decision_id, 1, item.campaign_id, 1, 1, price, "USD",
                                        "l", int(now) + 3600)  # fmt: skip
                skipper.count_acknowledged([claims], now)
            else:
                peer.append(impression.to_bytes())
        if n % 7 == 0:
            own.flush(), peer.flush()
            for reconciler in (skipper, reader):
                reconciler.run(now)
            assert skipping.delivery(item, now) == reading.delivery(item, now)
            assert skipping.reserved() == reading.reserved()
        now += 3.0
    own.close(), peer.close()
    for reconciler in (skipper, reader):
        reconciler.run(now + 2 * WINDOW)  # every reservation is now counted or released
    assert skipping.delivery(item, now) == reading.delivery(item, now)
    assert skipping.reserved() == reading.reserved() == 0
    impressions = {
        event.decision_id
        for record in EventLogReader(tmp_path).records()
        if (event := Event.from_bytes(record.payload)).type == EventType.IMPRESSION
    }
    assert skipping.delivery(item, now).spend_units == len(impressions) * price
    assert impressions  # the run had deliveries to count


def test_a_skipped_segment_is_never_read(tmp_path):
    """Skipping is by segment name: another writer's records still come through, whole."""
    own, peer = EventLogWriter(tmp_path), EventLogWriter(tmp_path)
    for n in range(5):
        own.append(f"own {n}".encode())
        peer.append(f"peer {n}".encode())
    own.flush(), peer.flush()
    reader = EventLogReader(tmp_path)
    reader.skip_segments(own.writer_id + "-")
    assert [record.payload for record in reader.records()] == [
        f"peer {n}".encode() for n in range(5)
    ]
    everything = sorted(record.payload for record in EventLogReader(tmp_path).records())
    assert everything == sorted(f"{who} {n}".encode() for who in ("own", "peer") for n in range(5))
    own.close(), peer.close()


_WINDOWS = (60, 3600, 86400, None)
_FLIGHT_END = T0 + 2 * 86400  # the whole-flight item's flight


@settings(max_examples=80, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.integers(0, 3),  # which item (its cap window)
            st.integers(0, 5),  # which listener
            st.sampled_from([0, 1, 30, 59, 600, 3600, 5000, 86400, 3 * 86400]),  # seconds on
            st.booleans(),  # prune after the step
            st.booleans(),  # the whole-flight item still in the snapshot at that prune
        ),
        max_size=120,
    )
)
def test_pruning_keeps_exactly_the_cap_counters_still_needed(steps):
    """Reference: every counter ever counted, less the windows that ended by the prune and
    the whole-flight counters of a flight over for a week that no live item counts on."""
    from backbeat.serving.ledger import FLIGHT_GRACE_S

    items = [
        line_item(n + 1, caps=(CapRule(f"li:{n + 1}", 3, window),), end_ts=_FLIGHT_END)
        for n, window in enumerate(_WINDOWS)
    ]
    ledger = MemoryLedger()
    reference: dict[tuple, int] = {}
    now = T0
    for which, listener, elapsed, prune, flight_live in steps:
        now += elapsed
        item = items[which]
        rule = item.caps[0]
        key = (rule.scope, f"l{listener}", rule.window_seconds, rule.window_start(now))
        expected = reference.get(key, 0) < rule.count
        assert (ledger.acquire_caps(f"l{listener}", [item], now)[0] == 0) is expected
        if expected:
            reference[key] = reference.get(key, 0) + 1
        if prune:
            live = {f"li:{n + 1}" for n in range(3)} | ({"li:4"} if flight_live else set())
            ledger.prune(now, live_scopes=live)
            flight_over = now >= _FLIGHT_END + FLIGHT_GRACE_S and not flight_live
            reference = {
                key: count
                for key, count in reference.items()
                if (key[2] is None and not flight_over)
                or (key[2] is not None and key[3] + key[2] > now)
            }
            assert ledger.cap_counters() == len(reference)
            assert dict(ledger._caps) == reference


def test_held_reservations_cost_the_cyclic_gc_nothing():
    """A server holds a render window of reservations (millions when busy): once a collection
    has seen them, the GC no longer tracks them, so full collections do not walk them."""
    import gc

    ledger = MemoryLedger(render_window_s=WINDOW)
    item = line_item(1, cpm_micros=2 * UNIT)
    for n in range(1000):
        ledger.commit_spend(item, 2000, T0, decision_id=f"{n:028x}")
        ledger.reserve(f"{n + 5000:028x}", 1, 1, 2000, T0)  # another worker's fill
    gc.collect()
    held = list(ledger._reserved.values())
    assert len(held) == 2000
    assert not any(gc.is_tracked(reservation) for reservation in held)
    # And they still expire and release what they held.
    assert ledger.expire(T0 + WINDOW + 1) == 2000
    assert ledger.delivery(item, T0 + WINDOW + 1) == Delivery(0, 0, 0)
