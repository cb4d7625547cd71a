"""How often each listener heard a line item: the frequency distribution of counted impressions.

Read from ``listener_frequency``, which the delivery count fills exactly once per counted
impression (``reporting/counting.py``). Buckets are 1, 2, ... up to ``top`` and then
"``top`` or more", as ad servers show them; reach and average frequency come with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from backbeat.reporting.models import ListenerFrequency

DEFAULT_TOP = 10


@dataclass(frozen=True, slots=True)
class FrequencyBucket:
    """Listeners who heard the item ``low``..``high`` times (``high`` None: or more)."""

    low: int
    high: int | None
    listeners: int
    impressions: int


@dataclass(frozen=True, slots=True)
class FrequencyDistribution:
    line_item_id: int
    reach: int  # distinct listeners with a known id
    impressions: int  # counted impressions to those listeners
    buckets: list[FrequencyBucket] = field(default_factory=list)

    @property
    def average_frequency(self) -> float | None:
        return self.impressions / self.reach if self.reach else None


def frequency_distribution(
    session: Session, line_item_id: int, *, top: int = DEFAULT_TOP
) -> FrequencyDistribution:
    """One GROUP BY over the item's listeners; every bucket up to ``top`` is listed."""
    rows = session.execute(
        select(ListenerFrequency.impressions, func.count())
        .where(ListenerFrequency.line_item_id == line_item_id)
        .group_by(ListenerFrequency.impressions)
    ).all()
    listeners = [0] * (top + 1)  # index k: heard k times (k < top); index top: top or more
    impressions = [0] * (top + 1)
    for heard, count in rows:
        slot = min(int(heard), top)
        listeners[slot] += int(count)
        impressions[slot] += int(heard) * int(count)
    buckets = [
        FrequencyBucket(k, k if k < top else None, listeners[k], impressions[k])
        for k in range(1, top + 1)
    ]
    return FrequencyDistribution(
        line_item_id=line_item_id,
        reach=sum(listeners),
        impressions=sum(impressions),
        buckets=buckets,
    )
