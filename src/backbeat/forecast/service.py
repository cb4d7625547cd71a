"""The forecaster: built once off the request path, answers a forecast with masks and sums.

``Forecaster.build`` reads the decision log before ``now``, draws the supply sample, fits
the supply model, projects the sample onto the future, fits click and conversion rates and
runs the booked allocation (see the modules of this package). ``forecast`` then matches
the draft's targeting against the sample (cached per-value masks), sums the matched weight
per atom and projects it over the draft's hours, reading the booked allocation's remaining
supply per tier: no database, no model fit, no allocation per request.

Figures, for the draft's flight (clipped to start now):

- ``matched``: requests its targeting (and slots) admits;
- ``possible``: what is left of them after the booked items of a higher tier take their
  need (a guaranteed draft competes on equal terms with the guaranteed book);
- ``available``: what is left after every booked item takes its need;
- ``reach``, ``average_frequency``: distinct listeners of the draft's delivery (its goal,
  or ``available``), after its frequency caps; ``possible`` and ``available`` are capped too;
- ``clicks``, ``conversions``: the delivery times the rates of the matched requests.

Each comes with an 80% interval from the supply model's prediction interval (per stratum,
hours of one stratum taken as fully correlated, strata as independent) and the sample's
error (listener-cluster Horvitz-Thompson variance), combined in quadrature and scaled by
``interval_scale`` (calibrated by the backtest).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from backbeat.catalog.vocabulary import Tier
from backbeat.errors import BackbeatError, InvalidInput
from backbeat.forecast.booked import BookedAllocation, compute_booked
from backbeat.forecast.history import OpportunityTable, read_history
from backbeat.forecast.projection import Projection, project
from backbeat.forecast.rates import RateModel, fit_rates
from backbeat.forecast.reach import caps_from, estimate_reach
from backbeat.forecast.sample import HOUR, WEEK_HOURS, SupplySample, draw_sample
from backbeat.forecast.supply import Z80, SupplyForecast, forecast_supply, hourly_history
from backbeat.observability import log
from backbeat.serving.snapshot import ServableLineItem

GROUP_BY_KEYS = (
    "day",
    "hour",
    "countries",
    "devices",
    "platforms",
    "surfaces",
    "segments",
    "genres",
)
DAY = 86400


class ForecastUnavailable(BackbeatError):
    """No supply history yet (or the forecaster is still being built)."""

    status = 503
    title = "Forecast unavailable"
    reason = "forecast-unavailable"
    exit_code = 6


@dataclass(frozen=True)
class Estimate:
    value: float
    low: float
    high: float

    @classmethod
    def around(cls, value: float, relative: float) -> Estimate:
        spread = Z80 * max(relative, 0.0)
        value = max(value, 0.0)
        return cls(value, max(value * (1.0 - spread), 0.0), value * (1.0 + spread))

    def to_dict(self) -> dict[str, float]:
        return {
            "value": round(self.value, 3),
            "low": round(self.low, 3),
            "high": round(self.high, 3),
        }


ZERO = Estimate(0.0, 0.0, 0.0)


def _epoch(value: float | int | datetime) -> float:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise InvalidInput("datetimes must carry a UTC offset", reason="naive-datetime")
        return value.timestamp()
    return float(value)


@dataclass(frozen=True)
class ForecastQuery:
    """A draft line item: flight, tier, price, targeting, caps, goal, slots and breakdowns."""

    start_at: float | datetime
    end_at: float | datetime
    tier: str = Tier.GUARANTEED.value
    cpm_micros: int = 0
    targeting: Mapping[str, Any] = field(default_factory=dict)
    frequency_caps: Sequence[Mapping[str, Any]] = ()
    goal_impressions: int | None = None
    slots: Sequence[int] | None = None
    group_by: Sequence[str] = ()


@dataclass
class ForecastResult:
    matched: Estimate
    possible: Estimate
    available: Estimate
    reach: Estimate
    average_frequency: Estimate
    clicks: Estimate
    conversions: Estimate
    contending: list[tuple[int | None, float]] = field(default_factory=list)
    breakdown: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    note: str | None = None
    delivered: float = 0.0  # impressions the draft is expected to get (goal or available)

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            name: getattr(self, name).to_dict()
            for name in (
                "matched",
                "possible",
                "available",
                "reach",
                "average_frequency",
                "clicks",
                "conversions",
            )
        }
        body["contending"] = [
            {"line_item_id": item, "impressions": round(value, 3)}
            for item, value in self.contending
        ]
        body["breakdown"] = self.breakdown
        if self.note:
            body["note"] = self.note
        return body


@dataclass
class Forecaster:
    now: float
    sample: SupplySample
    supply: SupplyForecast
    projection: Projection
    booked: BookedAllocation
    clicks: RateModel
    conversions: RateModel
    line_items: dict[int, ServableLineItem]
    build_seconds: float = 0.0
    interval_scale: float = 1.0
    note: str | None = None
    _weighted_clicks: np.ndarray = field(init=False, repr=False)
    _weighted_conversions: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._weighted_clicks = self.sample.weight * self.clicks.rate
        self._weighted_conversions = self.sample.weight * self.conversions.rate

    # -- building -------------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        event_log_dir: Path,
        line_items: Sequence[ServableLineItem],
        *,
        now: float,
        history_days: float | None = None,
        seed: int = 0,
        **options: Any,
    ) -> Forecaster:
        """Read the log before ``now`` (the last ``history_days`` of it) and build everything.

        Options: ``max_rows`` (1,000,000) and ``min_rows`` (20,000) of the sample,
        ``supply_model`` (``auto``/``mstl``/``profile``), ``horizon_weeks`` (13),
        ``allocation_rows`` (8,000), ``delivered`` (impressions per line item so far),
        ``interval_scale`` (1.0).
        """
        started = time.perf_counter()
        since = None if history_days is None else now - history_days * DAY
        table = read_history(Path(event_log_dir), until=now, since=since)
        log.info("forecast history read", rows=table.size, seconds=time.perf_counter() - started)
        return cls.from_table(table, line_items, now=now, seed=seed, started=started, **options)

    @classmethod
    def from_table(
        cls,
        table: OpportunityTable,
        line_items: Sequence[ServableLineItem],
        *,
        now: float,
        seed: int = 0,
        max_rows: int = 1_000_000,
        min_rows: int = 20_000,
        supply_model: str = "auto",
        horizon_weeks: int = 13,
        allocation_rows: int = 8000,
        delivered: Mapping[int, int] | None = None,
        interval_scale: float = 1.0,
        started: float | None = None,
    ) -> Forecaster:
        started = time.perf_counter() if started is None else started
        if table.size:
            table = table.take(np.flatnonzero(table.ts < now))
        sample = draw_sample(table, max_rows=max_rows, min_rows=min_rows, seed=seed)
        first_hour, history = hourly_history(
            table.ts,
            1.0 / table.rate if table.size else np.zeros(0),
            sample.source_stratum,
            len(sample.strata),
            until=now,
        )
        hour0 = int(now // HOUR)
        supply = forecast_supply(
            history,
            first_hour,
            hour0=hour0,
            horizon_hours=max(horizon_weeks, 1) * WEEK_HOURS,
            model=supply_model,
        )
        projection = project(sample, supply, now=now)
        booked = compute_booked(
            sample,
            projection,
            line_items,
            delivered=delivered,
            allocation_rows=allocation_rows,
            seed=seed,
        )
        clicks = fit_rates(table, sample.table, "click")
        conversions = fit_rates(table, sample.table, "conversion")
        sample.source_stratum = np.zeros(0, dtype=np.int32)  # only the build needed it
        note = None
        if sample.size == 0:
            note = "no supply history in the decision log yet: every figure is zero"
        elif clicks.impressions == 0:
            note = "no measured impressions yet: clicks and conversions are zero"
        forecaster = cls(
            now=now,
            sample=sample,
            supply=supply,
            projection=projection,
            booked=booked,
            clicks=clicks,
            conversions=conversions,
            line_items={item.id: item for item in line_items},
            interval_scale=interval_scale,
            note=note,
        )
        forecaster.build_seconds = time.perf_counter() - started
        log.info(
            "forecaster built",
            opportunities=table.size,
            sample=sample.size,
            strata=len(sample.strata),
            supply_model=supply.model,
            supply_fit_seconds=round(supply.fit_seconds, 3),
            reserving=len(booked.items),
            seconds=round(forecaster.build_seconds, 3),
        )
        return forecaster

    # -- answering --------------------------------------------------------------------------

    def _mask(self, query: ForecastQuery) -> np.ndarray:
        mask = self.sample.matcher.match(query.targeting or {})
        if query.slots:
            mask = mask & self.sample.matcher.leaf("slots", frozenset(query.slots))
        return mask

    def _window(self, query: ForecastQuery) -> np.ndarray:
        start, end = _epoch(query.start_at), _epoch(query.end_at)
        if end <= start:
            raise InvalidInput("end_at must be after start_at", reason="end-before-start")
        if end <= self.now:
            raise InvalidInput(
                "the flight is over: forecasts are for the future", reason="flight-in-past"
            )
        if end > self.projection.end + 1e-6:
            horizon = datetime.fromtimestamp(self.projection.end, UTC).isoformat()
            raise InvalidInput(
                f"end_at is beyond the forecast horizon ({horizon})",
                reason="beyond-forecast-horizon",
            )
        return self.projection.window(start, end)

    def _project(
        self,
        atom_ids: np.ndarray,
        weights: np.ndarray,
        fractions: np.ndarray,
        tier: str,
        *,
        labels: np.ndarray | None = None,
        label_count: int = 0,
        hourly: bool = False,
    ) -> dict[str, Any]:
        """Sums of matched/possible/available supply over the window for weighted atoms."""
        atoms = self.booked.atoms
        projection = self.projection
        stratum = atoms.stratum[atom_ids]
        first = projection.hfirst[atoms.how[atom_ids]]
        scale = projection.scale * fractions[None, :]
        sigma = projection.sigma * fractions[None, :]
        possible_level = self.booked.level_for(tier)
        available_level = self.booked.available_level
        strata = len(self.sample.strata)
        out: dict[str, Any] = {
            "matched": 0.0,
            "possible": 0.0,
            "available": 0.0,
            "sigma": np.zeros(strata),
        }
        if labels is not None:
            out["by_label"] = np.zeros((2, label_count))
        if hourly:
            out["by_hour"] = np.zeros((2, projection.hours))
        for week in projection.week_span(fractions):
            hours = first + week * WEEK_HOURS
            supply = weights * scale[stratum, hours]
            if not supply.any():
                continue
            out["matched"] += float(supply.sum())
            out["sigma"] += np.bincount(
                stratum, weights=weights * sigma[stratum, hours], minlength=strata
            )
            possible = supply if possible_level is None else supply * possible_level[week, atom_ids]
            available = supply * available_level[week, atom_ids]
            out["possible"] += float(possible.sum())
            out["available"] += float(available.sum())
            if labels is not None:
                out["by_label"][0] += np.bincount(labels, weights=supply, minlength=label_count)
                out["by_label"][1] += np.bincount(labels, weights=available, minlength=label_count)
            if hourly:
                out["by_hour"][0] += np.bincount(hours, weights=supply, minlength=projection.hours)
                out["by_hour"][1] += np.bincount(
                    hours, weights=available, minlength=projection.hours
                )
        return out

    def _sampling_error(self, rows: np.ndarray) -> float:
        """Relative standard error of a weighted sum over ``rows`` (listener clusters)."""
        if rows.size == 0:
            return 0.0
        sample = self.sample
        weight = sample.weight[rows]
        total = float(weight.sum())
        if total <= 0:
            return 0.0
        listener = sample.table.listener[rows]
        per_listener = np.bincount(listener, weights=weight)
        keep = np.ones(per_listener.shape[0])
        keep[listener] = sample.keep[rows]
        between = float((per_listener**2 * (1.0 - keep)).sum())
        rate = sample.table.rate[rows]
        within = float((weight**2 * (1.0 - rate)).sum())
        return math.sqrt(between + within) / total

    def forecast(self, query: ForecastQuery, *, advertiser_id: int | None = None) -> ForecastResult:
        """The forecast of one draft; ``advertiser_id`` set: contention as a total only."""
        for key in query.group_by:
            if key not in GROUP_BY_KEYS:
                raise InvalidInput(
                    f"cannot group by {key!r}; allowed: {', '.join(GROUP_BY_KEYS)}",
                    reason="invalid-group-by",
                )
        fractions = self._window(query)
        window_seconds = float(fractions.sum()) * HOUR
        if self.sample.size == 0:
            return ForecastResult(
                ZERO,
                ZERO,
                ZERO,
                ZERO,
                ZERO,
                ZERO,
                ZERO,
                note=self.note,
                breakdown={key: [] for key in query.group_by},
            )
        mask = self._mask(query)
        rows = np.flatnonzero(mask)
        atoms = self.booked.atoms
        weights = np.bincount(
            atoms.of_row[rows], weights=self.sample.weight[rows], minlength=atoms.count
        )
        atom_ids = np.flatnonzero(weights)
        hourly = any(key in ("day", "hour") for key in query.group_by)
        sums = self._project(atom_ids, weights[atom_ids], fractions, query.tier, hourly=hourly)
        matched = sums["matched"]
        model_error = math.sqrt(float((sums["sigma"] ** 2).sum())) / matched if matched > 0 else 0.0
        sampling_error = self._sampling_error(rows)
        relative = math.hypot(model_error, sampling_error) * self.interval_scale

        caps = caps_from(list(query.frequency_caps or ()))
        # Reach of the draft's delivery: first the cap factor, then the delivery share.
        probe = estimate_reach(
            self.sample,
            rows,
            now=self.now,
            window_seconds=window_seconds,
            forecast_impressions=matched,
            delivered=matched,
            caps=caps,
        )
        cap_factor = probe.cap_factor
        possible = sums["possible"] * cap_factor
        available = sums["available"] * cap_factor
        delivered = available
        if query.goal_impressions:
            delivered = min(float(query.goal_impressions), available)
        reach = estimate_reach(
            self.sample,
            rows,
            now=self.now,
            window_seconds=window_seconds,
            forecast_impressions=matched,
            delivered=delivered,
            caps=caps,
        )
        reach_error = math.hypot(model_error, reach.relative_error) * self.interval_scale
        frequency = delivered / reach.reach if reach.reach > 0 else 0.0

        weight_sum = float(self.sample.weight[rows].sum())
        click_rate = float(self._weighted_clicks[rows].sum()) / weight_sum if weight_sum else 0.0
        conversion_rate = (
            float(self._weighted_conversions[rows].sum()) / weight_sum if weight_sum else 0.0
        )
        measured_clicks = (
            float(self.sample.table.outcomes.get("click", np.zeros(0))[rows].sum())
            if ("click" in self.sample.table.outcomes)
            else 0.0
        )
        measured_conversions = (
            float(self.sample.table.outcomes["conversion"][rows].sum())
            if "conversion" in self.sample.table.outcomes
            else 0.0
        )
        click_error = math.hypot(relative, 1.0 / math.sqrt(measured_clicks + 1.0))
        conversion_error = math.hypot(relative, 1.0 / math.sqrt(measured_conversions + 1.0))

        result = ForecastResult(
            matched=Estimate.around(matched, relative),
            possible=Estimate.around(possible, relative),
            available=Estimate.around(available, relative),
            reach=Estimate.around(reach.reach, reach_error),
            average_frequency=Estimate.around(frequency, relative * 0.5),
            clicks=Estimate.around(delivered * click_rate, click_error),
            conversions=Estimate.around(delivered * conversion_rate, conversion_error),
            contending=self._contending(mask, fractions, advertiser_id),
            note=self.note,
            delivered=delivered,
        )
        if query.group_by:
            result.breakdown = self._breakdown(query, rows, fractions, sums, cap_factor)
        return result

    def forecast_many(
        self, queries: Sequence[ForecastQuery], *, advertiser_id: int | None = None
    ) -> list[ForecastResult]:
        return [self.forecast(query, advertiser_id=advertiser_id) for query in queries]

    # -- contention and breakdowns ----------------------------------------------------------

    def _contending(
        self, mask: np.ndarray, fractions: np.ndarray, advertiser_id: int | None
    ) -> list[tuple[int | None, float]]:
        booked = self.booked
        if booked.taken is None or not booked.items:
            return []
        sub = mask[booked.sub_rows].astype(np.float64)
        weeks = self.projection.weeks
        node_weight = np.tile(sub, weeks) * fractions[booked.sub_nodes_hour]
        taken = booked.taken @ node_weight
        if advertiser_id is not None:
            total = float(taken.sum())
            return [(None, total)] if total > 0 else []
        found = [
            (booked.items[index].id, float(taken[index])) for index in np.flatnonzero(taken > 0.5)
        ]
        found.sort(key=lambda pair: (-pair[1], pair[0]))
        return found

    def _breakdown(
        self,
        query: ForecastQuery,
        rows: np.ndarray,
        fractions: np.ndarray,
        sums: dict[str, Any],
        cap_factor: float,
    ) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        table = self.sample.table
        atoms = self.booked.atoms
        for key in query.group_by:
            if key in ("day", "hour"):
                matched_h, available_h = sums["by_hour"]
                hours = self.projection.hour0 + np.arange(self.projection.hours)
                if key == "day":
                    labels = (hours * HOUR) // DAY
                    names = [
                        datetime.fromtimestamp(int(day) * DAY, UTC).date().isoformat()
                        for day in range(int(labels.min()), int(labels.max()) + 1)
                    ]
                    labels = labels - labels.min()
                else:
                    labels = hours % 24
                    names = [f"{hour:02d}" for hour in range(24)]
                m = np.bincount(labels, weights=matched_h, minlength=len(names))
                a = np.bincount(labels, weights=available_h, minlength=len(names)) * cap_factor
                out[key] = [
                    {
                        "key": names[i],
                        "matched": round(float(m[i]), 3),
                        "available": round(float(a[i]), 3),
                    }
                    for i in np.flatnonzero(m > 0)
                ]
                continue
            if key == "segments":
                lengths = np.diff(table.segment_ptr)[rows]
                starts = table.segment_ptr[rows]
                entry_rows = np.repeat(rows, lengths)
                offsets = np.arange(int(lengths.sum())) - np.repeat(
                    np.cumsum(lengths) - lengths, lengths
                )
                codes = table.segment_codes[np.repeat(starts, lengths) + offsets].astype(np.int64)
                names = [str(value) for value in table.segment_vocab.values]
            else:
                entry_rows = rows
                codes = table.single[key][rows].astype(np.int64)
                vocab = table.vocab[key]
                names = [str(value) for value in vocab.values] + ["unknown"]
                codes = np.where(codes < 0, len(vocab.values), codes)
            count = len(names)
            if entry_rows.size == 0 or count == 0:
                out[key] = []
                continue
            pair = atoms.of_row[entry_rows].astype(np.int64) * count + codes
            unique, inverse = np.unique(pair, return_inverse=True)
            pair_weight = np.bincount(inverse.reshape(-1), weights=self.sample.weight[entry_rows])
            projected = self._project(
                (unique // count).astype(np.int64),
                pair_weight,
                fractions,
                query.tier,
                labels=(unique % count).astype(np.int64),
                label_count=count,
            )
            m, a = projected["by_label"]
            order = np.argsort(-m, kind="stable")
            out[key] = [
                {
                    "key": names[i],
                    "matched": round(float(m[i]), 3),
                    "available": round(float(a[i] * cap_factor), 3),
                }
                for i in order
                if m[i] > 0
            ]
        return out

    def with_interval_scale(self, scale: float) -> Forecaster:
        """The same forecaster with another interval calibration (for the backtest)."""
        return replace(self, interval_scale=scale)
