"""The forecaster built from a real event log: records decoded like the ad server logs them,
outcomes joined by decision id, nothing read from after ``now``, and no history yet."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from forecast_fixtures import DAY, NOW

from backbeat.eventlog import EventLogWriter
from backbeat.events import Event, EventType
from backbeat.forecast.history import read_history
from backbeat.forecast.service import Forecaster, ForecastQuery
from backbeat.forecast.synthetic import synthetic_table


def write_log(
    directory: Path, rows: int = 3000, *, seed: int = 5, after: int = 0, days: float = 14
) -> None:
    """Opportunity records shaped like ``AdServer._log_opportunity``, with impressions and
    clicks for some decisions; ``after`` more opportunities dated after ``NOW``."""
    table = synthetic_table(rows, days=days, end=NOW, seed=seed)
    writer = EventLogWriter(directory, max_delay_s=0.0)
    payloads = []
    for row in range(table.size):
        attributes = table.attributes(row)
        decision = f"d{row}"
        attrs = {key: value for key, value in attributes.items() if value not in (None, ())}
        attrs.pop("dayparts"), attrs.pop("weekdays")  # logged only while targeted
        attrs["segments"] = list(attributes["segments"])
        attrs.update(tz="UTC", user_agent="", targeted=1, catalog_version=1, winners=[], sample=0.1)
        payloads.append(
            Event(
                type=EventType.OPPORTUNITY,
                ts=float(table.ts[row]),
                decision_id=decision,
                slot_id=attrs.pop("slots"),
                listener=table.listeners[table.listener[row]],
                attrs=attrs,
            ).to_bytes()
        )
        if table.outcomes["impression"][row]:
            payloads.append(
                Event(
                    type=EventType.IMPRESSION, ts=float(table.ts[row]) + 5, decision_id=decision
                ).to_bytes()
            )
        if table.outcomes["click"][row]:
            payloads.append(
                Event(
                    type=EventType.CLICK, ts=float(table.ts[row]) + 20, decision_id=decision
                ).to_bytes()
            )
    for extra in range(after):
        payloads.append(
            Event(
                type=EventType.OPPORTUNITY,
                ts=NOW + 60 + extra,
                decision_id=f"x{extra}",
                slot_id=1,
                listener="future",
                attrs={"countries": "US", "sample": 0.1},
            ).to_bytes()
        )
    writer.append_many(payloads).result()
    writer.close()


def test_history_decodes_records_like_the_ad_server_logs_them(tmp_path):
    write_log(tmp_path, 500, after=50)
    table = read_history(tmp_path, until=NOW)
    assert table.size == 500  # the 50 after NOW are not history
    source = synthetic_table(500, days=14, end=NOW, seed=5)
    for row in (0, 17, 499):
        assert table.attributes(row) == source.attributes(row)  # local time derived from tz
    assert np.array_equal(table.outcomes["click"], source.outcomes["click"])
    assert np.array_equal(table.outcomes["impression"], source.outcomes["impression"])
    assert np.allclose(table.rate, 0.1)


def test_build_from_the_log_forecasts_supply_clicks_and_breakdowns(tmp_path):
    write_log(tmp_path, 3000)
    f = Forecaster.build(tmp_path, [], now=NOW, supply_model="profile")
    result = f.forecast(
        ForecastQuery(
            start_at=NOW,
            end_at=NOW + 7 * DAY,
            targeting={"countries": ["US", "GB"]},
            group_by=["countries", "segments"],
        )
    )
    per_week = 3000 / 0.1 / 2 * (0.42 + 0.16)
    assert result.matched.value == pytest.approx(per_week, rel=0.2)
    assert 0 < result.clicks.value < result.available.value * 0.05
    assert {row["key"] for row in result.breakdown["countries"]} == {"US", "GB"}
    assert result.note is None
    body = result.to_dict()
    for figure in (
        "matched",
        "possible",
        "available",
        "reach",
        "average_frequency",
        "clicks",
        "conversions",
    ):
        assert set(body[figure]) == {"value", "low", "high"}


def test_no_history_answers_zeros_with_a_note(tmp_path):
    f = Forecaster.build(tmp_path / "nothing", [], now=NOW)
    result = f.forecast(ForecastQuery(start_at=NOW, end_at=NOW + DAY, group_by=["countries"]))
    assert result.matched.value == result.available.value == result.reach.value == 0
    assert "no supply history" in result.note
    assert result.breakdown == {"countries": []}


def test_bulk_answers_from_the_subsample_close_to_the_full_sample(tmp_path):
    from forecast_fixtures import forecaster

    f = forecaster(bulk_rows=10_000)
    assert f.bulk_rows.size < f.rows.size
    draft = ForecastQuery(start_at=NOW, end_at=NOW + 7 * DAY, targeting={"countries": ["US"]})
    full = f.forecast(draft)
    (bulk,) = f.forecast_many([draft])
    assert bulk.matched.low < full.matched.value < bulk.matched.high
    assert bulk.matched.high - bulk.matched.low > full.matched.high - full.matched.low


def test_the_cli_forecasts_from_var_and_refuses_bad_input(tmp_path, runner, monkeypatch):
    from backbeat.cli.main import cli

    monkeypatch.setenv("BACKBEAT_VAR_DIR", str(tmp_path / "var"))
    write_log(tmp_path / "var" / "events", 1500, days=2)
    flight = ["--start", "2026-09-22T00:00:00Z", "--end", "2026-09-24T00:00:00Z", "--now", str(NOW)]
    result = runner.invoke(
        cli,
        [
            "forecast",
            *flight,
            "--targeting",
            '{"countries": ["US"]}',
            "--group-by",
            "countries",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    body = __import__("json").loads(result.output[result.output.index("{") :])
    assert body["matched"]["value"] > 0
    assert [row["key"] for row in body["breakdown"]["countries"]] == ["US"]
    bad = runner.invoke(cli, ["forecast", *flight, "--targeting", '{"countries": ["XX"]}'])
    assert bad.exit_code == 2 and "invalid-targeting-value" in bad.output
    worse = runner.invoke(cli, ["forecast", *flight, "--targeting", "{not json"])
    assert worse.exit_code == 2 and "invalid-json" in worse.output
    missing = runner.invoke(cli, ["forecast", "--start", "2026-09-22T00:00:00Z"])
    assert missing.exit_code == 2
