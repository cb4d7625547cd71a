"""Bring the shared (Redis) ledger up to counted delivery by reading the event log.

Budgets are spent in counted impressions (``serving/ledger.py``). Every replica's decisions
take their price out of its budget leases and log a ``fill`` record; this reconciler turns
those records into reservations held in Redis, impressions into counted spend (once per
decision id, however many replicas or logs see a replayed pixel), and gives the leases of
reservations past their render window back, so the budget serves again.

Which replica reconciles: one per event log at a time, the holder of a lock in Redis
(``recon:<log id>:lock``, renewed on every step, so another replica takes over within
``LOCK_SECONDS`` of a crash). Its position in the log (per-segment offsets) lives in Redis
too and moves in the same atomic script that applies the records, so a record is applied
once even when the leader changes mid-pass. Replicas sharing a log directory share its id
(a file in the directory); separate logs (one per machine) each get their own leader, and
an impression in one log still finds its reservation from another.

A restarted replica has nothing to rebuild: reservations and counted spend are in Redis,
and what it leased before is still leased. If Redis has no position for the log (first
start, or a Redis that lost its data) the first pass reads the whole log and sets the
leases to at least counted + reserved instead of adding to them.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from backbeat.eventlog import Checkpoint, EventLogReader, yielding
from backbeat.events import EventType, record_prefix
from backbeat.serving.ledger import decision_ts
from backbeat.serving.redis_breaker import RedisUnavailable
from backbeat.serving.redis_scripts import LOCK_LUA, RECONCILE_LUA

if TYPE_CHECKING:
    from backbeat.serving.redis_ledger import RedisLedger

LOCK_SECONDS = 30.0
RECORDS_PER_CALL = 300  # a longer script would stall every replica's caps calls
EXPIRE_PER_CALL = 500
LOG_ID_FILE = "ledger-log-id"
REBUILDING = "~rebuilding"  # fields of the position that are not segments
VERSION = "~v"

_IMPRESSION = record_prefix(EventType.IMPRESSION)
_FILL = record_prefix(EventType.FILL)


@dataclass(frozen=True, slots=True)
class RedisReconcileRun:
    leader: bool
    records: int = 0
    impressions: int = 0
    reservations: int = 0
    released: int = 0


def log_id(directory: Path) -> str:
    """The id of an event log directory, made once: replicas sharing the directory share it."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOG_ID_FILE
    if not path.exists():
        scratch = directory / f".{LOG_ID_FILE}.{secrets.token_hex(6)}"
        scratch.write_text(secrets.token_hex(8))
        try:
            os.link(scratch, path)  # atomic, and refused if another process got there first
        except FileExistsError:
            pass
        finally:
            scratch.unlink()
    return path.read_text().strip()


class RedisReconciler:
    """Feeds one ``RedisLedger`` from an event log directory; ``run`` on a schedule."""

    def __init__(self, ledger: RedisLedger, directory: Path) -> None:
        self.ledger = ledger
        self.directory = Path(directory)
        self.log_id = log_id(self.directory)
        base = f"{ledger.prefix}recon:{self.log_id}:"
        self.lock_key, self.cursor_key, self.at_key = base + "lock", base + "cursor", base + "at"
        ledger.watch_reconciled(self.at_key, self.lock_key)
        self._lock = ledger._slow.register_script(LOCK_LUA)
        self._apply = ledger._slow.register_script(RECONCILE_LUA)
        self._reader: EventLogReader | None = None
        self._written: dict[str, int] = {}  # position as last stored by this replica
        self._token = ledger.replica_id

    def run(self, now: float) -> RedisReconcileRun:
        """Lead if no one else does; then apply what is new in the log and release the stale."""
        try:
            return self._run(now)
        except RedisUnavailable:  # logged by the breaker; next time from the position in Redis
            self._reader = None
            return RedisReconcileRun(leader=False)

    def _run(self, now: float) -> RedisReconcileRun:
        ledger = self.ledger
        if not ledger.up:
            return RedisReconcileRun(leader=False)
        ttl_ms = int(LOCK_SECONDS * 1000)
        held = ledger._call("reconcile", lambda: self._lock([self.lock_key], [self._token, ttl_ms]))
        if not held:
            self._reader = None  # another replica leads: its position will be newer than ours
            return RedisReconcileRun(leader=False)
        stored = ledger._call("reconcile", lambda: ledger._slow.hgetall(self.cursor_key))
        fields = {key.decode(): int(value) for key, value in stored.items()}
        rebuilding = VERSION not in fields or REBUILDING in fields
        position = {name: at for name, at in fields.items() if not name.startswith("~")}
        if self._reader is None or position != self._written:
            self._reader = EventLogReader(self.directory, start=Checkpoint(offsets=position))
            self._written = dict(position)
        records = impressions = reservations = released = 0
        batch: list[str] = []
        for record in yielding(self._reader.records()):
            records += 1
            payload = record.payload
            # Records start with their type (``Event.to_bytes`` field order): skip the rest
            # without parsing them.
            if payload.startswith(_IMPRESSION):
                kind = "i"
            elif payload.startswith(_FILL):
                kind = "f"
            else:
                continue
            try:
                event = orjson.loads(payload)
            except orjson.JSONDecodeError:
                continue
            decision_id, item_id = event.get("decision_id"), event.get("line_item_id")
            campaign_id, price = event.get("campaign_id") or 0, event.get("price_micros") or 0
            # Tracking validated these; a record that is not so must never stop the reader.
            if not (
                isinstance(decision_id, str) and decision_id.isalnum()
                and isinstance(item_id, int) and item_id > 0
                and isinstance(campaign_id, int) and campaign_id >= 0
                and isinstance(price, int) and price >= 0
            ):  # fmt: skip
                continue
            logged = event.get("ts")
            ts = decision_ts(decision_id) or (logged if isinstance(logged, int | float) else now)
            # One argument per record: packing six costs more than the script runs.
            batch.append(f"{kind}|{decision_id}|{item_id}|{campaign_id}|{price}|{ts!r}")
            if len(batch) >= RECORDS_PER_CALL:
                counted, reserved, _ = self._call(now, batch, rebuilding, done=False)
                impressions, reservations = impressions + counted, reservations + reserved
                batch = []
        while True:  # the last records, then stale reservations until none is left
            counted, reserved, freed = self._call(now, batch, rebuilding, done=True)
            impressions, reservations, released = (
                impressions + counted, reservations + reserved, released + freed,
            )  # fmt: skip
            batch, rebuilding = [], False
            if freed < EXPIRE_PER_CALL:
                break
        return RedisReconcileRun(True, records, impressions, reservations, released)

    def _call(
        self, now: float, records: list[str], rebuilding: bool, *, done: bool
    ) -> tuple[int, int, int]:
        assert self._reader is not None
        offsets = self._reader.checkpoint.offsets
        moved = {name: at for name, at in offsets.items() if self._written.get(name) != at}
        window, dedup = self.ledger.render_window_s, self.ledger.dedup_s
        args: list[Any] = [
            self._token, self.ledger.prefix, now, window, dedup, int(LOCK_SECONDS * 1000),
            int(rebuilding), int(done), EXPIRE_PER_CALL, len(moved),
        ]  # fmt: skip
        for name, at in moved.items():
            args += [name, at]
        args += records
        keys = [self.lock_key, self.cursor_key, self.at_key]
        status, counted, reserved, released = self.ledger._call(
            "reconcile", lambda: self._apply(keys, args, client=self.ledger._slow)
        )
        if status < 0:  # the lock was lost (a long stall): the new leader goes on from Redis
            self._reader = None
            raise RedisUnavailable("reconcile lock lost")
        self._written.update(moved)
        self.ledger.stats.background += 1
        return int(counted), int(reserved), int(released)

    def close(self) -> None:
        """Hand the lock over at once (on shutdown) rather than after it times out."""
        self.ledger.release_lock(self.lock_key)
