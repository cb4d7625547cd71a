"""What the dashboard pages show, assembled from the same service functions as the API.

Campaigns and line items come from ``catalog.service`` under the caller's principal (so
isolation is the API's), delivery from ``reporting.service.delivery_report`` (the function
behind ``GET /v1/reports/delivery``), pacing from the running pacing controller's curve,
targets and ledger. Nothing here writes.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy.orm import Session

from backbeat.catalog.auth import Principal
from backbeat.catalog.models import Campaign, LineItem
from backbeat.catalog.service import (
    ADVERTISERS,
    CAMPAIGNS,
    CREATIVES,
    LINE_ITEMS,
    get_object,
    list_objects,
)
from backbeat.catalog.vocabulary import Status
from backbeat.reporting.service import COUNT_COLUMNS, DeliveryLine, delivery_report
from backbeat.serving.pacing import PacingController
from backbeat.serving.server import AdServer
from backbeat.types import format_money
from backbeat.ui.diagnosis import diagnose
from backbeat.ui.pacing import Progress, pacing_progress

PAGE = 500
HOURLY_UP_TO = timedelta(days=3)  # longer ranges default to daily rows
HOURLY_WINDOW = timedelta(days=14)  # hourly pages show the last two weeks of a long flight


@dataclass
class Totals:
    """Delivery of one line item (or a campaign) over a range."""

    impressions: int = 0
    starts: int = 0
    first_quartiles: int = 0
    midpoints: int = 0
    third_quartiles: int = 0
    completes: int = 0
    clicks: int = 0
    spend: Decimal = Decimal(0)

    def add(self, line: DeliveryLine) -> None:
        for column in COUNT_COLUMNS:
            setattr(self, column, getattr(self, column) + getattr(line, column))
        self.spend += line.spend

    @property
    def ctr(self) -> float | None:
        return self.clicks / self.impressions if self.impressions else None

    @property
    def ecpm(self) -> Decimal | None:
        """Spend per thousand impressions."""
        if not self.impressions:
            return None
        return (self.spend * 1000 / self.impressions).quantize(Decimal("0.0001"))

    @property
    def completion_rate(self) -> float | None:
        return self.completes / self.impressions if self.impressions else None

    def funnel(self) -> list[tuple[str, int]]:
        return [
            ("Impressions", self.impressions),
            ("Starts", self.starts),
            ("25%", self.first_quartiles),
            ("50%", self.midpoints),
            ("75%", self.third_quartiles),
            ("Complete", self.completes),
        ]


@dataclass
class LineItemView:
    item: LineItem
    totals: Totals
    pacing: Progress
    probability: float | None  # the controller's current pass-through probability
    goal: float | None  # what is paced, in impressions
    planned_now: float | None
    reasons: list[str] = field(default_factory=list)  # why it is not delivering as planned


@dataclass
class CampaignView:
    campaign: Campaign
    advertiser_name: str
    line_items: list[LineItemView] = field(default_factory=list)
    spend: Decimal = Decimal(0)
    impressions: int = 0

    @property
    def budget_used(self) -> float | None:
        budget = self.campaign.total_budget
        return float(self.spend / budget) if budget else None


def flight_range(campaign: Campaign, now: datetime) -> tuple[datetime, datetime]:
    """From the flight start to now (whole hours), capped at the flight end."""
    end = min(max(now, campaign.start_at), campaign.end_at)
    end = end.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    return campaign.start_at, max(end, campaign.start_at + timedelta(hours=1))


def default_granularity(start: datetime, end: datetime) -> str:
    return "hour" if end - start <= HOURLY_UP_TO else "day"


def report_range(campaign: Campaign, now: datetime, granularity: str) -> tuple[datetime, datetime]:
    """The flight so far; by hour, only its last ``HOURLY_WINDOW``."""
    start, end = flight_range(campaign, now)
    if granularity == "hour" and end - start > HOURLY_WINDOW:
        start = end - HOURLY_WINDOW
    return start, end


def campaign_lines(
    session: Session, campaign: Campaign, now: datetime, granularity: str
) -> list[DeliveryLine]:
    start, end = report_range(campaign, now, granularity)
    return delivery_report(
        session=session, campaign_id=campaign.id, start=start, end=end, granularity=granularity
    )


def delivered_before(
    session: Session, campaign: Campaign, until: datetime, line_item_ids: list[int]
) -> int:
    """Impressions of the line items from the flight start to ``until`` (a window's offset)."""
    if until <= campaign.start_at:
        return 0
    wanted = set(line_item_ids)
    lines = delivery_report(
        session=session, campaign_id=campaign.id, start=campaign.start_at, end=until,
        granularity="day",
    )  # fmt: skip
    return sum(line.impressions for line in lines if line.line_item_id in wanted)


def totals_by_line_item(lines: list[DeliveryLine]) -> dict[int, Totals]:
    totals: dict[int, Totals] = defaultdict(Totals)
    for line in lines:
        totals[line.line_item_id].add(line)
    return dict(totals)


class PacingView:
    """The running controller's view of a line item: its curve, target and ledger delivery."""

    def __init__(self, ad_server: AdServer) -> None:
        self._server = ad_server
        self._controller: PacingController = ad_server.decider.pacing
        self._servable = {item.id: item for item in ad_server.snapshot.line_items}

    def elapsed_share(self, start: datetime, end: datetime, at: datetime) -> float:
        return self._controller.curve.fraction(start.timestamp(), end.timestamp(), at.timestamp())

    def progress(
        self, item: LineItem, campaign: Campaign, totals: Totals, now: datetime
    ) -> tuple[Progress, float | None, float | None]:
        """Progress, the controller's probability (None when it does not pace it) and goal."""
        elapsed = self.elapsed_share(campaign.start_at, campaign.end_at, now)
        servable = self._servable.get(item.id)
        goal: float | None
        if servable is not None:
            # Live item: the controller's own target and the ledger's delivery.
            delivery = self._server.ledger.delivery(servable, now.timestamp())
            target = self._controller.target(servable)
            if target is None:
                goal, delivered = None, float(delivery.impressions)
                progress = pacing_progress(goal=None, delivered=delivered, elapsed_share=elapsed)
            else:
                metric, amount = target
                if metric == "impressions":
                    goal, delivered = float(amount), float(delivery.impressions)
                else:  # a budget: compare spend, report the goal in impressions at the CPM
                    goal = amount / max(servable.cpm_micros, 1)
                    delivered = delivery.spend_units / max(servable.cpm_micros, 1)
                progress = pacing_progress(goal=goal, delivered=delivered, elapsed_share=elapsed)
            probability = self._controller.probabilities.get(item.id)
            return progress, probability, goal
        # Paused or ended: not in the live snapshot; counted delivery against the booking.
        goal = _booked_goal(item)
        progress = pacing_progress(goal=goal, delivered=totals.impressions, elapsed_share=elapsed)
        return progress, None, goal

    def planned_cumulative(
        self, campaign: Campaign, goal: float, periods: list[datetime], step: timedelta
    ) -> list[float]:
        """Planned impressions by the end of each period, along the controller's curve."""
        start, end = campaign.start_at, campaign.end_at
        return [goal * self.elapsed_share(start, end, min(p + step, end)) for p in periods]


def _booked_goal(item: LineItem) -> float | None:
    if item.goal_impressions:
        return float(item.goal_impressions)
    if item.budget is not None and item.cpm:
        return float(item.budget / item.cpm * 1000)
    return None


def first_page(session: Session, principal: Principal, resource: Any, **filters: int) -> list[Any]:
    """The first page of a resource's objects the principal may see, filtered by parent."""
    rows, _ = list_objects(
        session=session,
        resource=resource,
        principal=principal,
        filters=filters,
        limit=PAGE,
        offset=0,
    )
    return list(rows)


def advertiser_names(session: Session, principal: Principal) -> dict[int, str]:
    return {row.id: row.name for row in first_page(session, principal, ADVERTISERS)}


def overview(
    session: Session, principal: Principal, pacing: PacingView, now: datetime
) -> list[CampaignView]:
    """Campaigns that are not archived, with their line items' delivery and pacing."""
    campaigns = first_page(session, principal, CAMPAIGNS)
    items = first_page(session, principal, LINE_ITEMS)
    names = advertiser_names(session, principal)
    creatives = active_creatives(session, principal)
    by_campaign: dict[int, list[LineItem]] = defaultdict(list)
    for item in items:
        if item.status != Status.ARCHIVED:
            by_campaign[item.campaign_id].append(item)
    views = []
    for campaign in campaigns:
        if campaign.status == Status.ARCHIVED:
            continue
        views.append(
            campaign_view(
                session,
                campaign,
                by_campaign[campaign.id],
                names,
                pacing,
                now,
                granularity="day",
                creatives=creatives,
            )
        )
    return views


def campaign_view(
    session: Session,
    campaign: Campaign,
    items: list[LineItem],
    names: dict[int, str],
    pacing: PacingView,
    now: datetime,
    *,
    granularity: str,
    lines: list[DeliveryLine] | None = None,
    creatives: dict[int, int] | None = None,
) -> CampaignView:
    if lines is None:
        lines = campaign_lines(session, campaign, now, granularity)
    totals = totals_by_line_item(lines)
    view = CampaignView(campaign, names.get(campaign.advertiser_id, ""))
    # Spend of every line item counted for this campaign, archived ones included.
    view.spend = sum((t.spend for t in totals.values()), Decimal(0))
    view.impressions = sum(t.impressions for t in totals.values())
    if creatives is None:
        creatives = active_creatives(session, None, campaign_id=campaign.id)
    for item in items:
        item_totals = totals.get(item.id, Totals())
        progress, probability, goal = pacing.progress(item, campaign, item_totals, now)
        planned = goal * progress.elapsed_share if goal else None
        reasons = diagnose(
            item=item,
            campaign=campaign,
            active_creatives=creatives.get(item.id, 0),
            spend=item_totals.spend,
            campaign_spend=view.spend,
            impressions=item_totals.impressions,
            progress=progress,
            probability=probability,
            now=now,
        )
        view.line_items.append(
            LineItemView(item, item_totals, progress, probability, goal, planned, reasons)
        )
    return view


def active_creatives(
    session: Session, principal: Principal | None, *, campaign_id: int | None = None
) -> dict[int, int]:
    """Active creatives per line item (of one campaign, or all the principal can see)."""
    from sqlalchemy import func, select

    from backbeat.catalog.models import Creative

    statement = (
        select(Creative.line_item_id, func.count())
        .where(Creative.status == Status.ACTIVE)
        .group_by(Creative.line_item_id)
    )
    if campaign_id is not None:
        statement = statement.where(
            Creative.line_item_id.in_(
                select(LineItem.id).where(LineItem.campaign_id == campaign_id)
            )
        )
    elif principal is not None and not principal.is_admin:
        statement = statement.where(Creative.advertiser_id == principal.advertiser_id)
    return {line_item_id: int(n) for line_item_id, n in session.execute(statement)}


def campaign_items(session: Session, principal: Principal, campaign_id: int) -> list[LineItem]:
    return first_page(session, principal, LINE_ITEMS, campaign_id=campaign_id)


def item_creatives(session: Session, principal: Principal, line_item_id: int) -> list[Any]:
    return first_page(session, principal, CREATIVES, line_item_id=line_item_id)


@dataclass
class Series:
    """A chart's data: period labels and named series, with the same numbers as its table."""

    labels: list[str]
    series: dict[str, list[float]]

    def as_json(self) -> dict[str, Any]:
        return {"labels": self.labels, "series": self.series}


def periods_of(
    start: datetime, end: datetime, granularity: str
) -> tuple[list[datetime], timedelta]:
    step = timedelta(hours=1) if granularity == "hour" else timedelta(days=1)
    first = start.replace(minute=0, second=0, microsecond=0)
    if granularity == "day":
        first = first.replace(hour=0)
    periods = []
    at = first
    while at < end and len(periods) < 5000:
        periods.append(at)
        at += step
    return periods, step


def delivery_series(
    lines: list[DeliveryLine],
    *,
    line_item_ids: list[int],
    campaign: Campaign,
    now: datetime,
    granularity: str,
    goal: float | None,
    pacing: PacingView,
    session: Session,
) -> tuple[Series, list[dict[str, Any]]]:
    """Delivered per period and cumulative, against the planned cumulative when there is a goal.

    Cumulative counts start at the flight's start, also when an hourly page shows only the
    last days of it.
    """
    start, end = report_range(campaign, now, granularity)
    periods, step = periods_of(start, end, granularity)
    wanted = set(line_item_ids)
    per_period: dict[datetime, Totals] = defaultdict(Totals)
    for line in lines:
        if line.line_item_id in wanted:
            per_period[line.period_start].add(line)
    delivered, cumulative, rows = [], [], []
    running = delivered_before(session, campaign, start, line_item_ids)
    planned = (
        pacing.planned_cumulative(campaign, goal, periods, step) if goal else [0.0] * len(periods)
    )
    for period, plan in zip(periods, planned, strict=True):
        totals = per_period.get(period, Totals())
        running += totals.impressions
        delivered.append(totals.impressions)
        cumulative.append(running)
        rows.append(
            {
                "period_start": period.isoformat(),
                "impressions": totals.impressions,
                "cumulative_impressions": running,
                "planned_cumulative_impressions": round(plan, 1) if goal else None,
                "completes": totals.completes,
                "clicks": totals.clicks,
                "spend": format_money(totals.spend),
            }
        )
    fmt = "%m-%d %H:00" if granularity == "hour" else "%Y-%m-%d"
    series: dict[str, list[float]] = {
        "Delivered (cumulative)": [float(v) for v in cumulative],
        "Delivered per period": [float(v) for v in delivered],
    }
    if goal:
        series["Planned (cumulative)"] = [round(v, 1) for v in planned]
    return Series([p.strftime(fmt) for p in periods], series), rows


def get_campaign(session: Session, principal: Principal, campaign_id: int) -> Campaign:
    campaign: Campaign = get_object(
        session=session, resource=CAMPAIGNS, object_id=campaign_id, principal=principal
    )
    return campaign


def get_line_item(session: Session, principal: Principal, line_item_id: int) -> LineItem:
    item: LineItem = get_object(
        session=session, resource=LINE_ITEMS, object_id=line_item_id, principal=principal
    )
    return item


def utc_now(clock_seconds: float) -> datetime:
    return datetime.fromtimestamp(clock_seconds, UTC)
