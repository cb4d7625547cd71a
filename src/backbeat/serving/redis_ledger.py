"""The shared ledger for many server replicas: frequency caps in Redis, budgets on local leases.

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

Budgets
    Spend never waits on Redis. Each replica leases chunks of every budget an impression
    draws on (line-item lifetime and daily budget, campaign budget, goal impressions) from
    ``{prefix}lease:<li|lid|c|g>:...`` counters holding the amount leased so far; ``LEASE_LUA``
    grants ``min(want, budget - leased)`` atomically, with the budget taken from the
    caller's snapshot so catalog changes apply at the next grant (a lowered budget claws
    back held leases). ``budget_block`` and ``commit_spend`` only look at and decrement the
    local lease; a background thread refills leases that fall under a low-water mark, so a
    decision that finds a lease short just skips the item (``budget-lease-empty``). Since
    every spend comes out of a lease granted atomically, all replicas together stay within
    budget; unused leases go back on ``close()``. (The one gap: two threads of one replica
    passing ``budget_block`` on the last impression of a lease before either commits; the
    debt is taken out of the next grant, so it only shows at the very end of a budget, by
    at most an impression per extra thread.)

    Lease size (``_want``): the local spend rate over ``LEASE_SECONDS``, capped by half the
    unleased budget per live replica (replicas heartbeat into ``{prefix}replicas``) and by
    1% of the budget, but at least ``MIN_LEASE_IMPRESSIONS`` impressions (never above the
    1% cap unless one impression is more). Near the end leases shrink with what is left,
    so replicas share the tail. A replica that crashes strands at most its leases: about
    1% of each budget it was spending from (the underspend bound).

Delivery
    The background thread also flushes local spend, impressions and pacing attempts every
    ``flush_interval`` with ``FLUSH_LUA`` (HINCRBY per counter, batched into one call) and
    reads back the global totals, so ``delivery`` and ``add_attempts`` are local reads of
    global totals plus what is not yet flushed. Counters and leases are raised to what this
    replica last saw before being added to, so a Redis that lost its data (restart without
    persistence) does not hand out a budget again.

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
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.commands.core import Script
from redis.connection import AbstractConnection
from redis.exceptions import NoScriptError
from redis.retry import Retry

from backbeat.observability import REDIS_ERRORS, REDIS_ROUND_TRIPS, REDIS_UP, log
from backbeat.serving.ledger import DAY, Delivery, day_of
from backbeat.serving.snapshot import ServableLineItem

T = TypeVar("T")

CAP_SLACK_SECONDS = 300  # counters outlive their window a little: clocks differ between replicas
KEEP_AFTER_FLIGHT_SECONDS = 7 * DAY
MIN_LEASE_IMPRESSIONS = 4
LEASE_SECONDS = 10.0  # a lease should last about this long at the recent local spend rate
MAX_LEASE_SHARE = 100  # a lease is at most 1/100 of its budget
EXHAUSTED_RETRY_SECONDS = 2.0  # how often to ask again for a budget that was used up
REPLICA_TTL_SECONDS = 10.0
WATCH_SECONDS = 30.0  # keep pulling global delivery of items pacing asked about this recently
BATCH = 200  # keys per script call: long scripts would stall every replica's caps calls
MICROS = 1000  # CPM-micro units per micro of budget
TIMEOUTS_TO_OPEN = 2

CAPS_LUA = """
-- KEYS: distinct cap counters. ARGV[1]: number of candidates, then per candidate n and
-- n triples (KEYS index, count, ttl). Counts the first candidate under all its caps; a
-- counter's expiry is set when it is created (its window's end is fixed by then).
local at = 2
for candidate = 1, tonumber(ARGV[1]) do
  local n = tonumber(ARGV[at])
  local free = true
  for r = 0, n - 1 do
    local rule = at + 1 + 3 * r
    local used = tonumber(redis.call('GET', KEYS[tonumber(ARGV[rule])])) or 0
    if used >= tonumber(ARGV[rule + 1]) then
      free = false
      break
    end
  end
  if free then
    for r = 0, n - 1 do
      local rule = at + 1 + 3 * r
      local key = KEYS[tonumber(ARGV[rule])]
      if redis.call('INCR', key) == 1 then
        redis.call('EXPIRE', key, ARGV[rule + 2])
      end
    end
    return candidate - 1
  end
  at = at + 1 + 3 * n
end
return -1
"""

LEASE_LUA = """
-- KEYS: amounts leased so far (micros or impressions). ARGV per key: want, budget, floor,
-- held, ttl. Grants min(want, budget - leased); a negative want gives that much back; when
-- the budget was lowered below what is leased, takes back up to what the caller holds.
-- Returns per key: the grant (negative: taken back) and what is left to lease.
local out = {}
for i, key in ipairs(KEYS) do
  local at = 5 * (i - 1)
  local want, budget = tonumber(ARGV[at + 1]), tonumber(ARGV[at + 2])
  local floor, held, ttl = tonumber(ARGV[at + 3]), tonumber(ARGV[at + 4]), tonumber(ARGV[at + 5])
  local leased = tonumber(redis.call('GET', key)) or 0
  if leased < floor then
    redis.call('SET', key, ARGV[at + 3])
    leased = floor
  end
  local grant
  if want < 0 then
    grant = math.max(want, -leased)
  elseif leased > budget then
    grant = -math.min(held, leased - budget)
  else
    grant = math.min(want, budget - leased)
  end
  if grant ~= 0 then
    redis.call('INCRBY', key, string.format('%d', grant))
  end
  if ttl > 0 then
    redis.call('EXPIRE', key, ttl)
  end
  out[2 * i - 1] = grant
  out[2 * i] = budget - leased - grant
end
return out
"""

FLUSH_LUA = """
-- KEYS[1]: replica heartbeats; ARGV[1..3]: replica id, now, stale cutoff. Then per counter
-- KEYS[i] and ARGV field ('' for a plain key), floor, delta, ttl: raise the counter to the
-- floor, add the delta, return its value (strings: exact beyond 2^53).
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
local out = {redis.call('ZCARD', KEYS[1])}
for i = 2, #KEYS do
  local key, at = KEYS[i], 3 + 4 * (i - 2)
  local name, floor, delta, ttl = ARGV[at + 1], ARGV[at + 2], ARGV[at + 3], tonumber(ARGV[at + 4])
  local value
  if name == '' then value = redis.call('GET', key) else value = redis.call('HGET', key, name) end
  if (tonumber(value) or 0) < tonumber(floor) then
    if name == '' then redis.call('SET', key, floor) else redis.call('HSET', key, name, floor) end
  end
  if delta ~= '0' then
    if name == '' then
      redis.call('INCRBY', key, delta)
    else
      redis.call('HINCRBY', key, name, delta)
    end
  end
  if ttl > 0 then
    redis.call('EXPIRE', key, ttl)
  end
  if name == '' then out[i] = redis.call('GET', key) else out[i] = redis.call('HGET', key, name) end
end
return out
"""


class RedisUnavailable(Exception):
    """Redis did not answer (or the breaker is open); the caller falls back to local state."""


@dataclass(slots=True, eq=False)
class _Counter:
    """A delivery counter: the global total last read, plus what is on its way or not sent."""

    key: str
    name: str  # hash field, or "" for a plain key
    ttl_at: float = 0.0  # ledger time after which Redis may forget it (0: never)
    known: int = 0
    inflight: int = 0
    delta: int = 0

    def total(self) -> int:
        return self.known + self.inflight + self.delta


@dataclass(slots=True, eq=False)
class _Lease:
    """Budget this replica may spend without asking Redis, for one budget counter."""

    key: str
    reason: str  # why an item is blocked once the budget is used up
    scale: int  # local units per Redis unit: MICROS for money, 1 for impressions
    floor: Callable[[], int]  # local units known spent globally: a lower bound on leased
    budget: int = -1  # Redis units (micros or impressions), from the latest snapshot
    ttl_at: float = 0.0
    unit: int = 1  # Redis units one impression costs (largest seen)
    available: int = 0  # local units; negative after a race between two threads
    low_water: int = 0
    remaining: int | None = None  # Redis units still unleased at the last grant
    pending: bool = False
    exhausted: bool = False
    retry_at: float = 0.0
    used: int = 0  # local units spent since the last grant
    granted_at: float = 0.0
    rate: float = 0.0  # Redis units per second, smoothed


@dataclass(slots=True, eq=False)
class _Entry:
    """What one line item (as of one snapshot and day) draws on, resolved once."""

    item: ServableLineItem
    day: int
    goal: _Lease | None
    money: tuple[_Lease, ...]  # lifetime, daily, campaign: in the order reasons are given
    units: _Counter
    impressions: _Counter
    today: _Counter
    campaign: _Counter


@dataclass
class _Stats:
    """Round trips by kind, for the benchmark (Prometheus has the same, summed over replicas)."""

    caps: int = 0
    background: int = 0


class RedisLedger:
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
    ) -> None:
        self.url = url
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

    def delivery(self, item: ServableLineItem, now: float) -> Delivery:
        self._watched[item.id] = time.monotonic()
        entry = self._cached(item, now)
        return Delivery(entry.units.total(), entry.impressions.total(), entry.today.total())

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
        shared = {
            key
            for key in self._caps_arguments(listener, [counted], now)[0]
            if counted is not None and counted.caps
        }
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
        decision_id: str = "",  # noqa: ARG002 - shared spend is counted on decisions
    ) -> None:
        entry = self._cached(item, now)
        self._now = now
        with self._lock:
            if entry.goal is not None:
                self._consume(entry.goal, 1)
            if price_units > 0:
                for lease in entry.money:
                    self._consume(lease, price_units)
            for counter, amount in (
                (entry.units, price_units),
                (entry.impressions, 1),
                (entry.today, price_units),
                (entry.campaign, price_units),
            ):
                if amount:
                    counter.delta += amount
                    self._dirty.add(counter)

    def add_attempts(self, attempts: dict[int, int]) -> dict[int, int]:
        """Queue attempts for the next flush; totals are the last global read plus local."""
        with self._lock:
            for item_id, count in attempts.items():
                counter = self._attempts.get(item_id)
                if counter is None:
                    counter = self._attempts[item_id] = _Counter(f"{self.prefix}li:{item_id}", "a")
                if count:
                    counter.delta += count
                    self._dirty.add(counter)
            return {item_id: counter.total() for item_id, counter in self._attempts.items()}

    def seed(self, *, line_items: dict[int, tuple[int, int]], campaigns: dict[int, int]) -> None:
        """Start from delivery counted in the database: a floor for counters and leases."""
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
                self._refill()
                self._flush()

    def close(self) -> None:
        """Stop the background thread, flush delivery and give unused leases back."""
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
            except RedisUnavailable:
                log.warning("redis unreachable at shutdown: delivery not flushed, leases kept")
        for connection in list(self._hot_connections):
            connection.disconnect()  # type: ignore[no-untyped-call]
        self._fast.close()
        self._slow.close()

    def __enter__(self) -> RedisLedger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- local state --------------------------------------------------------------------

    def _counter(self, key: str, name: str, ttl_at: float = 0.0) -> _Counter:
        found = self._counters.get(f"{key}#{name}")
        if found is None:
            found = self._counters[f"{key}#{name}"] = _Counter(key, name)
        if ttl_at:
            found.ttl_at = ttl_at
        return found

    def _lease(
        self,
        key: str,
        reason: str,
        scale: int,
        floor: Callable[[], int],
        budget: int,
        ttl_at: float,
    ) -> _Lease:
        lease = self._leases.get(key)
        if lease is None:
            lease = self._leases[key] = _Lease(key, reason, scale, floor)
        lease.ttl_at = ttl_at
        if lease.budget != budget:
            changed = lease.budget >= 0
            lease.budget = budget
            lease.exhausted = False
            if changed:  # the catalog moved the budget: grant more, or give some back
                self._request(lease)
        return lease

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
            today = self._counter(f"{p}lid:{item.id}:{day}", "", (day + 3) * DAY)
            campaign = self._counter(f"{p}c:{item.campaign_id}", "u", keep)
            goal = None
            if item.goal_impressions is not None:
                goal = self._lease(
                    f"{p}lease:g:{item.id}", "goal-reached", 1,
                    impressions.total, item.goal_impressions, keep,
                )  # fmt: skip
            money = []
            if item.budget_micros is not None:
                money.append(
                    self._lease(
                        f"{p}lease:li:{item.id}", "budget-exhausted", MICROS,
                        units.total, item.budget_micros, keep,
                    )
                )  # fmt: skip
            if item.daily_budget_micros is not None:
                money.append(
                    self._lease(
                        f"{p}lease:lid:{item.id}:{day}", "daily-budget-exhausted", MICROS,
                        today.total, item.daily_budget_micros, (day + 3) * DAY,
                    )
                )  # fmt: skip
            money.append(
                self._lease(
                    f"{p}lease:c:{item.campaign_id}", "campaign-budget-exhausted", MICROS,
                    campaign.total, item.campaign_budget_micros, keep,
                )
            )  # fmt: skip
            entry = _Entry(item, day, goal, tuple(money), units, impressions, today, campaign)
            self._entries[item.id] = entry
        return entry

    def _short(self, lease: _Lease, need: int) -> str:
        """The item cannot spend from ``lease`` now: ask for more in the background."""
        lease.unit = max(lease.unit, -(-need // lease.scale))
        if not lease.exhausted:
            self._request(lease)
            return "budget-lease-empty"
        now = time.monotonic()
        if now >= lease.retry_at:  # replicas may have given leases back since
            lease.retry_at = now + EXHAUSTED_RETRY_SECONDS
            self._request(lease)
        return lease.reason

    def _consume(self, lease: _Lease, amount: int) -> None:
        lease.available -= amount
        lease.used += amount
        if lease.available < lease.low_water and not lease.exhausted:
            self._request(lease)

    def _request(self, lease: _Lease) -> None:
        if not lease.pending:
            lease.pending = True
            self._queue.append(lease)
            self._wake.set()

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

    def _hot_connection(self) -> Any:  # an AbstractConnection, whose methods are unannotated
        """This thread's own connection for the caps script.

        Going through the pool costs about as much as the round trip itself (checkout,
        liveness peek, release); serving threads are long-lived, so each keeps one.
        """
        local = self._local
        connection: Any = getattr(local, "connection", None)
        if connection is not None and local.generation == self._generation:
            return connection
        if connection is not None:
            connection.disconnect()
        pool = self._fast.connection_pool
        connection = pool.connection_class(**pool.connection_kwargs)
        local.connection, local.generation = connection, self._generation
        self._hot_connections.add(connection)
        return connection

    def _run_caps(self, keys: list[str], args: list[int]) -> int:
        connection = self._hot_connection()
        parts = [str(len(keys)).encode(), *(key.encode() for key in keys)]
        parts += [str(arg).encode() for arg in args]
        try:
            try:
                connection.send_packed_command([_resp([b"EVALSHA", self._caps_sha, *parts])])
                return int(connection.read_response())
            except NoScriptError:  # a restarted Redis has forgotten the script
                connection.send_command("SCRIPT", "LOAD", CAPS_LUA)
                self._caps_sha = connection.read_response()
                connection.send_packed_command([_resp([b"EVALSHA", self._caps_sha, *parts])])
                return int(connection.read_response())
        except (redis.ConnectionError, redis.TimeoutError):
            connection.disconnect()  # a reply may still be on its way: never reuse the socket
            raise

    def _run_script(self, operation: str, script: Script, keys: list[str], args: list[Any]) -> Any:
        return self._call(operation, lambda: script(keys, args, client=self._slow))

    def _call(self, operation: str, call: Callable[[], T]) -> T:
        try:
            result = call()
        except redis.TimeoutError as exc:
            # One slow answer is more often a busy machine than a dead server: open only on
            # the second in a row (a hung Redis costs each thread at most one timeout more).
            self._timeouts += 1
            if self._timeouts >= TIMEOUTS_TO_OPEN:
                self._fault(operation, exc)
            else:
                REDIS_ERRORS.labels(operation).inc()
            raise RedisUnavailable(operation) from exc
        except redis.ConnectionError as exc:
            self._fault(operation, exc)
            raise RedisUnavailable(operation) from exc
        except redis.RedisError as exc:
            REDIS_ERRORS.labels(operation).inc()
            log.error("redis call failed", operation=operation, error=repr(exc))
            raise RedisUnavailable(operation) from exc
        self._timeouts = 0
        REDIS_ROUND_TRIPS.labels(operation).inc()
        return result

    def _fault(self, operation: str, exc: Exception) -> None:
        REDIS_ERRORS.labels(operation).inc()
        with self._breaker_lock:
            self._retry_at = time.monotonic() + self.retry_interval
            if not self._up:
                return
            self._up = False
            self._down_since = time.monotonic()
        REDIS_UP.set(0)
        log.warning(
            "redis unreachable: capped items skipped, budgets served from held leases",
            operation=operation,
            error=repr(exc),
        )

    def _probe(self) -> None:
        if time.monotonic() < self._retry_at:
            return
        # Connections from before the outage are dead; drop them rather than fail on each.
        self._fast.connection_pool.disconnect()
        self._slow.connection_pool.disconnect()
        try:
            self._call("ping", self._slow.ping)
        except RedisUnavailable:
            return
        with self._breaker_lock:
            self._generation += 1
            self._up = True
            down = time.monotonic() - self._down_since
        REDIS_UP.set(1)
        log.info("redis reachable again", down_seconds=round(down, 3))

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
                    self._refill()
                    if time.monotonic() >= next_flush:
                        next_flush = time.monotonic() + self.flush_interval
                        self._flush()
                        self._prune()
            except RedisUnavailable:
                continue  # logged by the breaker; leases and counters wait for recovery
            except Exception:  # never let the thread die: serving depends on it
                log.exception("ledger background step failed")

    def _refill(self) -> None:
        batch: list[_Lease] = []
        seen: set[int] = set()
        while self._queue:
            lease = self._queue.popleft()
            if id(lease) not in seen:
                seen.add(id(lease))
                batch.append(lease)
        try:
            for start in range(0, len(batch), BATCH):
                self._grant(batch[start : start + BATCH])
        except RedisUnavailable:
            self._queue.extend(lease for lease in batch if lease.pending)
            raise

    def _grant(self, leases: list[_Lease]) -> None:
        now = time.monotonic()
        wants = [self._want(lease, now) for lease in leases]
        args: list[int] = []
        for lease, want in zip(leases, wants, strict=True):
            held = max(lease.available, 0) // lease.scale
            floor = -(-lease.floor() // lease.scale)
            ttl = int(lease.ttl_at - self._now) if lease.ttl_at else 0
            args += [want, lease.budget, floor, held, max(ttl, 0)]
        keys = [lease.key for lease in leases]
        result = self._run_script("lease", self._lease_script, keys, args)
        self.stats.background += 1
        with self._lock:
            for n, lease in enumerate(leases):
                grant, remaining = int(result[2 * n]), int(result[2 * n + 1])
                lease.available += grant * lease.scale
                lease.remaining = remaining
                lease.exhausted = remaining <= 0 and grant < wants[n]
                lease.granted_at = now
                lease.used = 0
                lease.low_water = max(lease.unit, wants[n] // 3) * lease.scale
                lease.pending = False
                if lease.exhausted:
                    lease.retry_at = now + EXHAUSTED_RETRY_SECONDS

    def _want(self, lease: _Lease, now: float) -> int:
        """How much to ask for, in Redis units; see "Lease size" in the module docstring."""
        if lease.granted_at:
            rate = lease.used / lease.scale / max(now - lease.granted_at, 0.2)
            lease.rate = rate if not lease.rate else (lease.rate + rate) / 2
        unit = max(lease.unit, 1)
        ceiling = max(unit, lease.budget // MAX_LEASE_SHARE)
        least = min(MIN_LEASE_IMPRESSIONS * unit, ceiling)
        remaining = lease.budget if lease.remaining is None else lease.remaining
        share = remaining // (2 * max(self._replicas, 1))
        want = max(least, min(ceiling, int(lease.rate * LEASE_SECONDS), share))
        if lease.available < 0:  # a race spent past the lease: cover it first
            debt = -lease.available
            want += -(-debt // lease.scale)
        return want

    def _flush(self) -> None:
        """Push local deltas, pull global totals (and heartbeat), in batched script calls."""
        cutoff = time.monotonic() - WATCH_SECONDS
        with self._lock:
            counters = set(self._dirty)
            self._dirty.clear()
            for item_id, asked in list(self._watched.items()):
                if asked < cutoff:
                    del self._watched[item_id]
                    continue
                entry = self._entries.get(item_id)
                if entry is not None:
                    counters.update((entry.units, entry.impressions, entry.today))
            batch = list(counters)
            for counter in batch:
                counter.inflight, counter.delta = counter.delta, 0
        try:
            if not batch:
                self._flush_batch([])
            for start in range(0, len(batch), BATCH):
                self._flush_batch(batch[start : start + BATCH])
        except RedisUnavailable:
            with self._lock:
                for counter in batch:
                    if counter.inflight:
                        counter.delta += counter.inflight
                        counter.inflight = 0
                        self._dirty.add(counter)
            raise

    def _flush_batch(self, counters: list[_Counter]) -> None:
        wall = time.time()
        keys = [f"{self.prefix}replicas"]
        args: list[Any] = [self.replica_id, wall, wall - REPLICA_TTL_SECONDS]
        for counter in counters:
            keys.append(counter.key)
            ttl = max(int(counter.ttl_at - self._now), 0) if counter.ttl_at else 0
            args += [counter.name, counter.known, counter.inflight, ttl]
        result = self._run_script("flush", self._flush_script, keys, args)
        self.stats.background += 1
        self._replicas = max(int(result[0]), 1)
        with self._lock:
            for counter, value in zip(counters, result[1:], strict=True):
                counter.known = max(int(value or 0), counter.known + counter.inflight)
                counter.inflight = 0

    def _return_leases(self) -> None:
        with self._lock:
            held = [lease for lease in self._leases.values() if lease.available >= lease.scale]
            amounts = [lease.available // lease.scale for lease in held]
            for lease, amount in zip(held, amounts, strict=True):
                lease.available -= amount * lease.scale
        for start in range(0, len(held), BATCH):
            keys = [lease.key for lease in held[start : start + BATCH]]
            args: list[int] = []
            for amount in amounts[start : start + BATCH]:
                args += [-amount, 0, 0, 0, 0]  # a negative want gives that much back
            self._run_script("lease", self._lease_script, keys, args)

    def _prune(self) -> None:
        """Forget entries, leases and counters of days that are over."""
        yesterday = day_of(self._now) - 1
        with self._lock:
            stale = [item_id for item_id, entry in self._entries.items() if entry.day < yesterday]
            for item_id in stale:
                del self._entries[item_id]
            for key in _daily_keys(self._leases, self.prefix + "lease:lid:", yesterday):
                del self._leases[key]
            for key in _daily_keys(self._counters, self.prefix + "lid:", yesterday):
                if not self._counters[key].delta:
                    del self._counters[key]


def _resp(parts: list[bytes]) -> bytes:
    """One command in the Redis protocol; half the cost of redis-py's general encoder."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        out += (b"$%d\r\n" % len(part), part, b"\r\n")
    return b"".join(out)


def _daily_keys(table: dict[str, Any], prefix: str, before: int) -> Iterable[str]:
    """Keys of per-day leases or counters (``<prefix><id>:<day>...``) for days before ``before``."""
    stale = []
    for key in table:
        if key.startswith(prefix):
            day = key[len(prefix) :].split(":", 1)[1].split("#", 1)[0]
            if int(day) < before:
                stale.append(key)
    return stale
