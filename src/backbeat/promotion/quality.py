"""Data-quality checks on training rows: fail the run rather than train on bad data."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from backbeat.errors import InvalidInput
from backbeat.promotion.features import FEATURES, MAX_DAYS, SURFACE_CODES
from backbeat.promotion.metrics import QUALITY_FAILURES

KEY_COLUMNS = ("exposure_id", "listener", "release", "artist", "ts", "label", "conversion_type")
COUNT_FEATURES = (
    "artist_plays_28d",
    "artist_plays_ever",
    "listener_plays_28d",
    "artist_popularity_28d",
    "past_exposures",
    "past_clicks",
    "past_conversions",
    "past_exposures_artist",
)


@dataclass(frozen=True)
class QualityBounds:
    min_label_rate: float = 0.002
    max_label_rate: float = 0.5
    min_volume_ratio: float = 0.5  # rows against the previous run
    min_rows: int = 200


def quality_problems(
    columns: dict[str, np.ndarray], previous_rows: int | None, bounds: QualityBounds
) -> list[tuple[str, str]]:
    """Every failed check as (check, message); empty when the rows pass."""
    problems: list[tuple[str, str]] = []
    missing = [name for name in (*KEY_COLUMNS, *FEATURES) if name not in columns]
    if missing:
        return [("schema", f"missing columns {missing}")]
    rows = len(columns["label"])
    for name in FEATURES:
        values = columns[name]
        if values.dtype.kind != "f":
            problems.append(("schema", f"{name} is {values.dtype}, not a float"))
        elif not np.isfinite(values).all():
            problems.append(
                ("nulls", f"{name} has {int((~np.isfinite(values)).sum())} null/inf values")
            )
    if problems:
        return problems
    for name in COUNT_FEATURES:
        if (columns[name] < 0).any():
            problems.append(("ranges", f"{name} has negative values"))
    for name in ("days_since_artist_play", "days_since_last_play"):
        values = columns[name]
        if ((values < 0) | (values > MAX_DAYS)).any():
            problems.append(("ranges", f"{name} outside [0, {MAX_DAYS:g}]"))
    share = columns["genre_share_28d"]
    if ((share < 0) | (share > 1)).any():
        problems.append(("ranges", "genre_share_28d outside [0, 1]"))
    if (columns["artist_plays_28d"] > columns["artist_plays_ever"]).any():
        problems.append(("ranges", "artist_plays_28d above artist_plays_ever"))
    if not np.isin(columns["surface"], list(SURFACE_CODES.values())).all():
        problems.append(("ranges", "unknown surface codes"))
    if rows < bounds.min_rows:
        problems.append(("volume", f"{rows} rows, fewer than the minimum {bounds.min_rows}"))
    if previous_rows and rows < bounds.min_volume_ratio * previous_rows:
        problems.append(
            (
                "volume",
                f"{rows} rows, below {bounds.min_volume_ratio:.0%} of the previous run's {previous_rows}",
            )
        )
    rate = float(columns["label"].mean()) if rows else 0.0
    if rows and not bounds.min_label_rate <= rate <= bounds.max_label_rate:
        problems.append(
            (
                "label-rate",
                f"label rate {rate:.4%} outside [{bounds.min_label_rate:.2%}, {bounds.max_label_rate:.0%}]",
            )
        )
    return problems


def check_quality(
    columns: dict[str, np.ndarray], previous_rows: int | None, bounds: QualityBounds
) -> None:
    """Raise :class:`InvalidInput` (reason ``data-quality``) naming every failed check."""
    problems = quality_problems(columns, previous_rows, bounds)
    for check, _ in problems:
        QUALITY_FAILURES.labels(check).inc()
    if problems:
        raise InvalidInput(
            "data-quality checks failed: " + "; ".join(f"[{c}] {m}" for c, m in problems),
            reason="data-quality",
            checks=",".join(sorted({check for check, _ in problems})),
        )
