"""``backbeat report`` killed (SIGKILL) at random points and run again counts exactly once."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from backbeat.db import make_engine, make_session_factory
from backbeat.eventlog import EventLogWriter
from backbeat.events import DELIVERY_EVENTS, Event
from backbeat.measurement.delivery import count_delivery
from backbeat.reporting.models import DeliveryHourly
from backbeat.reporting.service import COUNT_COLUMNS as COLUMNS

H0 = 1_790_002_800.0


def _events(rng: random.Random, decisions: int) -> list[Event]:
    events = []
    for n in range(decisions):
        t = H0 + rng.uniform(0, 6 * 3600)
        for kind in DELIVERY_EVENTS[: rng.randint(1, 7)]:
            for _ in range(rng.choice([1, 1, 2])):
                events.append(
                    Event(
                        type=str(kind),
                        ts=t + rng.uniform(0, 4000),
                        decision_id=f"d{n}",
                        line_item_id=1 + n % 5,
                        campaign_id=9,
                        price_micros=rng.choice([1_500_000, 3_333_333]),
                        currency="GBP",
                    )
                )
    rng.shuffle(events)
    return events


@pytest.mark.slow
def test_sigkill_at_random_points_then_rerun_gives_the_clean_totals(tmp_path: Path) -> None:
    rng = random.Random(2026)
    events = _events(rng, 1200)
    var = tmp_path / "var"
    with EventLogWriter(var / "events", segment_bytes=40_000) as writer:
        for future in [writer.append(e.to_bytes()) for e in events]:
            future.result(timeout=10)
    env = {**os.environ, "BACKBEAT_VAR_DIR": str(var), "BACKBEAT_LOG_JSON": "false"}
    command = [sys.executable, "-m", "backbeat.cli.main", "report", "--batch-records", "25"]
    killed = 0
    # Kill points are drawn from the start-up to well into the counting; a quiet machine
    # starts fast, so keep trying (a bounded number of times) until runs have really died.
    for attempt in range(8):
        if killed >= 2:
            break
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(rng.uniform(0.4, 2.0 + attempt * 0.3))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            killed += 1
        process.wait(timeout=60)
    final = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert final.returncode == 0, final.stderr
    assert killed >= 1  # at least one run really died mid-way

    engine = make_engine(f"sqlite:///{var / 'backbeat.db'}")
    with make_session_factory(engine)() as session:
        counted = {
            (row.line_item_id, row.hour): (*(getattr(row, c) for c in COLUMNS), row.spend)
            for row in session.execute(select(DeliveryHourly)).scalars()
            if any(getattr(row, c) for c in COLUMNS)
        }
    engine.dispose()
    expected = {
        key: (*(getattr(row, c) for c in COLUMNS), row.spend)
        for key, row in count_delivery(events).rows.items()
    }
    assert counted == expected
    assert f"read {len(events)} events" in final.stdout
