"""Faults on real processes (issue 9): ``backbeat serve`` killed with SIGKILL under tracking
load loses no acknowledged event and counts none twice; Redis stopped and restarted under
load: serving goes on, recovers, and no budget is overspent."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from backbeat.api.app import create_app
from backbeat.db import make_engine
from backbeat.eventlog import EventLogReader
from backbeat.events import Event
from backbeat.reporting.models import DeliveryHourly
from support.app import make_settings

sys.path.insert(0, str(Path(__file__).parent))
from factories import ADMIN, ADMIN_KEY, book_servable  # noqa: E402

ENV_KEYS = ("PATH", "HOME", "LANG", "SYSTEMROOT")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _serve(var: Path, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "backbeat.cli.main", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _wait_ready(base: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, "server exited"
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    pytest.fail("server did not start")


def _impressions(events_dir: Path) -> list[str]:
    return [
        event.decision_id
        for event in (Event.from_bytes(r.payload) for r in EventLogReader(events_dir).records())
        if event.type == "impression"
    ]


@pytest.mark.slow
def test_sigkill_under_tracking_load_loses_nothing_acknowledged_and_counts_once(
    tmp_path: Path,
) -> None:
    var = tmp_path / "var"
    env = {key: os.environ[key] for key in ENV_KEYS if key in os.environ}
    env.update(
        BACKBEAT_VAR_DIR=str(var),
        BACKBEAT_ADMIN_KEY=ADMIN_KEY,
        BACKBEAT_PUBLIC_BASE_URL="http://127.0.0.1",
        BACKBEAT_LOG_LEVEL="ERROR",
        BACKBEAT_DECISION_LOG_SAMPLE="0",
        PYTHONPATH=os.pathsep.join(sys.path),
    )
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    server = _serve(var, port, env)
    try:
        _wait_ready(base, server)
        with httpx.Client(base_url=base, timeout=10) as http:
            booked = book_servable_http(http)
            time.sleep(1.5)  # the server's poll picks up the new book
            urls = []
            for n in range(400):
                answer = http.post(
                    "/v1/decisions", json={"slot_id": booked["slot"], "listener": f"k{n}"}
                ).json()
                if answer["filled"]:
                    urls.append(answer["tracking"]["impression"].replace("http://127.0.0.1", base))
        assert len(urls) >= 300
        acknowledged: set[str] = set()
        lock = threading.Lock()

        def fire(share: list[str]) -> None:
            with httpx.Client(timeout=5) as shooter:
                for url in share:
                    for _ in range(2):  # every pixel twice: a replay must count once
                        try:
                            status = shooter.get(url).status_code
                        except httpx.HTTPError:
                            return  # the server is gone
                        if status == 204:
                            with lock:
                                acknowledged.add(url.split("d=", 1)[1].split("&", 1)[0])

        threads = [threading.Thread(target=fire, args=(urls[i::4],)) for i in range(4)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 20
        while len(acknowledged) < 100 and time.monotonic() < deadline:
            time.sleep(0.01)
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(10)
        for thread in threads:
            thread.join(20)
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(10)
    assert server.returncode == -signal.SIGKILL
    assert len(acknowledged) >= 100
    logged = _impressions(var / "events")
    assert acknowledged <= set(logged)  # nothing acknowledged was lost
    counted = subprocess.run(
        [sys.executable, "-m", "backbeat.cli.main", "report"],
        env=env,
        capture_output=True,
        check=False,
        timeout=120,
    )
    assert counted.returncode == 0, counted.stderr.decode()[-2000:]
    engine = make_engine(f"sqlite:///{(var / 'backbeat.db').resolve()}")
    with engine.connect() as connection:
        impressions = connection.execute(select(func.sum(DeliveryHourly.impressions))).scalar()
    engine.dispose()
    assert impressions == len(set(logged))  # each decision once, replays and all


def book_servable_http(http: httpx.Client) -> dict[str, int]:
    advertiser = http.post("/v1/advertisers", json={"name": "Killed"}, headers=ADMIN).json()
    campaign = http.post(
        "/v1/campaigns",
        json={
            "advertiser_id": advertiser["id"],
            "name": "Under load",
            "start_at": "2020-01-01T00:00:00Z",
            "end_at": "2099-01-01T00:00:00Z",
            "total_budget": "100000",
        },
        headers=ADMIN,
    ).json()
    item = http.post(
        "/v1/line-items",
        json={"campaign_id": campaign["id"], "name": "Item", "tier": "house", "cpm": "0"},
        headers=ADMIN,
    ).json()
    http.post(
        "/v1/creatives",
        json={
            "line_item_id": item["id"],
            "name": "Spot",
            "media_url": "https://cdn.example.com/a.mp3",
            "duration_ms": 30000,
        },
        headers=ADMIN,
    ).raise_for_status()
    slot = http.post(
        "/v1/slots",
        json={"name": "Slot", "surface": "podcast", "position": "pre_roll"},
        headers=ADMIN,
    ).json()
    return {"slot": slot["id"], "line_item": item["id"]}


@pytest.mark.slow
def test_redis_stopped_and_restarted_under_load(
    redis_server: Any, redis_url: str, tmp_path: Path
) -> None:
    database = f"sqlite:///{tmp_path / 'r.db'}"
    settings = make_settings(database, tmp_path / "var", redis_url=redis_url, log_level="CRITICAL")
    budget, cpm = Decimal("0.50"), Decimal("10")
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        booked = book_servable(
            client,
            line_item={"tier": "guaranteed", "cpm": str(cpm), "budget": str(budget)},
            slot={"reserve_cpm": "0"},
        )
        ledger = client.app.state.services.ad_server.ledger
        statuses: dict[int, int] = {}
        paid = 0

        def burst(n: int, tag: str) -> None:
            nonlocal paid
            for i in range(n):
                answer = client.post(
                    "/v1/decisions", json={"slot_id": booked["slot"]["id"], "listener": f"{tag}{i}"}
                )
                statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1
                if answer.status_code == 200 and answer.json()["filled"]:
                    url = answer.json()["tracking"]["impression"].removeprefix("http://testserver")
                    if client.get(url).status_code == 204:
                        paid += 1

        burst(20, "before")
        redis_server.stop()
        try:
            burst(40, "during")  # serving goes on from held leases; never a 5xx
        finally:
            redis_server.start()
        deadline = time.monotonic() + 15
        while not ledger.up:
            assert time.monotonic() < deadline, "the ledger did not reconnect"
            burst(1, "probe")
            time.sleep(0.2)
        burst(60, "after")
    assert not any(code >= 500 for code in statuses), statuses
    # the budget buys budget / (cpm / 1000) impressions; leases never let replicas pass it
    assert paid * cpm / 1000 <= budget, (paid, statuses)
    assert paid >= 1
