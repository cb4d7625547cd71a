"""The shared ledger for many server replicas: frequency caps in Redis, budgets on local leases.

Modules: ``redis_scripts`` (the Lua), ``redis_protocol`` (the hot-path connection and
command packing), ``redis_breaker`` (timeouts, the circuit breaker, recovery),
``redis_leases`` (budget leases), ``redis_flushes`` (delivery counters); this one composes
them into the ``Ledger`` (hot-path methods, entries per line item, the background thread).
Decisions on it do socket I/O (``blocking``): async handlers run them on a thread.

Frequency caps
    ``acquire_caps`` is one EVALSHA of ``CAPS_LUA``: given the listener and the ordered
    candidates' cap rules it finds, atomically, the first candidate under all its caps,
    increments that candidate's counters and returns its index. Counters are
    ``{prefix}cap:{<listener>}:<scope>:<window seconds>:<window start>`` (``...:<scope>:f``
    for whole-flight caps), set to expire when created: a few minutes after their window
    ends (whole-flight counters: a week after the flight). The listener is a hash tag, so
    one listener's counters share a Redis Cluster slot. Only the candidates before the
    first uncapped one are sent, so when the first candidate has no cap there is no Redis
    call at all. Each serving thread keeps its own connection for this call. A Redis that
    loses its data forgets the counters (caps restart): give it persistence in production.

Budgets: one currency, counted impressions
    Budgets and goals are spent by impressions counted from the event log, as with the
    in-memory ledger (``serving/ledger.py``). A decision *reserves* its price: it takes it
    out of this replica's budget leases (below) and logs a ``fill`` record. The reconciler
    (``serving/redis_reconcile.py``, one replica per event log at a time) turns fills into
    reservations held in Redis, impressions into counted spend, and gives back to the
    leases what reservations past their render window took. So per budget, what Redis
    has leased is always held leases + fills not yet read + reserved + counted: never
    more than the budget, across every replica and restart, and what never played is
    served again until the budget is counted in full.

    Each replica leases chunks of every budget an impression draws on (line-item lifetime
    and daily budget, campaign budget, goal impressions) from
    ``{prefix}lease:<li|lid|c|g>:...`` counters holding the amount leased so far; ``LEASE_LUA``
    grants ``min(want, budget - leased)`` atomically, with the budget taken from the
    caller's snapshot so catalog changes apply at the next grant (a lowered budget claws
    back held leases). ``budget_block`` and ``commit_spend`` only look at and decrement the
    local lease; a background thread refills leases that fall under a low-water mark, so a
    decision that finds a lease short just skips the item (``budget-lease-empty``).
    Unused leases go back on ``close()``. (The one gap: two threads of one replica
    passing ``budget_block`` on the last impression of a lease before either commits; the
    debt is taken out of the next grant, so it only shows at the very end of a budget, by
    at most an impression per extra thread.)

    Lease size (``_want``): the local spend rate over ``LEASE_SECONDS``, capped by half the
    unleased budget per live replica (replicas heartbeat into ``{prefix}replicas``) and by
    1% of the budget, but at least ``MIN_LEASE_IMPRESSIONS`` impressions (never above the
    1% cap unless one impression is more). Near the end leases shrink with what is left,
    so replicas share the tail. A replica that crashes strands at most its leases: about
    1% of each budget it was spending from (the underspend bound); its reservations are
    in the log and are counted or released like anyone's.

Delivery
    The reconciler keeps per line item counted and reserved impressions and spend
    (``{prefix}li:<id>`` fields ``i``, ``u``, ``ri``, ``ru``; per day ``lday:<id>:<day>``;
    per campaign ``c:<id>``) and the global render rate (``render``). The background thread
    reads those of items spending here or asked about by pacing every ``flush_interval``
    with ``FLUSH_LUA`` (batched, with the pacing attempts it adds up), so ``delivery`` is
    a local read: counted + reserved, the reserved discounted by the render rate for the
    impressions pacing aims with, plus this replica's fills the reconciler has not read
    yet. Leases are raised to the counted spend this replica last saw before granting. A
    Redis that lost its data (restart without persistence) is noticed by its
    ``{prefix}epoch`` key: replicas drop the leases they held and pin each lease's floor at
    counted + reserved (as last read) + their fills not yet read, until the reconciler has
    read the whole log back in, so no budget is handed out twice (what other replicas
    spend from leases they held before they notice is the bound).

Outage
    Calls use a short socket timeout and no retries. A refused connection, or a second
    timeout in a row, opens a circuit breaker: capped candidates are skipped (``caps-unavailable``) without touching the
    network, budgeted items serve only from leases already held, house and uncapped items
    still fill. The background thread pings every ``retry_interval`` and closes the breaker
    when Redis answers. The fault is logged once and exposed as ``backbeat_redis_up`` and
    ``backbeat_redis_errors_total``.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.commands.core import Script
from redis.connection import AbstractConnection
from redis.retry import Retry

from backbeat.observability import REDIS_UP, log
from backbeat.serving.ledger import (
    DAY,
    DEFAULT_DEDUP_S,
    DEFAULT_RENDER_WINDOW_S,
    Delivery,
    day_of,
)
from backbeat.serving.redis_breaker import Breaker, RedisUnavailable
from backbeat.serving.redis_flushes import Flushes, _Counter
from backbeat.serving.redis_leases import Leases, _Lease
from backbeat.serving.redis_protocol import HotPath
from backbeat.serving.redis_scripts import CAPS_LUA, FLUSH_LUA, LEASE_LUA, UNLOCK_LUA
from backbeat.serving.snapshot import ServableLineItem

__all__ = ["RedisLedger", "RedisUnavailable"]

CAP_SLACK_SECONDS = 300  # counters outlive their window a little: clocks differ between replicas
KEEP_AFTER_FLIGHT_SECONDS = 7 * DAY
MICROS = 1000  # CPM-micro units per micro of budget


@dataclass(slots=True, eq=False)
class _Entry:
    """What one line item (as of one snapshot and day) draws on, resolved once."""

    item: ServableLineItem
    day: int
    goal: _Lease | None
    money: tuple[_Lease, ...]  # lifetime, daily, campaign: in the order reasons are given
    units: _Counter  # counted (read from Redis, kept by the reconciler)
    impressions: _Counter
    today: _Counter
    campaign: _Counter
    reserved_units: _Counter
    reserved_impressions: _Counter
    reserved_today: _Counter

    def counters(self) -> tuple[_Counter, ...]:
        """What ``delivery`` reads (the campaign's counted spend only floors its lease)."""
        return (
            self.units, self.impressions, self.today,
            self.reserved_units, self.reserved_impressions, self.reserved_today,
        )  # fmt: skip


class _Unread:
    """This replica's fills the reconciler has not read yet, per second (for ``delivery``)."""

    __slots__ = ("buckets",)

    def __init__(self) -> None:
        self.buckets: deque[list[int]] = deque()  # [second, impressions, units, day]

    def add(self, now: float, units: int) -> None:
        second = int(now)
        last = self.buckets[-1] if self.buckets else None
        if last is not None and last[0] == second:
            last[1] += 1
            last[2] += units
        else:
            self.buckets.append([second, 1, units, day_of(now)])

    def drop_until(self, second: int) -> None:
        while self.buckets and self.buckets[0][0] <= second:
            self.buckets.popleft()

    def totals(self, day: int) -> tuple[int, int, int]:
        impressions = units = today = 0
        for _, n, amount, on in tuple(self.buckets):  # a copy: decisions append meanwhile
            impressions += n
            units += amount
            today += amount if on == day else 0
        return impressions, units, today


@dataclass
class _Stats:
    """Round trips by kind, for the benchmark (Prometheus has the same, summed over replicas)."""

    caps: int = 0
    background: int = 0


class RedisLedger(HotPath, Breaker, Leases, Flushes):
    """``Ledger`` shared by every replica through one Redis; see the module docstring."""

    blocking = True  # decisions do socket I/O: async callers run them on a thread

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "bb:",
        socket_timeout: float = 0.05,
        background_timeout: float = 1.0,
        flush_interval: float = 1.0,
        retry_interval: float = 1.0,
        replica_id: str | None = None,
        render_window_s: float = DEFAULT_RENDER_WINDOW_S,
        dedup_s: float = DEFAULT_DEDUP_S,
    ) -> None:
        self.url = url
        self.render_window_s = render_window_s
        self.dedup_s = dedup_s
        self.prefix = prefix
        self.replica_id = replica_id or uuid.uuid4().hex[:12]
        self.flush_interval = flush_interval
        self.retry_interval = retry_interval
        no_retry = Retry(NoBackoff(), 0)
        # Two pools: the hot path waits at most ``socket_timeout``; batched background scripts
        # may take longer without tripping the breaker.
        self._fast = redis.Redis.from_url(
            url,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_timeout,
            retry=no_retry,
        )
        self._slow = redis.Redis.from_url(
            url,
            socket_timeout=background_timeout,
            socket_connect_timeout=socket_timeout,
            retry=no_retry,
        )
        self._caps_sha: bytes = self._fast.register_script(CAPS_LUA).sha.encode()
        self._lease_script = self._slow.register_script(LEASE_LUA)
        self._flush_script = self._slow.register_script(FLUSH_LUA)
        self.stats = _Stats()

        self._lock = threading.Lock()  # local leases and counters
        self._io_lock = threading.Lock()  # one refill or flush at a time
        self._entries: dict[int, _Entry] = {}
        self._leases: dict[str, _Lease] = {}
        self._counters: dict[str, _Counter] = {}
        self._attempts: dict[int, _Counter] = {}
        self._dirty: set[_Counter] = set()
        self._watched: dict[int, float] = {}
        self._unread: dict[int, _Unread] = {}
        self._rendered = _Counter(f"{prefix}render", "rendered")
        self._expired = _Counter(f"{prefix}render", "expired")
        self._reconciled_at: _Counter | None = None  # set by the reconciler of our event log
        self.reconcile_lock_key = ""
        self._epoch: bytes | None = None  # Redis's data, as first seen: a new one means lost
        self._lost_at_ms: int | None = None  # Redis lost its data then; not yet read back in
        self._queue: deque[_Lease] = deque()
        self._replicas = 1
        self._now = time.time()  # latest ledger time seen, for expiries set in the background

        self._up = True
        self._down_since = 0.0
        self._retry_at = 0.0
        self._timeouts = 0
        self._breaker_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._local = threading.local()
        self._generation = 0  # bumped when Redis comes back: threads drop their old connection
        self._hot_connections: weakref.WeakSet[AbstractConnection] = weakref.WeakSet()
        REDIS_UP.set(1)
        with contextlib.suppress(RedisUnavailable):  # logged; house and uncapped items serve
            self._call("ping", self._slow.ping)
        self._thread = threading.Thread(target=self._run, name="backbeat-ledger", daemon=True)
        self._thread.start()

    @property
    def up(self) -> bool:
        """Whether Redis answered the last call (the breaker is closed)."""
        return self._up

    # -- hot path -----------------------------------------------------------------------

    @property
    def render_rate(self) -> float:
        """Share of reservations that became counted impressions, all replicas (prior: 1)."""
        rendered, expired = self._rendered.total(), self._expired.total()
        return (rendered + 1) / (rendered + expired + 1)

    def delivery(self, item: ServableLineItem, now: float) -> Delivery:
        """Counted + reserved (+ our fills not yet read); impressions expected to render."""
        self._watched[item.id] = time.monotonic()
        entry = self._cached(item, now)
        unread = self._unread.get(item.id)
        impressions, units, today = unread.totals(entry.day) if unread else (0, 0, 0)
        reserved = entry.reserved_impressions.total() + impressions
        expected_lost = round(reserved * (1.0 - self.render_rate))
        return Delivery(
            entry.units.total() + entry.reserved_units.total() + units,
            entry.impressions.total() + reserved - expected_lost,
            entry.today.total() + entry.reserved_today.total() + today,
        )

    def budget_block(self, item: ServableLineItem, price_units: int, now: float) -> str | None:
        entry = self._cached(item, now)
        goal = entry.goal
        if goal is not None and goal.available < 1:
            return self._short(goal, 1)
        if price_units > 0:
            for lease in entry.money:
                if lease.available < price_units:
                    return self._short(lease, price_units)
        return None

    def acquire_caps(
        self, listener: str, candidates: Sequence[ServableLineItem], now: float
    ) -> tuple[int | None, str]:
        uncapped = next((n for n, item in enumerate(candidates) if not item.caps), None)
        if uncapped == 0:
            return 0, ""
        capped = candidates if uncapped is None else candidates[:uncapped]
        if not capped:
            return None, "frequency-capped"
        if self._up:
            keys, args = self._caps_arguments(listener, capped, now)
            try:
                position = self._call("caps", lambda: self._run_caps(keys, args))
            except RedisUnavailable:
                pass
            else:
                self.stats.caps += 1
                if position >= 0:
                    return position, ""
                return (None, "frequency-capped") if uncapped is None else (uncapped, "")
        # Without Redis a capped item cannot be counted, so it must not serve.
        return (None, "caps-unavailable") if uncapped is None else (uncapped, "")

    def caps_allow(
        self,
        listener: str,
        item: ServableLineItem,
        now: float,
        counted: ServableLineItem | None = None,
    ) -> bool:
        """Read ``item``'s cap counters (one MGET, counts nothing); unknown without Redis."""
        if not item.caps:
            return True
        if not self._up:
            return False  # unknown: a rival that may be capped must not set a price
        keys, args = self._caps_arguments(listener, [item], now)
        try:
            values = self._call("caps", lambda: self._fast.mget(keys))
        except RedisUnavailable:
            return False
        shared = (
            set(self._caps_arguments(listener, [counted], now)[0])
            if counted is not None and counted.caps
            else set()
        )
        used = {
            key: int(value or 0) - (key in shared) for key, value in zip(keys, values, strict=True)
        }
        triples = args[2:]
        return all(
            used[keys[triples[at] - 1]] < triples[at + 1] for at in range(0, len(triples), 3)
        )

    def commit_spend(
        self,
        item: ServableLineItem,
        price_units: int,
        now: float,
        decision_id: str = "",  # noqa: ARG002 - the fill record carries it to the reconciler
    ) -> None:
        """Reserve: take the price out of the leases; the reconciler reads the fill record."""
        entry = self._cached(item, now)
        self._now = now
        with self._lock:
            if entry.goal is not None:
                self._consume(entry.goal, 1)
            if price_units > 0:
                for lease in entry.money:
                    self._consume(lease, price_units)
            unread = self._unread.get(item.id)
            if unread is None:
                unread = self._unread[item.id] = _Unread()
            unread.add(now, price_units)
        # Its counted and reserved spend are read back while it spends: the floors of its
        # leases should Redis lose its data.
        self._watched[item.id] = time.monotonic()

    def add_attempts(self, attempts: dict[int, int]) -> dict[int, int]:
        """Queue attempts for the next flush; totals are the last global read plus local."""
        with self._lock:
            for item_id, count in attempts.items():
                counter = self._attempts.get(item_id)
                if counter is None:
                    counter = _Counter(f"{self.prefix}li:{item_id}", "a", pushed=True)
                    self._attempts[item_id] = counter
                if count:
                    counter.delta += count
                    self._dirty.add(counter)
            return {item_id: counter.total() for item_id, counter in self._attempts.items()}

    def seed(self, *, line_items: dict[int, tuple[int, int]], campaigns: dict[int, int]) -> None:
        """Start from delivery counted in the database: a floor for leases until Redis answers."""
        with self._lock:
            for item_id, (units, impressions) in line_items.items():
                self._counter(f"{self.prefix}li:{item_id}", "u").known = units
                self._counter(f"{self.prefix}li:{item_id}", "i").known = impressions
            for campaign_id, units in campaigns.items():
                self._counter(f"{self.prefix}c:{campaign_id}", "u").known = units

    # -- lifecycle ----------------------------------------------------------------------

    def sync(self) -> None:
        """Refill requested leases and flush delivery now (the background thread does it too)."""
        with self._io_lock:
            if self._up:
                self._check_epoch()
                self._refill()
                self._flush()

    def watch_reconciled(self, key: str, lock_key: str) -> None:
        """The reconciler of this replica's event log: when it last read the log, its lock."""
        # Not monotonic: a Redis that lost its data has none until the log is read back in.
        self._reconciled_at = _Counter(key, "", monotonic=False)
        self.reconcile_lock_key = lock_key

    def release_lock(self, key: str) -> None:
        """Give up a lock this replica holds (the reconciler's, on shutdown)."""
        self._call("reconcile", lambda: self._slow.eval(UNLOCK_LUA, 1, key, self.replica_id))

    def close(self) -> None:
        """Stop the background thread, flush attempts, give unused leases and the lock back."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=5)
        with self._io_lock:
            if not self._up:
                self._probe()
            try:
                if not self._up:
                    raise RedisUnavailable("close")
                self._flush()
                self._return_leases()
                if self.reconcile_lock_key:
                    self.release_lock(self.reconcile_lock_key)
            except RedisUnavailable:
                log.warning("redis unreachable at shutdown: leases kept")
        for connection in list(self._hot_connections):
            connection.disconnect()  # type: ignore[no-untyped-call]
        self._fast.close()
        self._slow.close()

    def __enter__(self) -> RedisLedger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- local state --------------------------------------------------------------------

    def _cached(self, item: ServableLineItem, now: float) -> _Entry:
        entry = self._entries.get(item.id)
        if entry is None or entry.item is not item or entry.day != day_of(now):
            entry = self._entry(item, now)
        return entry

    def _entry(self, item: ServableLineItem, now: float) -> _Entry:
        """Resolve (and cache) the leases and counters ``item`` draws on today."""
        day = day_of(now)
        self._now = now
        p = self.prefix
        keep = item.end_ts + KEEP_AFTER_FLIGHT_SECONDS
        with self._lock:
            units = self._counter(f"{p}li:{item.id}", "u", keep)
            impressions = self._counter(f"{p}li:{item.id}", "i", keep)
            today = self._counter(f"{p}lday:{item.id}:{day}", "u", (day + 3) * DAY)
            campaign = self._counter(f"{p}c:{item.campaign_id}", "u", keep)
            reserved_units = self._counter(f"{p}li:{item.id}", "ru", keep, monotonic=False)
            reserved = self._counter(f"{p}li:{item.id}", "ri", keep, monotonic=False)
            reserved_today = self._counter(
                f"{p}lday:{item.id}:{day}", "ru", (day + 3) * DAY, monotonic=False
            )
            goal = None
            if item.goal_impressions is not None:
                goal = self._lease(
                    f"{p}lease:g:{item.id}", "goal-reached", 1,
                    lambda: impressions.total() + self._after_loss(item.id, reserved, 1),
                    item.goal_impressions, keep,
                )  # fmt: skip
            money = []
            if item.budget_micros is not None:
                money.append(
                    self._lease(
                        f"{p}lease:li:{item.id}", "budget-exhausted", MICROS,
                        lambda: units.total() + self._after_loss(item.id, reserved_units, 2),
                        item.budget_micros, keep,
                    )
                )  # fmt: skip
            if item.daily_budget_micros is not None:
                money.append(
                    self._lease(
                        f"{p}lease:lid:{item.id}:{day}", "daily-budget-exhausted", MICROS,
                        lambda: today.total() + self._after_loss(item.id, reserved_today, 3, day),
                        item.daily_budget_micros, (day + 3) * DAY,
                    )
                )  # fmt: skip
            money.append(
                self._lease(
                    f"{p}lease:c:{item.campaign_id}", "campaign-budget-exhausted", MICROS,
                    campaign.total, item.campaign_budget_micros, keep,
                )
            )  # fmt: skip
            entry = _Entry(
                item, day, goal, tuple(money), units, impressions, today, campaign,
                reserved_units, reserved, reserved_today,
            )  # fmt: skip
            self._entries[item.id] = entry
        return entry

    def _after_loss(self, item_id: int, reserved: _Counter, part: int, day: int = -1) -> int:
        """What a lease's floor adds while Redis has lost its data and the log is not read
        back yet: reserved as last seen, and our fills not yet read (impressions, units,
        today's units: ``part`` 1, 2, 3). A budget is not handed out twice meanwhile."""
        if self._lost_at_ms is None:
            return 0
        unread = self._unread.get(item_id)
        local = unread.totals(day)[part - 1] if unread else 0
        return reserved.total() + local

    def _check_epoch(self) -> None:
        """Notice a Redis that lost its data (restarted without persistence): ``{prefix}epoch``
        is set once; a missing or different one means every lease and counter is gone."""
        mine = uuid.uuid4().hex.encode()
        key = f"{self.prefix}epoch"
        found = self._call("epoch", lambda: self._slow.set(key, mine, nx=True, get=True))
        current = mine if found is None else found
        if self._epoch is not None and current != self._epoch:
            log.warning("redis lost its data: held leases dropped, the log is read back in")
            with self._lock:
                self._lost_at_ms = int(self._now * 1000)
                if self._reconciled_at is not None:
                    self._reconciled_at.known = 0  # until the leader has read the log back
                for lease in self._leases.values():
                    # What it held was granted by the lost data; the floor, pinned before the
                    # reserved counters read empty, covers what was counted and reserved.
                    lease.available = min(lease.available, 0)
                    lease.remaining = None
                    lease.exhausted = False
                    lease.pinned = lease.floor()
        self._epoch = current
        read = self._reconciled_at
        if self._lost_at_ms is not None and read is not None and read.known >= self._lost_at_ms:
            self._lost_at_ms = None  # the leader has read the log back in
            with self._lock:
                for lease in self._leases.values():
                    lease.pinned = 0

    def _caps_arguments(
        self, listener: str, candidates: Sequence[ServableLineItem], now: float
    ) -> tuple[list[str], list[int]]:
        keys: list[str] = []
        index: dict[str, int] = {}
        args: list[int] = [len(candidates)]
        tag = f"{self.prefix}cap:{{{listener}}}:"
        for item in candidates:
            rules: dict[int, list[int]] = {}
            for rule in item.caps:
                if rule.window_seconds is None:
                    key = f"{tag}{rule.scope}:f"
                    ttl = int(item.end_ts - now) + KEEP_AFTER_FLIGHT_SECONDS  # room for extensions
                else:
                    start = rule.window_start(now)
                    key = f"{tag}{rule.scope}:{rule.window_seconds}:{start}"
                    ttl = int(start + rule.window_seconds - now) + CAP_SLACK_SECONDS
                position = index.get(key)
                if position is None:
                    keys.append(key)
                    position = index[key] = len(keys)
                found = rules.get(position)
                if found is None:
                    rules[position] = [position, rule.count, max(ttl, 1)]
                else:  # two rules on one counter: the stricter count, the longer life
                    found[1] = min(found[1], rule.count)
                    found[2] = max(found[2], ttl)
            args.append(len(rules))
            for triple in rules.values():
                args.extend(triple)
        return keys, args

    # -- Redis calls and the breaker ----------------------------------------------------

    def _run_script(self, operation: str, script: Script, keys: list[str], args: list[Any]) -> Any:
        return self._call(operation, lambda: script(keys, args, client=self._slow))

    # -- background ---------------------------------------------------------------------

    def _run(self) -> None:
        next_flush = time.monotonic()
        while not self._stop.is_set():
            self._wake.wait(max(0.0, min(next_flush - time.monotonic(), self.retry_interval)))
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                with self._io_lock:
                    if not self._up:
                        self._probe()
                        if not self._up:
                            continue
                        next_flush = 0.0  # back: look for lost data before granting anything
                    if time.monotonic() >= next_flush:
                        next_flush = time.monotonic() + self.flush_interval
                        self._check_epoch()
                        self._refill()
                        self._flush()
                        self._prune()
                    else:
                        self._refill()
            except RedisUnavailable:
                continue  # logged by the breaker; leases and counters wait for recovery
            except Exception:  # never let the thread die: serving depends on it
                log.exception("ledger background step failed")
