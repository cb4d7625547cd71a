"""Each data-quality check fails with a message naming it; good rows pass."""

from __future__ import annotations

import numpy as np
import pytest

from backbeat.errors import InvalidInput
from backbeat.promotion.features import FEATURES
from backbeat.promotion.quality import QualityBounds, check_quality, quality_problems

BOUNDS = QualityBounds(min_rows=10)


def good(rows: int = 100) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    columns = {name: rng.integers(0, 5, rows).astype(np.float64) for name in FEATURES}
    columns["artist_plays_ever"] = columns["artist_plays_28d"] + 1
    columns["genre_share_28d"] = rng.random(rows)
    columns["surface"] = rng.integers(0, 2, rows).astype(np.float64)
    label = np.zeros(rows, dtype=np.int8)
    label[:5] = 1
    return {
        **columns,
        "exposure_id": np.array([f"x{i}" for i in range(rows)]),
        "listener": np.arange(rows),
        "release": np.zeros(rows),
        "artist": np.zeros(rows),
        "ts": np.arange(rows),
        "label": label,
        "conversion_type": np.array([""] * rows),
    }


def test_good_rows_pass():
    assert quality_problems(good(), previous_rows=90, bounds=BOUNDS) == []


@pytest.mark.parametrize(
    ("damage", "check", "words"),
    [
        (lambda c: c.pop("genre_share_28d"), "schema", "missing columns"),
        (
            lambda c: c.__setitem__("past_clicks", c["past_clicks"].astype(np.int64)),
            "schema",
            "not a float",
        ),
        (lambda c: c["listener_plays_28d"].__setitem__(3, np.nan), "nulls", "null/inf"),
        (lambda c: c["past_exposures"].__setitem__(0, -1), "ranges", "negative"),
        (lambda c: c["genre_share_28d"].__setitem__(0, 1.5), "ranges", "outside [0, 1]"),
        (lambda c: c["days_since_last_play"].__setitem__(0, 400), "ranges", "outside [0, 365]"),
        (lambda c: c["artist_plays_28d"].__setitem__(0, 99), "ranges", "above artist_plays_ever"),
        (lambda c: c["surface"].__setitem__(0, 9), "ranges", "surface"),
        (lambda c: c["label"].__setitem__(slice(None), 0), "label-rate", "label rate 0.0000%"),
        (lambda c: c["label"].__setitem__(slice(None), 1), "label-rate", "outside"),
    ],
)
def test_each_check_fails_the_run_with_its_name(damage, check, words):
    columns = good()
    damage(columns)
    with pytest.raises(InvalidInput) as raised:
        check_quality(columns, previous_rows=None, bounds=BOUNDS)
    assert raised.value.reason == "data-quality"
    assert f"[{check}]" in raised.value.detail and words in raised.value.detail


def test_volume_against_the_previous_run_and_the_minimum():
    problems = quality_problems(good(40), previous_rows=100, bounds=BOUNDS)
    assert [check for check, _ in problems] == ["volume"]
    assert "below 50% of the previous run's 100" in problems[0][1]
    assert [c for c, _ in quality_problems(good(5), None, BOUNDS)] == ["volume", "label-rate"]
