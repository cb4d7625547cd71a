"""Pacing progress of a line item: share of its goal delivered over share of its flight gone.

"Share of flight" is measured on the pacing controller's own traffic curve (a flight that
has seen its busy evening hours is further along than its wall-clock share), and the goal
is what the controller paces (impressions, or the budget in spend units), so the indicator
agrees with what the controller is steering towards.
"""

from __future__ import annotations

from dataclasses import dataclass

BEHIND_BELOW = 0.9  # progress under this: behind plan
AHEAD_ABOVE = 1.1  # progress over this: ahead of plan


@dataclass(frozen=True, slots=True)
class Progress:
    status: str  # on-track | behind | ahead | not-started | ended | met | unpaced
    progress: float | None  # delivered share ÷ elapsed share
    delivered_share: float | None
    elapsed_share: float

    @property
    def label(self) -> str:
        return self.status.replace("-", " ")


def pacing_progress(*, goal: float | None, delivered: float, elapsed_share: float) -> Progress:
    """Classify delivery against plan; ``elapsed_share`` is in [0, 1] of the flight's traffic."""
    elapsed = min(max(elapsed_share, 0.0), 1.0)
    if not goal or goal <= 0:
        return Progress("unpaced", None, None, elapsed)
    share = max(delivered, 0.0) / goal
    if share >= 1.0:
        return Progress("met", share / elapsed if elapsed > 0 else None, share, elapsed)
    if elapsed <= 0.0:
        return Progress("not-started", None, share, elapsed)
    progress = share / elapsed
    if elapsed >= 1.0:
        return Progress("ended", progress, share, elapsed)
    if progress < BEHIND_BELOW:
        status = "behind"
    elif progress > AHEAD_ABOVE:
        status = "ahead"
    else:
        status = "on-track"
    return Progress(status, progress, share, elapsed)
