"""Reach from a decision log sampled by listener hash, against the exact distinct count.

The simulator writes the same week of traffic as the log would at ``sample`` 1.0 and 0.1
(kept by listener, as the ad server does); the exact distinct listeners per targeting come
from the full traffic (the ad server's compiled targeting, ``match_matrix``), not from the
forecaster.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from backbeat.forecast.backtest import match_matrix
from backbeat.forecast.history import read_history
from backbeat.forecast.reach import distinct_listeners
from backbeat.forecast.service import Forecaster
from backbeat.simulation import TrafficConfig, simulate_traffic
from backbeat.simulation.records import write_history

TARGETINGS = [
    {},
    {"countries": ["US"]},
    {"devices": ["mobile"]},
    {"countries": ["GB", "DE"], "not": {"devices": ["desktop"]}},
    {"dayparts": list(range(6, 12))},
]


pytestmark = pytest.mark.slow  # a simulated week written three times (~20 s)


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    traffic = simulate_traffic(
        TrafficConfig.starting(
            datetime(2026, 2, 2, tzinfo=UTC),
            days=7,
            daily_requests=12_000,
            listeners=12_000,
            seed=3,
        )
    )
    now = traffic.config.start + 7 * 86400
    matrix = match_matrix(traffic, TARGETINGS)
    exact = [len(np.unique(traffic.listener[matrix[:, i]])) for i in range(len(TARGETINGS))]
    built = {}
    for sample, sample_by in ((1.0, "listener"), (0.1, "listener"), (0.1, "request")):
        directory = tmp_path_factory.mktemp(f"log-{sample}-{sample_by}")
        write_history(directory, traffic, sample=sample, sample_by=sample_by)
        table = read_history(directory, until=now)
        built[sample, sample_by] = Forecaster.from_table(
            table, [], now=now, supply_model="profile", min_rows=100
        )
    return exact, built


def _reach(forecaster: Forecaster, targeting: dict) -> tuple[float, float]:
    rows = forecaster.rows
    matched = np.flatnonzero(rows.matcher.match(targeting))
    keep = rows.listener_keep[np.unique(rows.listener[matched])]
    # Horvitz-Thompson standard error of the distinct count: sqrt(sum (1 - p) / p^2).
    return distinct_listeners(rows, matched), float(np.sqrt(((1 - keep) / keep**2).sum()))


def test_full_log_reach_is_the_exact_distinct_count(logs):
    exact, built = logs
    for targeting, truth in zip(TARGETINGS, exact, strict=True):
        estimate, error = _reach(built[1.0, "listener"], targeting)
        assert error == 0.0
        assert estimate == pytest.approx(truth), targeting


def test_a_tenth_of_listeners_scales_back_to_the_exact_count(logs):
    exact, built = logs
    forecaster = built[0.1, "listener"]
    for targeting, truth in zip(TARGETINGS, exact, strict=True):
        estimate, error = _reach(forecaster, targeting)
        # Within four standard errors and within 10% (a few % on the large ones).
        assert abs(estimate - truth) <= 4 * error, (targeting, estimate, truth)
        assert estimate == pytest.approx(truth, rel=0.10), targeting
    total, _ = _reach(forecaster, {})
    assert total == pytest.approx(exact[0], rel=0.05)


def test_a_request_sampled_log_cannot_scale_listeners_and_reads_low(logs):
    """The old per-request sampling loses the light listeners (documented limitation)."""
    exact, built = logs
    estimate, _ = _reach(built[0.1, "request"], {})
    assert estimate < 0.8 * exact[0]
