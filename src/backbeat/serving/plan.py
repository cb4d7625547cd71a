"""The allocation plan as servers see it: the file, its reloading, and its online rule.

The plan is computed offline (``backbeat plan``, in ``backbeat.forecast``) and written as a
small JSON file (``var/allocation-plan.json`` by default); every server's ``PlanFile``
reloads it into its ``PacingController`` when the file changes. Servers never compute it::

    {"format": 2, "generated_at": 1790000000.0, "algorithm": "shale",
     "opportunities": 52310, "observed_days": 6.98, "curve": [0.012, ...24 weights...],
     "line_items": {"17": {"share": 0.31, "supply_forecast": 412000,
                           "rank": 0, "alpha": 0.42, "dual": 0.40, "theta": 0.31,
                           "weight": 1.0}}}

Per line item: ``rank`` (allocation order), ``alpha`` (HWM's share, or SHALE's stage-two
``ζ_j``) and, for SHALE, ``dual`` (stage-one ``α_j``), ``theta`` (``d_j / S_j``) and
``weight`` (``V_j``). ``share`` is
the expected share of its eligible supply it takes (for monitoring and as a starting pace
for format-1 plans, which carry only shares).

**Online rule** (``PlanRule.pick``): a request admitted by several planned line items walks
them in allocation order, giving each ``x_j`` of it, and goes to one of them with
probability ``x_j`` (or to the rest of the book with the remainder):

* HWM: ``x_j = min(α_j, 1 − Σ_{k before j} x_k)``;
* SHALE: ``x_j = min(g_j(ζ_j − β), 1 − Σ_{k before j} x_k)`` with
  ``g_j(z) = max(0, θ_j (1 + z/V_j))`` and ``β`` the smallest ``β ≥ 0`` with
  ``Σ_j g_j(α_j − β) ≤ 1`` over the stage-one duals ``α`` (solved exactly over the
  request's few items).

``PlanFile`` reads atomically written files, so a server never sees half a plan.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from backbeat.errors import InvalidInput
from backbeat.observability import log
from backbeat.serving.pacing import PlanEntry, TrafficCurve
from backbeat.serving.snapshot import Snapshot
from backbeat.serving.targeting_index import iter_bits

__all__ = [
    "ALGORITHMS",
    "DEFAULT_PLAN_NAME",
    "PLAN_FORMAT",
    "AllocationPlan",
    "PlanFile",
    "PlanRule",
    "read_plan",
    "write_plan",
]

DEFAULT_PLAN_NAME = "allocation-plan.json"
PLAN_FORMAT = 2
ALGORITHMS = frozenset({"share", "hwm", "shale"})


@dataclass(frozen=True, slots=True)
class AllocationPlan:
    """What servers load: numbers per line item, the algorithm and the learned curve."""

    generated_at: float
    entries: dict[int, PlanEntry] = field(default_factory=dict)
    curve: tuple[float, ...] | None = None  # 24 hourly weights; None: servers keep theirs
    opportunities: int = 0
    observed_days: float = 0.0
    algorithm: str = "share"
    catalog_version: int | None = None

    def traffic_curve(self) -> TrafficCurve | None:
        return TrafficCurve(self.curve) if self.curve is not None else None

    def to_json(self) -> bytes:
        line_items: dict[str, dict[str, Any]] = {}
        for item_id, entry in sorted(self.entries.items()):
            body: dict[str, Any] = {"share": entry.share, "supply_forecast": entry.supply_forecast}
            if entry.alpha is not None:
                body.update(rank=entry.rank, alpha=entry.alpha)
            if entry.theta is not None:
                body.update(theta=entry.theta, weight=entry.weight, dual=entry.dual)
            line_items[str(item_id)] = body
        return orjson.dumps(
            {
                "format": PLAN_FORMAT,
                "generated_at": self.generated_at,
                "algorithm": self.algorithm,
                "catalog_version": self.catalog_version,
                "opportunities": self.opportunities,
                "observed_days": self.observed_days,
                "curve": list(self.curve) if self.curve is not None else None,
                "line_items": line_items,
            },
            option=orjson.OPT_INDENT_2,
        )

    @classmethod
    def from_json(cls, data: bytes | str) -> AllocationPlan:
        try:
            document = orjson.loads(data)
            if document.get("format") not in (1, PLAN_FORMAT):
                raise ValueError(f"unknown plan format {document.get('format')!r}")
            algorithm = str(document.get("algorithm") or "share")
            if algorithm not in ALGORITHMS:
                raise ValueError(f"unknown algorithm {algorithm!r}")
            entries = {}
            for key, value in document["line_items"].items():
                entries[int(key)] = _entry(key, value, algorithm)
            curve = document.get("curve")
            version = document.get("catalog_version")
            plan = cls(
                generated_at=float(document["generated_at"]),
                entries=entries,
                curve=None if curve is None else tuple(float(weight) for weight in curve),
                opportunities=int(document.get("opportunities", 0)),
                observed_days=float(document.get("observed_days", 0.0)),
                algorithm=algorithm,
                catalog_version=None if version is None else int(version),
            )
            plan.traffic_curve()  # validates the curve
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as error:
            raise InvalidInput(
                f"not a valid allocation plan: {error}", reason="invalid-allocation-plan"
            ) from error
        return plan


def _finite(value: Any, name: str, key: str) -> float:
    number = float(value)
    if number != number or number in (float("inf"), float("-inf")):
        raise ValueError(f"{name} of line item {key} is not finite")
    return number


def _entry(key: str, value: Mapping[str, Any], algorithm: str) -> PlanEntry:
    share = _finite(value["share"], "share", key)
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share {share} of line item {key} is not within [0, 1]")
    forecast = value.get("supply_forecast")
    if algorithm == "share":
        return PlanEntry(share, None if forecast is None else int(forecast))
    rank = int(value["rank"])
    alpha = _finite(value["alpha"], "alpha", key)
    theta = weight = dual = None
    if algorithm == "hwm" and not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha {alpha} of line item {key} is not within [0, 1]")
    if algorithm == "shale":
        theta = _finite(value["theta"], "theta", key)
        weight = _finite(value.get("weight", 1.0), "weight", key)
        if value.get("dual") is not None:
            dual = _finite(value["dual"], "dual", key)
        if not 0.0 <= theta <= 1.0 or weight <= 0:
            raise ValueError(f"theta/weight of line item {key} out of range")
    return PlanEntry(
        share,
        None if forecast is None else int(forecast),
        rank=rank,
        alpha=alpha,
        theta=theta,
        weight=1.0 if weight is None else weight,
        dual=dual,
    )


def write_plan(plan: AllocationPlan, path: Path) -> None:
    """Replace the plan file atomically: servers polling it see the old plan or the new one.

    The plan is checked as servers will read it first (``InvalidInput`` on a NaN, a share
    outside [0, 1]…), so a bad computation fails the run instead of replacing a good plan.
    """
    AllocationPlan.from_json(plan.to_json())
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(plan.to_json())
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def read_plan(path: Path) -> AllocationPlan:
    return AllocationPlan.from_json(Path(path).read_bytes())


class PlanFile:
    """A ``PlanSource`` reloading the plan file whenever it changes (a ``stat`` per poll).

    A missing file is an empty plan; an unreadable one is logged once and the last good
    plan stays in force.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.loaded: AllocationPlan | None = None
        self._seen: tuple[int, int, int] | None = None

    def poll(self) -> tuple[Mapping[int, PlanEntry], TrafficCurve | None] | None:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            if self._seen is None:
                return None
            self._seen, self.loaded = None, None
            log.info("allocation plan removed", path=str(self.path))
            return {}, None
        key = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        if key == self._seen:
            return None
        self._seen = key
        try:
            plan = read_plan(self.path)
        except (OSError, InvalidInput) as error:
            log.warning("allocation plan not loaded", path=str(self.path), error=str(error))
            return None
        self.loaded = plan
        log.info(
            "allocation plan loaded",
            path=str(self.path),
            line_items=len(plan.entries),
            algorithm=plan.algorithm,
        )
        return plan.entries, plan.traffic_curve()


@dataclass(frozen=True, slots=True)
class _Planned:
    position: int
    rank: int
    alpha: float
    theta: float | None
    weight: float
    dual: float
    start_ts: float
    end_ts: float


class PlanRule:
    """The plan's online rule over one snapshot's line-item positions (built off the hot path)."""

    __slots__ = ("bits", "_by_position")

    def __init__(self, snapshot: Snapshot, plan: Mapping[int, PlanEntry]) -> None:
        self.bits = 0
        self._by_position: dict[int, _Planned] = {}
        for position, item in enumerate(snapshot.line_items):
            entry = plan.get(item.id)
            if entry is None or entry.alpha is None or entry.rank is None:
                continue
            self.bits |= 1 << position
            self._by_position[position] = _Planned(
                position, entry.rank, entry.alpha, entry.theta, entry.weight,
                entry.alpha if entry.dual is None else entry.dual, item.start_ts, item.end_ts,
            )  # fmt: skip

    def pick(self, candidates: int, now: float, coin: float) -> int | None:
        """Planned positions among ``candidates`` that lose this request (a bitset).

        ``coin`` is uniform in [0, 1). Every planned candidate but the one the rule gives
        the request to is excluded; when the request goes to no planned item, all are.
        """
        planned = candidates & self.bits
        if not planned:
            return None
        here = [
            entry
            for entry in (self._by_position[p] for p in iter_bits(planned))
            if entry.start_ts <= now < entry.end_ts
        ]
        if not here:
            return None
        here.sort(key=lambda entry: (entry.rank, entry.position))
        shares = _shares(here)
        left = 1.0
        chosen: int | None = None
        for entry, wanted in zip(here, shares, strict=True):
            x = min(wanted, left)
            if chosen is None and coin < x:
                chosen = entry.position
            coin -= x
            left -= x
            if left <= 0:
                break
        excluded = planned
        if chosen is not None:
            excluded &= ~(1 << chosen)
        return excluded


def _shares(here: list[_Planned]) -> list[float]:
    """Each item's wanted share of the request before the 'what is left' cap."""
    if here[0].theta is None:  # HWM
        return [entry.alpha for entry in here]
    thetas = [entry.theta or 0.0 for entry in here]
    beta = _beta(here, thetas)
    return [
        max(0.0, theta * (1.0 + (entry.alpha - beta) / entry.weight))
        for entry, theta in zip(here, thetas, strict=True)
    ]


def _beta(here: list[_Planned], thetas: list[float]) -> float:
    """Smallest β ≥ 0 with Σ θ_j max(0, 1 + (α_j − β)/V_j) ≤ 1 (piecewise linear, exact)."""
    # Each term is c_j (b_j − β) for β < b_j: c_j = θ_j/V_j, b_j = α_j + V_j (α: the dual).
    terms = sorted(
        (
            (entry.dual + entry.weight, theta / entry.weight)
            for entry, theta in zip(here, thetas, strict=True)
        ),
        reverse=True,
    )
    total_c = total_cb = 0.0
    for k, (b, c) in enumerate(terms):
        total_c += c
        total_cb += c * b
        beta = (total_cb - 1.0) / total_c if total_c > 0 else 0.0
        following = terms[k + 1][0] if k + 1 < len(terms) else float("-inf")
        if beta >= following:
            return max(beta, 0.0)
    return 0.0
