"""Run the demo: book, serve a simulated day over real HTTP, count, and report."""

from __future__ import annotations

import multiprocessing
import random
import secrets
import shutil
import socket
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import uvicorn
from lxml import etree
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from backbeat.api.app import create_app
from backbeat.config import Settings
from backbeat.db import migrate
from backbeat.demo.book import book
from backbeat.demo.history import add_history_and_forecast
from backbeat.demo.promotion import run_promotion_step
from backbeat.demo.traffic import Opportunity, day_of_opportunities, make_listeners, player_events
from backbeat.errors import InvalidInput
from backbeat.serving.vast import VAST_NS

NS = {"v": VAST_NS}
WINDOW_SECONDS = 300  # the simulated clock advances in 5-minute steps


class SimClock:
    """The server's clock during the demo: a simulated day replayed in about a minute.

    Backed by shared memory so the server, in its own process (its own core), reads the
    time the traffic generator sets.
    """

    def __init__(self, start: float) -> None:
        self._value = multiprocessing.get_context("fork").RawValue("d", start)

    @property
    def now(self) -> float:
        return float(self._value.value)

    @now.setter
    def now(self, value: float) -> None:
        self._value.value = value

    def __call__(self) -> float:
        return float(self._value.value)


@dataclass
class Tally:
    requests: int = 0
    filled: int = 0
    pixels: int = 0
    rejected: int = 0
    errors: int = 0
    by_slot: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def reset_embedded_state(settings: Settings) -> None:
    """A demo run starts from an empty book so it can be run again and again."""
    if not settings.is_embedded_database:
        raise InvalidInput(
            "the demo runs on the embedded defaults: unset BACKBEAT_DATABASE_URL",
            reason="demo-needs-embedded",
        )
    var = settings.var_dir
    for name in ("backbeat.db", "backbeat.db-wal", "backbeat.db-shm"):
        (var / name).unlink(missing_ok=True)
    shutil.rmtree(settings.resolved_event_log_dir, ignore_errors=True)


def admin_key_for(settings: Settings) -> str:
    if settings.admin_key:
        return settings.admin_key
    path = settings.var_dir / "admin.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(24))
        path.chmod(0o600)
    return path.read_text().strip()


# The client lets idle connections go well before the server does (75 s by default): a
# connection reused just as the server closes it is reset (seen at 5 s against 5 s).
CLIENT_KEEPALIVE_SECONDS = 5.0
RETRIES = 3


def _serve(settings: Settings, clock: SimClock, port: int) -> None:
    uvicorn.run(
        create_app(settings, clock=clock),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        timeout_keep_alive=settings.keep_alive_seconds,
    )


def get_with_retries(
    client: httpx.Client, url: str, *, retries: int = RETRIES, **kwargs: Any
) -> httpx.Response:
    """GET, retried on transport errors: ad requests and pixels are idempotent (a pixel is
    counted once per decision id), so a reset connection costs a retry, never the run."""
    for attempt in range(retries + 1):
        try:
            return client.get(url, **kwargs)
        except httpx.TransportError:
            if attempt == retries:
                raise
            time.sleep(0.05 * 2**attempt)
    raise AssertionError("unreachable")


class DemoServer:
    """The real ASGI app under uvicorn on a loopback port, in a child process."""

    def __init__(self, settings: Settings, clock: SimClock) -> None:
        self.base_url = settings.public_base_url
        port = int(self.base_url.rsplit(":", 1)[1])
        context = multiprocessing.get_context("fork")
        self.process = context.Process(target=_serve, args=(settings, clock, port), daemon=True)

    def __enter__(self) -> DemoServer:
        self.process.start()
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{self.base_url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or not self.process.is_alive():
                raise RuntimeError("demo server did not start")
            time.sleep(0.1)

    def wait_for_catalog(self, line_items: int, timeout: float = 30) -> None:
        """Writes poke the server's catalog watcher; wait until it serves the whole book."""
        deadline = time.monotonic() + timeout
        while httpx.get(f"{self.base_url}/healthz").json()["servable_line_items"] < line_items:
            if time.monotonic() > deadline:
                raise RuntimeError("demo server did not load the booked catalog")
            time.sleep(0.1)

    def __exit__(self, *_: object) -> None:
        self.process.terminate()
        self.process.join(timeout=15)


def _play(
    client: httpx.Client, opportunity: Opportunity, slot_id: int, seed: int, tally: Tally
) -> None:
    """What one player does: ask for an ad, then fire the pixels it reaches."""
    listener = opportunity.listener
    rng = random.Random(seed)
    params = {
        "slot": slot_id,
        "listener": listener.id,
        "country": listener.country,
        "device": listener.device,
        "platform": listener.platform,
        "genre": opportunity.genre,
        "segments": ",".join(listener.segments),
    }
    headers = {"User-Agent": listener.user_agent, "X-Device-IP": listener.ip}
    try:
        response = get_with_retries(client, "/vast", params=params, headers=headers)
    except httpx.TransportError:
        with tally.lock:
            tally.requests += 1
            tally.errors += 1
        return
    urls: dict[str, str] = {}
    if response.status_code == 200:
        root = etree.fromstring(response.content)
        impression = root.findtext("v:Ad/v:InLine/v:Impression", namespaces=NS)
        if impression:
            urls["impression"] = impression.strip()
            for tracking in root.iterfind(".//v:Tracking", NS):
                urls[tracking.get("event", "")] = (tracking.text or "").strip()
            click = root.findtext(".//v:ClickTracking", namespaces=NS)
            if click:
                urls["click"] = click.strip()
    fired = rejected = errors = 0
    if urls:
        for event in player_events(rng, "click" in urls):
            try:
                status = get_with_retries(client, urls[event], headers=headers).status_code
            except httpx.TransportError:
                status = 0
            fired += 1
            errors += status != 204
        if rng.random() < 0.002:  # a tampered pixel: must be refused, never counted
            try:
                status = get_with_retries(
                    client, urls["impression"].replace("&p=", "&p=9"), headers=headers
                ).status_code
            except httpx.TransportError:
                status = 0
            rejected += status == 403
    with tally.lock:
        tally.requests += 1
        tally.filled += bool(urls)
        tally.pixels += fired
        tally.rejected += rejected
        tally.errors += errors + (response.status_code != 200)
        tally.by_slot[opportunity.position] += 1


def _slot_for(slots: list[dict[str, Any]], opportunity: Opportunity) -> int:
    for slot in slots:
        if slot["surface"] == opportunity.surface and slot["position"] == opportunity.position:
            return int(slot["id"])
    raise LookupError(opportunity.position)


def run_demo(
    settings: Settings,
    *,
    opportunities: int = 4000,
    listeners: int = 1500,
    seed: int = 7,
    console: Console | None = None,
) -> dict[str, Any]:
    console = console or Console(width=None if Console().is_terminal else 150)
    started = time.monotonic()
    reset_embedded_state(settings)
    migrate(settings.resolved_database_url)
    admin_key = admin_key_for(settings)
    day_start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(
        days=1
    )
    clock = SimClock(day_start.timestamp() - 3600)
    port = _free_port()
    run_settings = settings.model_copy(
        update={
            "admin_key": admin_key,
            "public_base_url": f"http://127.0.0.1:{port}",
            "log_level": "WARNING",
        }
    )
    rng = random.Random(seed)
    audience = make_listeners(listeners, rng)
    tally = Tally()
    with (
        DemoServer(run_settings, clock) as server,
        httpx.Client(
            base_url=run_settings.public_base_url,
            headers={"Authorization": f"Bearer {admin_key}"},
            limits=httpx.Limits(
                max_connections=32,
                max_keepalive_connections=32,
                keepalive_expiry=CLIENT_KEEPALIVE_SECONDS,
            ),
            timeout=30,
        ) as client,
    ):
        console.print(
            f"[bold]Booking[/] the demo book through the API at {run_settings.public_base_url} …"
        )
        booked = book(client, flight_start=day_start)
        server.wait_for_catalog(len(booked["line_items"]))
        console.print(
            f"  {len(booked['slots'])} ad slots, {len(booked['campaigns'])} campaigns, "
            f"{len(booked['line_items'])} line items"
        )
        plays = list(day_of_opportunities(audience, opportunities, rng))
        progress = Progress(
            TextColumn("[bold]Simulating {task.fields[clock]}[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("fill {task.fields[fill]:.0%}"),
            TimeElapsedColumn(),
            console=console,
        )
        with progress, ThreadPoolExecutor(max_workers=24) as pool:
            task = progress.add_task("traffic", total=len(plays), clock="", fill=0.0)
            window: list[tuple[int, Opportunity]] = []
            current = 0
            for number, play in enumerate(plays):
                bucket = int(play.offset // WINDOW_SECONDS)
                if bucket != current and window:
                    _run_window(
                        pool,
                        client,
                        booked["slots"],
                        window,
                        day_start,
                        current,
                        clock,
                        seed,
                        tally,
                    )
                    progress.update(
                        task,
                        advance=len(window),
                        clock=(day_start + timedelta(seconds=current * WINDOW_SECONDS)).strftime(
                            "%Y-%m-%d %H:%M UTC"
                        ),
                        fill=tally.filled / max(tally.requests, 1),
                    )
                    window = []
                current = bucket
                window.append((number, play))
            if window:
                _run_window(
                    pool, client, booked["slots"], window, day_start, current, clock, seed, tally
                )
                progress.update(
                    task, advance=len(window), fill=tally.filled / max(tally.requests, 1)
                )
        run_promotion_step(client, settings, console, day_start, seed)
        console.print("[bold]Counting[/] the event log into hourly delivery rows …")
        run = client.post("/v1/reports/delivery/run").json()
        reports = {
            campaign["id"]: client.get(
                "/v1/reports/delivery",
                params={
                    "campaign_id": campaign["id"],
                    "from": day_start.date().isoformat(),
                    "to": (day_start + timedelta(days=1)).date().isoformat(),
                    "granularity": "day",
                },
            ).json()
            for campaign in booked["campaigns"]
        }
    _print_report(console, booked, reports, tally, run)
    add_history_and_forecast(
        console, settings, booked, replayed_day=day_start, daily_requests=opportunities,
        listeners=listeners, seed=seed,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    console.print(
        f"\nDone in {elapsed:.0f} s. The book and results are under [bold]{settings.var_dir}/[/]; "
        f"`backbeat serve` now serves this book (admin key in {settings.var_dir}/admin.key "
        "unless BACKBEAT_ADMIN_KEY is set)."
    )
    console.print(
        "Dashboard: run `backbeat serve`, open [bold]http://127.0.0.1:8000/ui/[/] and sign in "
        f"with the admin key (`cat {settings.var_dir}/admin.key`, or your BACKBEAT_ADMIN_KEY)."
    )
    return {"tally": tally, "run": run, "reports": reports, "booked": booked}


def _run_window(
    pool: ThreadPoolExecutor,
    client: httpx.Client,
    slots: list[dict[str, Any]],
    window: list[tuple[int, Opportunity]],
    day_start: datetime,
    bucket: int,
    clock: SimClock,
    seed: int,
    tally: Tally,
) -> None:
    clock.now = day_start.timestamp() + bucket * WINDOW_SECONDS
    futures = [
        pool.submit(_play, client, play, _slot_for(slots, play), seed * 1_000_003 + number, tally)
        for number, play in window
    ]
    for future in futures:
        future.result()


def _print_report(
    console: Console,
    booked: dict[str, Any],
    reports: dict[int, Any],
    tally: Tally,
    run: dict[str, Any],
) -> None:
    rows = {row["line_item_id"]: row for report in reports.values() for row in report["rows"]}
    table = Table(title="Delivery report: the simulated day, per line item", show_lines=False)
    for column, justify in [
        ("Line item", "left"),
        ("Tier", "left"),
        ("Impressions", "right"),
        ("Completion", "right"),
        ("Clicks", "right"),
        ("CTR", "right"),
        ("Spend", "right"),
        ("Budget", "right"),
        ("Used", "right"),
    ]:
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for item in booked["line_items"]:
        row = rows.get(item["id"], {})
        impressions = row.get("impressions", 0)
        spend = Decimal(row.get("spend", "0"))
        budget = _budget_of(item)
        table.add_row(
            f"{item['advertiser_name']} · {item['name']}",
            item["tier"],
            f"{impressions:,}",
            f"{row['completion_rate']:.1%}" if row.get("completion_rate") is not None else "–",
            f"{row.get('clicks', 0):,}",
            f"{row['click_through_rate']:.2%}"
            if row.get("click_through_rate") is not None
            else "–",
            f"${spend:,.2f}",
            f"${budget:,.2f}" if budget else "–",
            f"{spend / budget:.1%}" if budget else "–",
        )
    console.print(table)
    console.print(
        f"Ad requests {tally.requests:,} · filled {tally.filled:,} ({tally.filled / max(tally.requests, 1):.1%}) · "
        f"pixels fired {tally.pixels:,} · events read {run['events_read']:,} · duplicates ignored "
        f"{run['duplicates']:,} · forged pixels rejected {run['rejected']:,} · HTTP errors {tally.errors}"
    )


def _budget_of(item: dict[str, Any]) -> Decimal | None:
    if item.get("budget") is not None:
        return Decimal(item["budget"])
    if item.get("goal_impressions"):
        return Decimal(item["goal_impressions"]) * Decimal(item["cpm"]) / 1000
    return None
