"""The promotion scorer: in-memory campaigns, champion model, listener histories and stored scores.

Everything a request needs is loaded and swapped in by a background refresh (catalog
version, model aliases, data manifest and score-store markers are polled), so scoring is
pure computation: checks per candidate, one vectorised feature computation, one model
call for candidates the batch store does not hold, and a sort.

score = p(conversion) × value of an exposure × pacing multiplier, where the value is
CPM / 1000 for CPM campaigns and CPC × clicks per conversion (learned in training) for CPC
campaigns, and the multiplier is the campaign's budget dual price 1 / (1 + λ).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from backbeat.catalog.service import catalog_version
from backbeat.catalog.vocabulary import Status
from backbeat.eventlog import EventLogReader, yielding
from backbeat.events import Event, EventType
from backbeat.observability import log
from backbeat.promotion import features
from backbeat.promotion.dataset import data_dir, models_dir
from backbeat.promotion.events import is_promotion
from backbeat.promotion.ids import parse_id
from backbeat.promotion.metrics import (
    EXCLUDED_ITEMS,
    SCORE_SECONDS,
    SCORED_ITEMS,
    SNAPSHOT_REFRESHES,
)
from backbeat.promotion.model import ConversionModel, load_model
from backbeat.promotion.models import PromotionCampaign
from backbeat.promotion.pacing import DualPacer
from backbeat.promotion.profiles import Profiles, empty_profiles, load_profiles
from backbeat.promotion.registry import CHAMPION, Registry
from backbeat.promotion.reporting import spend_to_date
from backbeat.promotion.schemas import ScoreRequest
from backbeat.promotion.store import Scores, ScoreStore
from backbeat.promotion.vocabulary import ItemType, PriceModel, audience_of

STORE_SURFACE = "home_feed"  # the batch job scores the default surface
STORE_POLL_SECONDS = 10.0


class Reason:
    UNKNOWN_ITEM = "unknown-item"
    PAUSED = "paused"
    NOT_TARGETED = "not-targeted"
    OUT_OF_FLIGHT = "out-of-flight"
    OUT_OF_BUDGET = "out-of-budget"
    CAPPED = "capped"
    RECENTLY_STREAMED = "recently-streamed"
    NOT_IN_AUDIENCE = "not-in-audience"
    DUPLICATE = "duplicate-candidate"
    NO_MODEL = "no-model"


def _code(kind: str, text: str) -> int:
    """The integer code of a synthetic id, or -1 for ids the listening data does not know."""
    code = parse_id(kind, text)
    return -1 if code is None else code


@dataclass(frozen=True, slots=True)
class LiveCampaign:
    id: int
    item_id: str
    item_type: str
    artist: int
    release: int
    surfaces: frozenset[str]
    markets: frozenset[str]
    audiences: frozenset[str]
    start_ts: float
    end_ts: float
    budget: float
    price: float
    price_micros: int
    price_model: str
    currency: str
    artist_id: str
    exposure_cap: int
    exclusion_seconds: int
    active: bool

    @classmethod
    def of(cls, row: PromotionCampaign) -> LiveCampaign:
        release = _code("release", row.item_id) if row.item_type == ItemType.RELEASE else -1
        return cls(
            id=row.id,
            item_id=row.item_id,
            item_type=row.item_type,
            artist=_code("artist", row.artist_id),
            release=release,
            surfaces=frozenset(row.surfaces),
            markets=frozenset(row.markets),
            audiences=frozenset(row.audiences),
            start_ts=row.start_at.timestamp(),
            end_ts=row.end_at.timestamp(),
            budget=float(row.budget),
            price=float(row.price),
            price_micros=int(row.price * 1_000_000),
            price_model=row.price_model,
            currency=row.currency,
            artist_id=row.artist_id,
            exposure_cap=row.exposure_cap,
            exclusion_seconds=row.exclusion_days * features.DAY,
            active=row.status == Status.ACTIVE,
        )


@dataclass
class ModelState:
    version: str = ""
    model: ConversionModel | None = None
    clicks_per_conversion: float = 1.0
    marker: float = -1.0


@dataclass(frozen=True, slots=True)
class ScoreResult:
    """The answer as plain data (the shape of ``schemas.ScoreResponse``), serialised once."""

    scores: list[dict[str, Any]]
    excluded: list[dict[str, str]] | None
    model_version: str | None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"scores": self.scores}
        if self.excluded is not None:
            body["excluded"] = self.excluded
        if self.model_version is not None:
            body["model_version"] = self.model_version
        return body


class _Request:
    """One request's facts, with the listener's streams looked up at most once."""

    __slots__ = ("listener", "surface", "country", "now", "_profiles", "_streams")

    def __init__(
        self, listener: str, surface: str, country: str, now: float, profiles: Profiles
    ) -> None:
        self.listener, self.surface, self.country, self.now = listener, surface, country, now
        self._profiles = profiles
        self._streams: dict[int, int] | None = None

    def last_streams(self) -> dict[int, int]:
        if self._streams is None:
            self._streams = self._profiles.last_streams(self.listener)
        return self._streams


@dataclass
class Snapshot:
    """What one request reads (swapped whole by the refresher)."""

    by_item: dict[str, list[LiveCampaign]] = field(default_factory=dict)
    catalog_version: int = -1


class PromotionScorer:
    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        var_dir: Path,
        clock: Callable[[], float] = time.time,
        store: ScoreStore | None = None,
        pacer: DualPacer | None = None,
        event_log_dir: Path | None = None,
    ) -> None:
        self.sessions = sessions
        self.var_dir = Path(var_dir)
        self.clock = clock
        self.store = store
        self.pacer = pacer or DualPacer()
        self.snapshot = Snapshot()
        self.model = ModelState()
        self.profiles: Profiles = empty_profiles()
        self.profiles_marker = -1.0
        self.stored: Scores = {}
        self.stored_version = ""
        self.store_marker = ""
        self.store_checked = -1e18
        self.counted_spend: dict[int, float] = {}
        self.live_spend: dict[int, float] = {}
        self.live_exposures: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        # Tailing the event log makes exposures reported to any replica count for caps and
        # pacing here too; what this process recorded itself is skipped once when seen.
        self.event_log_dir = event_log_dir
        self._tail: EventLogReader | None = None
        self._recorded: set[tuple[str, str]] = set()
        self._own_segments: str | None = None

    # --- background refresh ------------------------------------------------------------

    def refresh(self, *, force: bool = False) -> None:
        """Reload whatever changed; each part is guarded by a cheap marker."""
        for part in (self._refresh_campaigns, self._refresh_spend, self._refresh_model,
                     self._refresh_profiles, self._refresh_store, self._refresh_feedback):  # fmt: skip
            try:
                part(force)
            except Exception as error:  # a bad part must not stop the others or the server
                log.warning("promotion refresh failed", part=part.__name__, error=str(error))
        self._update_pacing()

    def watch(self, stop: threading.Event, interval: float) -> None:
        while not stop.is_set():
            self._wake.wait(interval)
            self._wake.clear()
            if not stop.is_set():
                self.refresh()

    def poke(self) -> None:
        self._wake.set()

    def _refresh_campaigns(self, force: bool) -> None:
        with self.sessions() as session:
            version = catalog_version(session)
            if not force and version == self.snapshot.catalog_version:
                return
            rows = session.execute(
                select(PromotionCampaign).where(PromotionCampaign.status != Status.ARCHIVED)
            ).scalars()
            by_item: dict[str, list[LiveCampaign]] = {}
            for row in rows:
                by_item.setdefault(row.item_id, []).append(LiveCampaign.of(row))
        self.snapshot = Snapshot(by_item=by_item, catalog_version=version)
        SNAPSHOT_REFRESHES.labels("campaigns").inc()

    def _refresh_spend(self, _force: bool) -> None:
        with self.sessions() as session:
            counted = {cid: float(spend) for cid, spend in spend_to_date(session).items()}
        if counted != self.counted_spend:
            with self._lock:  # the count now includes what was tallied live before it
                self.counted_spend = counted
                self.live_spend = {}

    def _refresh_model(self, force: bool) -> None:
        registry = Registry(models_dir(self.var_dir))
        aliases = registry.root / "aliases.json"
        marker = aliases.stat().st_mtime if aliases.exists() else 0.0
        if not force and marker == self.model.marker:
            return
        champion = registry.resolve(CHAMPION)
        if champion is None:
            self.model = ModelState(marker=marker)
            return
        if champion.version != self.model.version:
            self.model = ModelState(
                version=champion.version,
                model=load_model(champion),
                clicks_per_conversion=float(champion.manifest.get("clicks_per_conversion", 1.0)),
                marker=marker,
            )
            SNAPSHOT_REFRESHES.labels("model").inc()
            log.info("promotion champion loaded", version=champion.version)
        else:
            self.model.marker = marker

    def _refresh_profiles(self, force: bool) -> None:
        manifest = data_dir(self.var_dir) / "manifest.json"
        marker = manifest.stat().st_mtime if manifest.exists() else 0.0
        if (not force and marker == self.profiles_marker) or not manifest.exists():
            self.profiles_marker = marker
            return
        self.profiles = load_profiles(manifest.parent)
        self.profiles_marker = marker
        SNAPSHOT_REFRESHES.labels("profiles").inc()

    def _refresh_store(self, force: bool) -> None:
        now = time.monotonic()
        if self.store is None or (not force and now - self.store_checked < STORE_POLL_SECONDS):
            return
        self.store_checked = now
        marker = self.store.marker()
        if not force and marker == self.store_marker:
            return
        self.stored_version, self.stored = self.store.load()
        self.store_marker = marker
        SNAPSHOT_REFRESHES.labels("store").inc()

    def _update_pacing(self) -> None:
        now = self.clock()
        for campaigns in self.snapshot.by_item.values():
            for campaign in campaigns:
                self.pacer.update(
                    campaign.id,
                    budget=campaign.budget,
                    spent=self.spent(campaign.id),
                    start_ts=campaign.start_ts,
                    end_ts=campaign.end_ts,
                    now=now,
                )

    # --- feedback ------------------------------------------------------------------------

    def spent(self, campaign_id: int) -> float:
        return self.counted_spend.get(campaign_id, 0.0) + self.live_spend.get(campaign_id, 0.0)

    def skip_own_segments(self, writer_id: str) -> None:
        """Never tail this process's own segments (named after ``writer_id``): what it
        appends there it ``record``s first, so only other replicas' records are scanned."""
        with self._lock:
            self._own_segments = writer_id + "-"
            self._recorded.clear()
        if self._tail is not None:
            self._tail.skip_segments(self._own_segments)

    def _refresh_feedback(self, _force: bool) -> None:
        if self.event_log_dir is None or not Path(self.event_log_dir).exists():
            return
        if self._tail is None:
            self._tail = EventLogReader(Path(self.event_log_dir))
            if self._own_segments is not None:
                self._tail.skip_segments(self._own_segments)
        seen = []
        for record in yielding(self._tail.records()):
            if b"promotion" not in record.payload:
                continue
            event = Event.from_bytes(record.payload)
            key = (event.type, event.decision_id)
            with self._lock:
                if key in self._recorded:
                    self._recorded.discard(key)
                    continue
            seen.append(event)
        if seen:
            self._apply(seen)

    def record(self, events: Iterable[Event]) -> None:
        """Tally reported exposures (caps) and their cost (pacing) until the next count."""
        events = list(events)
        if self._own_segments is None:  # they will be read back from the log: skip them once
            with self._lock:
                self._recorded.update((event.type, event.decision_id) for event in events)
        self._apply(events)

    def _apply(self, events: Iterable[Event]) -> None:
        with self._lock:
            for event in events:
                if not is_promotion(event) or event.campaign_id is None:
                    continue
                attrs = event.attrs or {}
                model = attrs.get("price_model")
                if event.type == EventType.PROMOTION_EXPOSURE:
                    key = (event.listener, attrs.get("item_id", ""))
                    self.live_exposures[key] = self.live_exposures.get(key, 0) + 1
                    if model == PriceModel.CPM:
                        cost = event.price_micros / 1e9
                        self.live_spend[event.campaign_id] = (
                            self.live_spend.get(event.campaign_id, 0.0) + cost
                        )
                elif event.type == EventType.PROMOTION_CLICK and model == PriceModel.CPC:
                    cost = event.price_micros / 1e6
                    self.live_spend[event.campaign_id] = (
                        self.live_spend.get(event.campaign_id, 0.0) + cost
                    )

    def exposures_of(self, listener_id: str, item_id: str) -> int:
        key = (listener_id, item_id)
        return self.profiles.exposure_counts.get(key, 0) + self.live_exposures.get(key, 0)

    # --- scoring -------------------------------------------------------------------------

    def _best_campaign(
        self, campaigns: list[LiveCampaign], p: float, plays_28d: int, plays_ever: int, cpc: float
    ) -> tuple[LiveCampaign | None, float]:
        """The campaign of an item paying most for this listener, among those whose audience
        the listener is in; ties go to the lowest id."""
        segment = audience_of(plays_28d, plays_ever).value
        best: tuple[float, LiveCampaign] | None = None
        for campaign in campaigns:
            if campaign.audiences and segment not in campaign.audiences:
                continue
            score = p * self.value_per_exposure(campaign, cpc) * self.pacer.multiplier(campaign.id)
            if best is None or score > best[0] or (score == best[0] and campaign.id < best[1].id):
                best = (score, campaign)
        return (None, 0.0) if best is None else (best[1], best[0])

    def value_per_exposure(self, campaign: LiveCampaign, clicks_per_conversion: float) -> float:
        if campaign.price_model == PriceModel.CPC:
            return campaign.price * min(1.0, clicks_per_conversion)
        return campaign.price / 1000.0

    def score(self, request: ScoreRequest) -> ScoreResult:
        started = time.perf_counter()
        now = self.clock()
        snapshot, model, profiles = self.snapshot, self.model, self.profiles
        excluded: list[dict[str, str]] = []
        eligible: list[tuple[str, list[LiveCampaign]]] = []
        seen: set[str] = set()
        listener, surface, country = request.listener_id, request.surface.value, request.country
        context = _Request(listener, surface, country, now, profiles)
        for candidate in request.candidates:
            item = candidate.item_id
            if item in seen:
                excluded.append({"item_id": item, "reason": Reason.DUPLICATE})
                continue
            seen.add(item)
            campaigns = snapshot.by_item.get(item)
            if not campaigns:
                excluded.append({"item_id": item, "reason": Reason.UNKNOWN_ITEM})
                continue
            passing, reason = self._static_checks(campaigns, context)
            if passing:
                eligible.append((item, passing))
            else:
                excluded.append({"item_id": item, "reason": reason})
        scores: list[dict[str, Any]] = []
        if eligible and model.model is None:
            excluded.extend({"item_id": item, "reason": Reason.NO_MODEL} for item, _ in eligible)
            eligible = []
        if eligible:
            scores, late = self._score_eligible(eligible, listener, surface, now, model, profiles)
            excluded.extend(late)
        scores.sort(key=lambda s: (-s["score"], s["item_id"]))
        for item in excluded:
            EXCLUDED_ITEMS.labels(item["reason"]).inc()
        SCORE_SECONDS.observe(time.perf_counter() - started)
        return ScoreResult(
            scores=scores,
            excluded=excluded if request.explain else None,
            model_version=model.version or None,
        )

    def _static_checks(
        self, campaigns: list[LiveCampaign], request: _Request
    ) -> tuple[list[LiveCampaign], str]:
        """Campaigns of an item still in the running; else the reason of the one that got furthest."""
        passing: list[LiveCampaign] = []
        best_reason, best_stage = Reason.UNKNOWN_ITEM, -1
        for campaign in campaigns:
            stage, reason = self._check(campaign, request)
            if reason is None:
                passing.append(campaign)
            elif stage > best_stage:
                best_stage, best_reason = stage, reason
        return passing, best_reason

    def _check(self, campaign: LiveCampaign, request: _Request) -> tuple[int, str | None]:
        if not campaign.active:
            return 0, Reason.PAUSED
        if request.surface not in campaign.surfaces or (
            campaign.markets and request.country not in campaign.markets
        ):
            return 1, Reason.NOT_TARGETED
        if not campaign.start_ts <= request.now < campaign.end_ts:
            return 2, Reason.OUT_OF_FLIGHT
        if self.spent(campaign.id) >= campaign.budget:
            return 3, Reason.OUT_OF_BUDGET
        if self.exposures_of(request.listener, campaign.item_id) >= campaign.exposure_cap:
            return 4, Reason.CAPPED
        if campaign.exclusion_seconds and campaign.release >= 0:
            last = request.last_streams().get(campaign.release)
            if last is not None and last >= request.now - campaign.exclusion_seconds:
                return 5, Reason.RECENTLY_STREAMED
        return 6, None

    def _score_eligible(
        self,
        eligible: list[tuple[str, list[LiveCampaign]]],
        listener: str,
        surface: str,
        now: float,
        model: ModelState,
        profiles: Profiles,
    ) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
        n = len(eligible)
        p = np.full(n, np.nan)
        use_store = (
            surface == STORE_SURFACE and self.stored and self.stored_version == model.version
        )
        if use_store:
            stored = self.stored
            for index, (item, _) in enumerate(eligible):
                hit = stored.get((listener, item))
                if hit is not None:
                    p[index] = hit
        missing = np.isnan(p)
        # Features only where needed: items to score online, and audience checks.
        needed = missing | np.array([len(c) > 1 or bool(c[0].audiences) for _, c in eligible])
        matrix = np.zeros((n, len(features.FEATURES)))
        if needed.any():
            rows = np.flatnonzero(needed)
            artists = np.array([eligible[i][1][0].artist for i in rows], dtype=np.int64)
            genres = np.array([profiles.genre(int(a)) for a in artists], dtype=np.int64)
            matrix[rows] = features.compute(
                profiles.history(listener),
                np.full(len(rows), int(now), dtype=np.int64),
                artists,
                genres,
                np.full(len(rows), features.SURFACE_CODES.get(surface, 0)),
                profiles.popularity,
            )
        if missing.any():
            assert model.model is not None
            p[missing] = model.model.predict(matrix[missing])
        SCORED_ITEMS.labels("store").inc(int(n - missing.sum()))
        SCORED_ITEMS.labels("online").inc(int(missing.sum()))
        # One campaign per item is the common case: value and pacing as arrays.
        first = [campaigns[0] for _, campaigns in eligible]
        cpc = model.clicks_per_conversion
        values = np.array(
            [self.value_per_exposure(c, cpc) * self.pacer.multiplier(c.id) for c in first]
        )
        best_scores = p * values
        scores: list[dict[str, Any]] = []
        excluded: list[dict[str, str]] = []
        plays_28d, plays_ever = matrix[:, 0], matrix[:, 1]
        for index, (item, campaigns) in enumerate(eligible):
            chosen: LiveCampaign | None = first[index]
            value = float(best_scores[index])
            if len(campaigns) > 1 or chosen.audiences:  # type: ignore[union-attr]
                chosen, value = self._best_campaign(
                    campaigns, float(p[index]), int(plays_28d[index]), int(plays_ever[index]), cpc
                )
            if chosen is None:
                excluded.append({"item_id": item, "reason": Reason.NOT_IN_AUDIENCE})
                continue
            scores.append(
                {
                    "item_id": item,
                    "campaign_id": chosen.id,
                    "score": round(value, 12),
                    "p_conversion": round(float(p[index]), 9),
                }
            )
        return scores, excluded
