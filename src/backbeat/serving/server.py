"""The ad server: holds the catalog snapshot, decides, and renders VAST or JSON answers."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from backbeat.catalog.service import catalog_version
from backbeat.errors import NotFound
from backbeat.observability import (
    DECISIONS,
    SNAPSHOT_LINE_ITEMS,
    SNAPSHOT_REFRESHES,
    SNAPSHOT_VERSION,
    log,
)
from backbeat.serving.decisions import AdRequest, Decider, Decision
from backbeat.serving.ledger import Ledger
from backbeat.serving.signing import TrackingClaims, UrlSigner
from backbeat.serving.snapshot import Snapshot, load_snapshot
from backbeat.serving.vast import QUARTILE_EVENTS, VastAd, render_vast
from backbeat.types import from_micros

Clock = Callable[[], float]
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
    ) -> None:
        self._sessions = session_factory
        self.ledger = ledger
        self.signer = signer
        self.clock = clock
        self.tracking_ttl_seconds = tracking_ttl_seconds
        self.decider = Decider(ledger)
        self.snapshot = Snapshot.empty()
        self._refresh_lock = threading.Lock()
        self._poked = threading.Event()

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

    def refresh(self, *, force: bool = False) -> bool:
        """Rebuild the snapshot if the catalog version changed; returns whether it did."""
        with self._refresh_lock:
            with self._sessions() as session:
                version = catalog_version(session)
                if version == self.snapshot.version and not force:
                    return False
                snapshot = load_snapshot(session, now=datetime.fromtimestamp(self.clock(), UTC))
            self.snapshot = snapshot
        SNAPSHOT_VERSION.set(snapshot.version)
        SNAPSHOT_LINE_ITEMS.set(len(snapshot.line_items))
        SNAPSHOT_REFRESHES.inc()
        log.info(
            "catalog snapshot loaded", version=snapshot.version, line_items=len(snapshot.line_items)
        )
        return True

    def decide(self, request: AdRequest) -> Decision:
        snapshot = self.snapshot
        slot = snapshot.slots.get(request.slot_id)
        if slot is None:
            raise NotFound(
                f"ad slot {request.slot_id} not found or not active", reason="slot-not-found"
            )
        decision = self.decider.decide(snapshot, slot, request, self.clock())
        DECISIONS.labels(
            "fill" if decision.filled else "no-fill", decision.no_fill_reason or ""
        ).inc()
        return decision

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

    def vast(self, decision: Decision) -> bytes:
        if not decision.filled:
            return render_vast([], no_fill_error_url=self.tracking_urls(decision)["error"])
        return render_vast([self._vast_ad(decision)])

    def _vast_ad(self, decision: Decision, sequence: int | None = None) -> VastAd:
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
            sequence=sequence,
        )

    def as_json(self, decision: Decision) -> dict[str, Any]:
        """The JSON answer of ``POST /v1/decisions``: the same facts as the VAST."""
        body: dict[str, Any] = {
            "decision_id": decision.id,
            "slot_id": decision.slot.id,
            "filled": decision.filled,
            "no_fill_reason": decision.no_fill_reason,
        }
        item, creative = decision.line_item, decision.creative
        if item is None or creative is None:
            body["tracking"] = {"error": self.tracking_urls(decision)["error"]}
            return body
        body.update(
            line_item_id=item.id,
            campaign_id=item.campaign_id,
            advertiser=item.advertiser_name,
            tier=item.tier,
            price_cpm=str(from_micros(decision.price_micros)),
            currency=item.currency,
            creative={
                "id": creative.id,
                "title": creative.name,
                "media_url": creative.media_url,
                "mime_type": creative.mime_type,
                "duration_ms": creative.duration_ms,
                "bitrate_kbps": creative.bitrate_kbps,
                "click_through": creative.click_url,
            },
            tracking=self.tracking_urls(decision),
        )
        return body
