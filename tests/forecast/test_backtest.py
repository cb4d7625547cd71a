"""The backtest: its error measures, its ground truth, and a small run end to end."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime

import numpy as np
import orjson
import pytest
from click.testing import CliRunner

from backbeat.cli.main import cli
from backbeat.forecast.backtest import (
    Comparison,
    coverage,
    match_matrix,
    random_combinations,
    wape,
)
from backbeat.serving.request import listening_app
from backbeat.serving.targeting_index import compile_predicate
from backbeat.simulation import TrafficConfig, simulate_traffic


def test_wape_and_coverage_by_hand():
    rows = [
        Comparison("a", forecast=110, actual=100, low=90, high=120),  # inside
        Comparison("b", forecast=40, actual=50, low=30, high=45),  # above the interval
        Comparison("c", forecast=0, actual=0, low=0, high=0),  # inside (closed bounds)
    ]
    assert wape(rows) == pytest.approx((10 + 10 + 0) / 150)
    assert [row.covered for row in rows] == [True, False, True]
    assert coverage(rows) == pytest.approx(2 / 3)
    assert math.isnan(coverage([Comparison("x", 1, 2)]))  # no interval: nothing to cover
    assert math.isnan(wape([]))


def test_match_matrix_agrees_with_the_ad_servers_predicates():
    """The vectorised ground truth equals ``compile_predicate`` break by break, ``any`` and
    ``not`` included."""
    traffic = simulate_traffic(
        TrafficConfig.starting(
            datetime(2026, 2, 9, tzinfo=UTC), days=2, daily_requests=1500, listeners=800, seed=4
        )
    )
    combinations = random_combinations(random.Random(2), 40) + [
        {"any": [{"countries": ["US"]}, {"segments": ["gamers"]}]},
        {"not": {"devices": ["mobile"]}, "genres": ["news", "pop"]},
        {"segments": ["parents"], "not": {"segments": ["students"]}},
        {"apps": ["Overcast", "Spotify"]},
        {},
    ]
    matrix = match_matrix(traffic, combinations)
    predicates = [compile_predicate(c) if c else (lambda _: True) for c in combinations]
    audience = traffic.audience
    for row in range(0, len(traffic), 7):
        attributes = traffic.attributes(row)
        attributes["apps"] = listening_app(audience.user_agent[int(traffic.listener[row])])
        expected = [bool(predicate(attributes)) for predicate in predicates]
        assert matrix[row].tolist() == expected, row
    assert matrix[:, -1].all() and 0 < matrix[:, 0].sum() < len(traffic)


@pytest.mark.slow
def test_backtest_runs_end_to_end_and_reports_finite_figures(tmp_path):
    """A small backtest from the CLI: every figure finite, the report valid JSON."""
    result = CliRunner().invoke(
        cli,
        [
            "forecast",
            "backtest",
            "--weeks",
            "2",
            "--combinations",
            "15",
            "--daily-requests",
            "1200",
            "--listeners",
            "2500",
            "--seed",
            "3",
            "--json",
        ],  # fmt: skip
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    report = orjson.loads(result.stdout)  # logs go to stderr, the report alone to stdout
    metrics = report["metrics"]
    for name in ("supply_wape", "reach_wape", "clicks_wape", "delivered_wape", "coverage"):
        assert np.isfinite(metrics[name]), name
    assert 0.0 <= metrics["coverage"] <= 1.0
    assert len(report["combinations"]) == 15 and len(report["guaranteed"]) == 6
    for entry in report["combinations"]:
        supply = entry["supply"]
        assert supply["low"] <= supply["forecast"] <= supply["high"]
        assert supply["actual"] >= 0 and entry["reach"]["actual"] <= supply["actual"]
        # What the guaranteed items left of a combination is part of what it matched.
        assert 0 <= entry["available"]["actual"] <= supply["actual"]
    # The ad server gave no guaranteed item more than its goal would need (all in the week).
    assert all(item["actual"] >= 0 for item in report["guaranteed"])


def test_backtest_refuses_bad_options():
    result = CliRunner().invoke(cli, ["forecast", "backtest", "--weeks", "0"])
    assert result.exit_code != 0 and "weeks" in result.output.lower()
