"""The ad server: holds the catalog snapshot, decides, logs, and renders VAST or JSON answers."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy.orm import Session, sessionmaker

from backbeat.catalog.service import catalog_version
from backbeat.errors import NotFound
from backbeat.events import SCHEMA_VERSION, EventType
from backbeat.observability import (
    DECISIONS,
    SNAPSHOT_LINE_ITEMS,
    SNAPSHOT_REFRESHES,
    SNAPSHOT_VERSION,
    TALLY,
    log,
)
from backbeat.serving.decisions import Decider, Decision
from backbeat.serving.ledger import Ledger
from backbeat.serving.pacing import PacingController
from backbeat.serving.request import AdRequest, PodRequest
from backbeat.serving.snapshot import Snapshot, load_snapshot
from backbeat.serving.vast import ERRORCODE_MACRO, AdTemplate, VastAd, render_document
from backbeat.signing import TRACKING_EVENTS, UrlSigner
from backbeat.types import from_micros

Clock = Callable[[], float]
Appender = Callable[[bytes], object]
NO_FILL_EVENTS = ("error",)
ERROR_CODE_SUFFIX = "&code=" + ERRORCODE_MACRO
DEFAULT_DECISION_LOG_SAMPLE = 0.1
# Catalog bursts (hundreds of PATCHes) rebuild the snapshot once they settle, at most once
# per poll interval, and never later than MAX_DELAY_POLLS intervals after the first change.
SETTLE_SECONDS = 0.2
MAX_DELAY_POLLS = 5
HOUSEKEEPING_SECONDS = 5.0
# The decision log keeps listeners whole: a request is logged when a salted hash of its
# listener falls below the rate, the same on every server and process, so the log holds all
# requests of a tenth of listeners and distinct listeners scale exactly by 1 / sample. The
# salt keeps this choice independent of the forecaster's own listener-hash sample.
DECISION_LOG_SALT = b"backbeat-decision-log:"
_HASH_SPAN = float(1 << 64)
_running_loop = asyncio.events._get_running_loop


_SALTED = hashlib.blake2b(DECISION_LOG_SALT, digest_size=8)


def listener_kept(listener: str, sample: float) -> bool:
    """Whether the decision log keeps ``listener`` at rate ``sample`` (salted BLAKE2b).

    The salt is hashed once; each listener finishes a copy (the same digest as hashing
    salt and listener together).
    """
    state = _SALTED.copy()
    state.update(listener.encode())
    return int.from_bytes(state.digest(), "little") / _HASH_SPAN < sample


_FILL = EventType.FILL.value


def fill_record(decision: Decision) -> bytes:
    """The ``fill`` event of a filled decision: the reservation a restart recovers.

    ``orjson`` of a dict: formatting the float timestamp in Python costs several times more.
    """
    item = decision.line_item
    assert item is not None
    return orjson.dumps(
        {
            "type": _FILL,
            "ts": decision.ts,
            "decision_id": decision.id,
            "line_item_id": item.id,
            "campaign_id": item.campaign_id,
            "slot_id": decision.slot.id,
            "price_micros": decision.price_micros,
            "currency": item.currency,
            "v": SCHEMA_VERSION,
        }
    )


_OPPORTUNITY = EventType.OPPORTUNITY.value
_UNSET = (None, (), "")


def opportunity_record(
    snapshot: Snapshot, request: AdRequest, decisions: list[Decision], now: float, sample: float
) -> bytes:
    """``Event(type=OPPORTUNITY, ...).to_bytes()`` of a decision, byte for byte, without the
    dataclass: its fields in ``Event`` order, the same defaults. A tenth of requests write
    one, and the dataclass round trip cost several times the decision's own walk.
    """
    first = decisions[0]
    attrs = {key: value for key, value in (first.attributes or {}).items() if value not in _UNSET}
    attrs["segments"] = list(request.segments)
    attrs["tz"] = request.timezone
    attrs["user_agent"] = request.user_agent
    # The attributes let forecasting replay any targeting; ids would cost O(book).
    attrs["targeted"] = first.targeted.bit_count()
    attrs["catalog_version"] = snapshot.version
    attrs["winners"] = [decision.line_item.id for decision in decisions if decision.line_item]
    attrs["sample"] = sample
    if request.listener:
        attrs["sample_by"] = "listener"
    return orjson.dumps(
        {
            "type": _OPPORTUNITY,
            "ts": now,
            "decision_id": first.id,
            "line_item_id": None,
            "campaign_id": None,
            "creative_id": None,
            "slot_id": first.slot.id,
            "listener": request.listener,
            "price_micros": 0,
            "currency": "",
            "ip": "",
            "user_agent": "",
            "reason": first.no_fill_reason,
            "attrs": attrs,
            "v": SCHEMA_VERSION,
        }
    )


def template_of(item: Any, creative: Any) -> AdTemplate:
    return AdTemplate(
        VastAd(
            ad_id=f"li-{item.id}",
            title=creative.name,
            advertiser=item.advertiser_name,
            creative_id=f"cr-{creative.id}",
            media_url=creative.media_url,
            mime_type=creative.mime_type,
            duration_ms=creative.duration_ms,
            bitrate_kbps=creative.bitrate_kbps,
            click_through=creative.click_url,
            categories=creative.categories,
        )
    )


class AdServer:
    """Serves from an in-memory snapshot; ``refresh`` swaps in a new one when the catalog moved."""

    def __init__(
        self,
        *,
        session_factory: sessionmaker[Session],
        ledger: Ledger,
        signer: UrlSigner,
        clock: Clock,
        tracking_ttl_seconds: int,
        decision_log: Appender | None = None,
        decision_log_sample: float = DEFAULT_DECISION_LOG_SAMPLE,
        fill_log: Appender | None = None,
        reconcile: Callable[[float], object] | None = None,
        pacing: PacingController | None = None,
        seed: int | None = None,
    ) -> None:
        """``decision_log`` takes the sampled opportunity records, ``fill_log`` one record per
        filled decision (the budget reservation a restart recovers); ``reconcile(now)`` brings
        the ledger up to counted delivery and runs on the watcher's housekeeping tick."""
        self._sessions = session_factory
        self.ledger = ledger
        self.signer = signer
        self.clock = clock
        self.tracking_ttl_seconds = tracking_ttl_seconds
        self.decider = Decider(ledger, pacing or PacingController(), seed=seed, drive_pacing=False)
        self.snapshot = Snapshot.empty()
        self._templates: dict[tuple[int, int], AdTemplate] = {}
        self._decision_log = decision_log
        self._fill_log = fill_log
        self._reconcile = reconcile
        self._sample = decision_log_sample
        self._sampler = random.Random(seed)
        self._refresh_lock = threading.Lock()
        self._poked = threading.Event()
        self.rebuilds = 0
        self._outcomes: dict[tuple[str, str], Any] = {}
        self._filled = DECISIONS.labels("fill", "")
        # A shared (Redis) ledger does socket I/O inside a decision: those run on a small
        # pool of threads so the event loop never blocks on a round trip.
        self._blocking = bool(getattr(ledger, "blocking", False))
        self._executor = (
            ThreadPoolExecutor(max_workers=4, thread_name_prefix="decide")
            if self._blocking
            else None
        )

    # -- catalog ------------------------------------------------------------------------

    def poke(self) -> None:
        """Tell the watcher the catalog changed here; it rebuilds once the burst settles."""
        self._poked.set()

    def watch(self, stop: threading.Event, interval: float) -> None:
        """Refresh loop for a background thread: one version query per tick, none per request.

        Rebuilds are coalesced: a change (a local poke, or a new version seen by the poll)
        marks the snapshot dirty; it is rebuilt once no change came for ``SETTLE_SECONDS``,
        at most once per ``interval``, and at the latest ``MAX_DELAY_POLLS`` intervals
        after the first change. 300 PATCHes in a burst cost a few rebuilds, not 300.
        """
        dirty_since: float | None = None
        last_change = last_build = last_housekeeping = -float("inf")
        while not stop.is_set():
            now = time.monotonic()
            if dirty_since is None:
                timeout = interval
            else:
                due = max(
                    last_build + interval,
                    min(last_change + SETTLE_SECONDS, dirty_since + MAX_DELAY_POLLS * interval),
                )
                timeout = max(0.0, due - now)
            poked = self._poked.wait(timeout)
            self._poked.clear()
            if stop.is_set():
                return
            now = time.monotonic()
            if poked:
                last_change = now
                dirty_since = now if dirty_since is None else dirty_since
                if now - dirty_since < MAX_DELAY_POLLS * interval:
                    continue
            elif dirty_since is None:
                try:
                    if self._catalog_moved():
                        dirty_since = last_change = now
                        continue
                except Exception:  # keep serving the last good snapshot
                    log.exception("catalog version check failed")
            if dirty_since is not None and now >= last_build + interval:
                try:
                    self.refresh()
                except Exception:  # keep serving the last good snapshot
                    log.exception("catalog refresh failed")
                dirty_since, last_build = None, time.monotonic()
            if now - last_housekeeping >= min(interval, HOUSEKEEPING_SECONDS):
                last_housekeeping = now
                self.housekeeping()

    def housekeeping(self) -> None:
        """Off the request path: reconcile the ledger with counted delivery, prune, pace."""
        now = self.clock()
        if self._reconcile is not None:
            try:
                self._reconcile(now)
            except Exception:  # keep the last reconciled state
                log.exception("ledger reconciliation failed")
        prune = getattr(self.ledger, "prune", None)
        if prune is not None:
            prune(now, live_scopes=self.snapshot.cap_scopes)
        try:
            self.decider.pacing.maybe_update(now, self.snapshot, self.ledger)
        except Exception:  # keep the last probabilities
            log.exception("pacing update failed")

    def _catalog_moved(self) -> bool:
        with self._sessions() as session:
            return catalog_version(session) != self.snapshot.version

    def refresh(self, *, force: bool = False) -> bool:
        """Rebuild the snapshot if the catalog version changed; returns whether it did."""
        with self._refresh_lock:
            with self._sessions() as session:
                version = catalog_version(session)
                if version == self.snapshot.version and not force:
                    return False
                previous = self.snapshot
                snapshot = load_snapshot(
                    session,
                    now=datetime.fromtimestamp(self.clock(), UTC),
                    previous=None if force else previous,
                )
            # The static part of every creative's VAST is prepared here, off the request path
            # (kept for a line item carried over from the last snapshot unchanged).
            unchanged = {id(item) for item in previous.line_items}
            templates: dict[tuple[int, int], AdTemplate] = {}
            for item in snapshot.line_items:
                for creative in item.creatives:
                    key = (item.id, creative.id)
                    template = self._templates.get(key) if id(item) in unchanged else None
                    templates[key] = template or template_of(item, creative)
            self.snapshot, self._templates = snapshot, templates
            self.rebuilds += 1
        # The snapshot lives until the next catalog change: keep the cyclic GC from walking
        # its objects on every full collection (a pause the p99 latency would show).
        gc.freeze()
        SNAPSHOT_VERSION.set(snapshot.version)
        SNAPSHOT_LINE_ITEMS.set(len(snapshot.line_items))
        SNAPSHOT_REFRESHES.inc()
        log.info(
            "catalog snapshot loaded", version=snapshot.version, line_items=len(snapshot.line_items)
        )
        return True

    # -- decisions ----------------------------------------------------------------------

    async def decide_async(
        self, request: AdRequest, pod: PodRequest | None = None
    ) -> list[Decision]:
        """``decide`` for async handlers: inline, or on a thread when the ledger does I/O."""
        if self._executor is None:
            return self.decide(request, pod)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.decide, request, pod)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False)

    def decide(self, request: AdRequest, pod: PodRequest | None = None) -> list[Decision]:
        snapshot = self.snapshot
        slot = snapshot.slots.get(request.slot_id)
        if slot is None:
            raise NotFound(
                f"ad slot {request.slot_id} not found or not active", reason="slot-not-found"
            )
        now = self.clock()
        decisions = self.decider.decide_pod(snapshot, slot, request, now, pod or PodRequest())
        for decision in decisions:
            if decision.line_item is None:
                outcome = ("no-fill", decision.no_fill_reason or "")
                counter = self._outcomes.get(outcome)
                if counter is None:  # resolving labels costs more than the increment
                    counter = self._outcomes[outcome] = DECISIONS.labels(*outcome)
            else:
                counter = self._filled
            # On the event loop, tallied and flushed later (a multi-process Prometheus
            # update is a locked write to shared memory); elsewhere counted at once.
            if _running_loop() is not None:
                TALLY.count(counter)
            else:
                counter.inc()
            if decision.line_item is None:
                continue
            if self._fill_log is not None:
                try:
                    self._fill_log(fill_record(decision))
                except Exception:  # the event log is closing or full: still answer
                    log.warning("fill record not logged", decision_id=decision.id)
        if self._decision_log is not None and self._logged(request.listener):
            self._log_opportunity(snapshot, request, decisions, now)
        return decisions

    def _logged(self, listener: str | None) -> bool:
        """Sample by listener hash; an anonymous request (no listener id) by chance."""
        if self._sample >= 1.0:
            return True
        if self._sample <= 0.0:
            return False
        if listener:
            return listener_kept(listener, self._sample)
        return self._sampler.random() < self._sample

    def _log_opportunity(
        self, snapshot: Snapshot, request: AdRequest, decisions: list[Decision], now: float
    ) -> None:
        """The supply record forecasting reads: who asked, who could have served, who did."""
        assert self._decision_log is not None
        self._decision_log(opportunity_record(snapshot, request, decisions, now, self._sample))

    # -- answers ------------------------------------------------------------------------

    def tracking_urls(self, decision: Decision) -> dict[str, str]:
        """Signed URLs by event; the error URL ends in ``&code=[ERRORCODE]`` for the player.

        The claims go to the signer as plain values (no ``TrackingClaims`` per decision).
        """
        item, creative = decision.line_item, decision.creative
        if item is not None and creative is not None:
            urls = self.signer.urls_of(
                TRACKING_EVENTS, decision.id, item.id, item.campaign_id, creative.id,
                decision.slot.id, decision.price_micros, item.currency,
                decision.request.listener, int(decision.ts) + self.tracking_ttl_seconds,
            )  # fmt: skip
        else:
            urls = self.signer.urls_of(
                NO_FILL_EVENTS, decision.id, 0, 0, 0, decision.slot.id, decision.price_micros,
                decision.slot.currency, decision.request.listener,
                int(decision.ts) + self.tracking_ttl_seconds,
            )  # fmt: skip
        urls["error"] += ERROR_CODE_SUFFIX
        return urls

    def vast(self, decisions: list[Decision]) -> bytes:
        filled = [decision for decision in decisions if decision.filled]
        if not filled:
            return render_document([], no_fill_error_url=self.tracking_urls(decisions[0])["error"])
        return render_document([self._vast_ad(decision) for decision in filled])

    def _vast_ad(self, decision: Decision) -> str:
        item, creative = decision.line_item, decision.creative
        assert item is not None and creative is not None
        template = self._templates.get((item.id, creative.id))
        if template is None:  # a snapshot installed without refresh() (tests, benches)
            template = self._templates[(item.id, creative.id)] = template_of(item, creative)
        return template.render(decision.id, self.tracking_urls(decision), decision.sequence)

    def as_json(self, decisions: list[Decision], *, include_price: bool = False) -> dict[str, Any]:
        """The JSON answer of ``POST /v1/decisions``: the same facts as the VAST.

        The clearing price is only shown to the admin (``include_price``): like the
        encrypted price in tracking URLs, it is not for whoever calls or listens.
        """
        ads = [self._ad_json(decision, include_price) for decision in decisions if decision.filled]
        first = decisions[0]
        body: dict[str, Any] = {
            "decision_id": first.id,
            "slot_id": first.slot.id,
            "filled": bool(ads),
            "no_fill_reason": None if ads else first.no_fill_reason,
            "ads": ads,
        }
        if ads:
            body.update(ads[0])  # single-ad callers read the first ad at the top level
        else:
            body["tracking"] = {"error": self.tracking_urls(first)["error"]}
        return body

    def _ad_json(self, decision: Decision, include_price: bool) -> dict[str, Any]:
        item, creative = decision.line_item, decision.creative
        assert item is not None and creative is not None
        answer = {
            "decision_id": decision.id,
            "sequence": decision.sequence,
            "line_item_id": item.id,
            "campaign_id": item.campaign_id,
            "advertiser": item.advertiser_name,
            "tier": item.tier,
            "currency": item.currency,
            "creative": {
                "id": creative.id,
                "title": creative.name,
                "media_url": creative.media_url,
                "mime_type": creative.mime_type,
                "duration_ms": creative.duration_ms,
                "bitrate_kbps": creative.bitrate_kbps,
                "click_through": creative.click_url,
                "categories": list(creative.categories),
            },
            "tracking": self.tracking_urls(decision),
        }
        if include_price:
            answer["price_cpm"] = str(from_micros(decision.price_micros))
        return answer
