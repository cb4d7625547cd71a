"""The ad server: holds the catalog snapshot, decides, logs, and renders VAST or JSON answers."""

from __future__ import annotations

import gc
import random
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from backbeat.catalog.service import catalog_version
from backbeat.errors import NotFound
from backbeat.events import Event, EventType
from backbeat.observability import (
    DECISIONS,
    SNAPSHOT_LINE_ITEMS,
    SNAPSHOT_REFRESHES,
    SNAPSHOT_VERSION,
    log,
)
from backbeat.serving.decisions import Decider, Decision
from backbeat.serving.ledger import Ledger
from backbeat.serving.pacing import PacingController
from backbeat.serving.request import AdRequest, PodRequest
from backbeat.serving.snapshot import Snapshot, load_snapshot
from backbeat.serving.vast import QUARTILE_EVENTS, VastAd, render_vast
from backbeat.signing import TrackingClaims, UrlSigner
from backbeat.types import from_micros

Clock = Callable[[], float]
Appender = Callable[[bytes], object]
TRACKED_EVENTS = ("impression", *QUARTILE_EVENTS, "click", "error")


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
        decision_log_sample: float = 1.0,
        pacing: PacingController | None = None,
        seed: int | None = None,
    ) -> None:
        self._sessions = session_factory
        self.ledger = ledger
        self.signer = signer
        self.clock = clock
        self.tracking_ttl_seconds = tracking_ttl_seconds
        self.decider = Decider(ledger, pacing or PacingController(), seed=seed, drive_pacing=False)
        self.snapshot = Snapshot.empty()
        self._decision_log = decision_log
        self._sample = decision_log_sample
        self._sampler = random.Random(seed)
        self._refresh_lock = threading.Lock()
        self._poked = threading.Event()

    # -- catalog ------------------------------------------------------------------------

    def poke(self) -> None:
        """Ask the watcher to look for catalog changes now rather than at its next tick."""
        self._poked.set()

    def watch(self, stop: threading.Event, interval: float) -> None:
        """Refresh loop for a background thread: one version query per tick, none per request."""
        while not stop.is_set():
            self._poked.wait(interval)
            self._poked.clear()
            if stop.is_set():
                return
            try:
                self.refresh()
            except Exception:  # keep serving the last good snapshot
                log.exception("catalog refresh failed")
            try:
                self.decider.pacing.maybe_update(self.clock(), self.snapshot, self.ledger)
            except Exception:  # keep the last probabilities
                log.exception("pacing update failed")

    def refresh(self, *, force: bool = False) -> bool:
        """Rebuild the snapshot if the catalog version changed; returns whether it did."""
        with self._refresh_lock:
            with self._sessions() as session:
                version = catalog_version(session)
                if version == self.snapshot.version and not force:
                    return False
                snapshot = load_snapshot(session, now=datetime.fromtimestamp(self.clock(), UTC))
            self.snapshot = snapshot
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
            DECISIONS.labels(
                "fill" if decision.filled else "no-fill", decision.no_fill_reason or ""
            ).inc()
        if self._decision_log is not None and (
            self._sample >= 1.0 or self._sampler.random() < self._sample
        ):
            self._log_opportunity(snapshot, request, decisions, now)
        return decisions

    def _log_opportunity(
        self, snapshot: Snapshot, request: AdRequest, decisions: list[Decision], now: float
    ) -> None:
        """The supply record forecasting reads: who asked, who could have served, who did."""
        first = decisions[0]
        attributes = first.attributes or {}
        record = Event(
            type=EventType.OPPORTUNITY,
            ts=now,
            decision_id=first.id,
            slot_id=first.slot.id,
            listener=request.listener,
            reason=first.no_fill_reason,
            attrs={
                **{key: value for key, value in attributes.items() if value not in (None, (), "")},
                "segments": list(request.segments),
                "tz": request.timezone,
                "user_agent": request.user_agent,
                # The attributes let forecasting replay any targeting; ids would cost O(book).
                "targeted": first.targeted.bit_count(),
                "catalog_version": snapshot.version,
                "winners": [decision.line_item.id for decision in decisions if decision.line_item],
                "sample": self._sample,
            },
        )
        assert self._decision_log is not None
        self._decision_log(record.to_bytes())

    # -- answers ------------------------------------------------------------------------

    def _claims(self, decision: Decision) -> TrackingClaims:
        item, creative = decision.line_item, decision.creative
        return TrackingClaims(
            decision_id=decision.id,
            line_item_id=item.id if item else 0,
            campaign_id=item.campaign_id if item else 0,
            creative_id=creative.id if creative else 0,
            slot_id=decision.slot.id,
            price_micros=decision.price_micros,
            currency=item.currency if item else decision.slot.currency,
            listener=decision.request.listener,
            expires_at=int(decision.ts) + self.tracking_ttl_seconds,
        )

    def tracking_urls(self, decision: Decision) -> dict[str, str]:
        # No [ERRORCODE] macro on the error URL: brackets are not valid in the XSD's anyURI.
        events = TRACKED_EVENTS if decision.filled else ("error",)
        return self.signer.urls(events, self._claims(decision))

    def vast(self, decisions: list[Decision]) -> bytes:
        filled = [decision for decision in decisions if decision.filled]
        if not filled:
            return render_vast([], no_fill_error_url=self.tracking_urls(decisions[0])["error"])
        return render_vast([self._vast_ad(decision) for decision in filled])

    def _vast_ad(self, decision: Decision) -> VastAd:
        item, creative = decision.line_item, decision.creative
        assert item is not None and creative is not None
        urls = self.tracking_urls(decision)
        return VastAd(
            ad_id=f"li-{item.id}",
            serving_id=decision.id,
            title=creative.name,
            advertiser=item.advertiser_name,
            creative_id=f"cr-{creative.id}",
            media_url=creative.media_url,
            mime_type=creative.mime_type,
            duration_ms=creative.duration_ms,
            bitrate_kbps=creative.bitrate_kbps,
            click_through=creative.click_url,
            impression_url=urls["impression"],
            error_url=urls["error"],
            tracking_urls=urls,
            click_tracking_url=urls["click"] if creative.click_url else None,
            categories=creative.categories,
            sequence=decision.sequence,
        )

    def as_json(self, decisions: list[Decision]) -> dict[str, Any]:
        """The JSON answer of ``POST /v1/decisions``: the same facts as the VAST."""
        ads = [self._ad_json(decision) for decision in decisions if decision.filled]
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

    def _ad_json(self, decision: Decision) -> dict[str, Any]:
        item, creative = decision.line_item, decision.creative
        assert item is not None and creative is not None
        return {
            "decision_id": decision.id,
            "sequence": decision.sequence,
            "line_item_id": item.id,
            "campaign_id": item.campaign_id,
            "advertiser": item.advertiser_name,
            "tier": item.tier,
            "price_cpm": str(from_micros(decision.price_micros)),
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
