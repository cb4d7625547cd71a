"""``backbeat plan --every``: the planner keeps running, re-plans on its schedule and at once
when the book changes, so servers pick up a new guaranteed item without anyone re-running it."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import orjson
from sqlalchemy.orm import Session

from backbeat.catalog.models import Advertiser, Campaign, Creative, LineItem
from backbeat.catalog.service import bump_catalog_version
from backbeat.db import make_engine, migrate
from backbeat.eventlog import EventLogWriter
from backbeat.events import Event, EventType

DAY = 86400.0
T0 = 1_790_035_200.0  # a UTC midnight


def _history(directory: Path, end: float = T0) -> None:
    """Two days of opportunities before ``end``, all logged: half US, half GB."""
    rng = random.Random(5)
    with EventLogWriter(directory) as writer:
        for n in range(3000):
            ts = end - 2 * DAY + rng.random() * 2 * DAY
            country = "US" if n % 2 else "GB"
            event = Event(type=EventType.OPPORTUNITY, ts=ts, decision_id=f"d{n}", slot_id=1,
                          listener=f"l{n % 300}",
                          attrs={"countries": country, "targeted": 2, "catalog_version": 1,
                                 "winners": [], "sample": 1.0})  # fmt: skip
            writer.append(event.to_bytes())


def _add_line_item(session: Session, campaign: Campaign, name: str, country: str) -> None:
    item = LineItem(campaign_id=campaign.id, advertiser_id=campaign.advertiser_id, name=name,
                    tier="guaranteed", cpm=Decimal(10), goal_impressions=300, pacing="even",
                    targeting={"countries": [country]})  # fmt: skip
    session.add(item)
    session.flush()
    session.add(Creative(line_item_id=item.id, advertiser_id=campaign.advertiser_id, name="Spot",
                         media_url="https://cdn.example.com/a.mp3", mime_type="audio/mpeg",
                         duration_ms=30_000))  # fmt: skip
    bump_catalog_version(session)


def _book_with_history(var: Path, now: float):  # type: ignore[no-untyped-def]
    """Two days of history before ``now``, a migrated database and one campaign in flight
    at ``now`` with a guaranteed US line item; the engine and the campaign's id."""
    _history(var / "events", end=now)
    url = f"sqlite:///{var / 'backbeat.db'}"
    migrate(url)
    engine = make_engine(url)
    with Session(engine) as session, session.begin():
        advertiser = Advertiser(name="Acme")
        campaign = Campaign(advertiser=advertiser, name="Spring", total_budget=Decimal(1000),
                            currency="USD", start_at=datetime.fromtimestamp(now - DAY, UTC),
                            end_at=datetime.fromtimestamp(now + 2 * DAY, UTC))  # fmt: skip
        session.add_all([advertiser, campaign])
        session.flush()
        _add_line_item(session, campaign, "US", "US")
        return engine, campaign.id


def _written(path: Path) -> dict | None:
    try:
        return orjson.loads(path.read_bytes())
    except (FileNotFoundError, orjson.JSONDecodeError):
        return None


def _wait_for(path: Path, predicate, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        document = _written(path)
        if document is not None and predicate(document):
            return document
        time.sleep(0.1)
    raise AssertionError(f"plan never became as expected: {_written(path)}")


def test_plan_every_replans_as_soon_as_the_book_changes(tmp_path: Path) -> None:
    var = tmp_path / "var"
    engine, campaign_id = _book_with_history(var, T0)
    plan_path = var / "allocation-plan.json"
    at = datetime.fromtimestamp(T0, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    # A long schedule: only the book change can explain a second plan within the test.
    command = [sys.executable, "-m", "backbeat.cli.main", "plan", "--algorithm", "share",
               "--at", at, "--every", "3600"]  # fmt: skip
    env = {**os.environ, "BACKBEAT_VAR_DIR": str(var), "BACKBEAT_LOG_JSON": "false"}
    log = (tmp_path / "plan.log").open("wb")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        first = _wait_for(plan_path, lambda d: set(d["line_items"]) == {"1"}, timeout=60)
        assert process.poll() is None, "plan --every exited after one plan"
        with Session(engine) as session, session.begin():
            _add_line_item(session, session.get(Campaign, campaign_id), "GB", "GB")
        second = _wait_for(plan_path, lambda d: set(d["line_items"]) == {"1", "2"}, timeout=30)
        assert second["catalog_version"] == first["catalog_version"] + 1
        # Each item's share is its remaining goal over its own country's supply: the
        # second item targets the other half of the traffic, so both need about as much.
        shares = [second["line_items"][key]["share"] for key in ("1", "2")]
        assert abs(shares[0] - shares[1]) < 0.25 * max(shares)
        assert process.poll() is None
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        engine.dispose()


def _planners_of(var: Path) -> list[int]:
    """Pids of live ``backbeat ... plan`` processes started with ``var`` as their var dir."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().split()[2]
        except OSError:
            continue
        if b"plan" in command and str(var).encode() in environ and state != "Z":
            found.append(int(entry.name))
    return found


def test_serve_plan_every_runs_the_planner_beside_the_server_and_stops_it(tmp_path: Path):
    import socket

    var = tmp_path / "var"
    engine, _ = _book_with_history(var, time.time())
    engine.dispose()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "BACKBEAT_VAR_DIR": str(var), "BACKBEAT_LOG_JSON": "false"}
    command = [sys.executable, "-m", "backbeat.cli.main", "serve", "--port", str(port),
               "--plan-every", "600"]  # fmt: skip
    output = (tmp_path / "serve.log").open("wb")  # not a pipe: nobody reads it until the end
    server = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
    try:
        written = _wait_for(var / "allocation-plan.json", lambda d: "1" in d["line_items"], 60)
        assert written["algorithm"] in ("shale", "share")
        assert _planners_of(var), "no planner process beside the server"
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)
        output.close()
    deadline = time.monotonic() + 10
    while _planners_of(var) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _planners_of(var), "the planner outlived the server"


class _Stop(Exception):
    """Ends the planner's loop from inside the test."""


def test_a_change_committed_while_planning_triggers_the_next_plan(tmp_path: Path, monkeypatch):
    import threading

    from click.testing import CliRunner

    from backbeat.cli import plan as plan_module
    from backbeat.config import Settings

    var = tmp_path / "var"
    engine, campaign_id = _book_with_history(var, T0)
    real = plan_module.make_plan
    made: list[int | None] = []

    def planning(settings, **options):  # type: ignore[no-untyped-def]
        result = real(settings, **options)
        made.append(result.catalog_version)
        if len(made) == 1:  # the book changes after the plan read it, before it is written
            with Session(engine) as session, session.begin():
                _add_line_item(session, session.get(Campaign, campaign_id), "GB", "GB")
            return result
        raise _Stop

    monkeypatch.setattr(plan_module, "make_plan", planning)
    at = datetime.fromtimestamp(T0, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    outcome: list[object] = []
    runner = threading.Thread(
        target=lambda: outcome.append(
            CliRunner().invoke(
                plan_module.plan,
                ["--algorithm", "share", "--at", at, "--every", "3600"],
                obj=Settings(var_dir=var),
            )
        ),
        daemon=True,
    )
    runner.start()
    runner.join(timeout=30)
    engine.dispose()
    # Missing the change would leave the planner asleep for the hour.
    assert not runner.is_alive(), "the change made during planning was never planned"
    assert made == [1, 2] and isinstance(outcome[0].exception, _Stop)  # type: ignore[attr-defined]
