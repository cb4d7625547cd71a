"""``backbeat``: the root command group; settings are built once and passed on ``ctx.obj``."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

import click

from backbeat import __version__
from backbeat.errors import BackbeatError

if TYPE_CHECKING:
    from backbeat.config import Settings


class BackbeatGroup(click.Group):
    """Turns any ``BackbeatError`` into a one-line message and the error's exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BackbeatError as error:
            exception = click.ClickException(f"{error.detail} [{error.reason}]")
            exception.exit_code = error.exit_code
            raise exception from error


@click.group(cls=BackbeatGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="backbeat")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Backbeat: book, serve, measure and report audio ads."""
    from backbeat.config import get_settings  # pydantic-settings: not needed for --help

    ctx.obj = get_settings()


@cli.command()
@click.option(
    "--revision", default="head", show_default=True, help="Alembic revision to upgrade to."
)
@click.pass_obj
def migrate(settings: Settings, revision: str) -> None:
    """Bring the configured database to the newest schema."""
    from backbeat.db import migrate as run_migrations

    run_migrations(settings.resolved_database_url, revision)
    click.echo(f"database at {revision}")


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64))
@click.option(
    "--plan-every",
    type=click.FloatRange(min=10.0),
    help="Also run the allocation planner beside the server (`backbeat plan --every SECONDS`): "
    "guaranteed line items are re-planned on that schedule and as soon as the book changes.",
)
@click.pass_obj
def serve(settings: Settings, host: str, port: int, workers: int, plan_every: float | None) -> None:
    """Start the API (management, VAST, tracking, reports) on the configured database and event log."""
    import subprocess

    # Workers are processes, one per core: BLAS thread pools in each (numpy's forecast
    # maths) would only spin against the other workers' event loops. Set before any
    # worker imports numpy; an operator's own setting wins.
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(name, "1")
    if workers == 1 and os.environ["OPENBLAS_NUM_THREADS"] == "1":
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)  # one worker runs in this process, where numpy is loaded already

    from backbeat.api.app import load_signing_key
    from backbeat.db import migrate as run_migrations

    if settings.is_embedded_database:
        run_migrations(settings.resolved_database_url)
    load_signing_key(settings)  # made once here so every worker shares it
    if workers > 1:
        metrics_dir = settings.var_dir.resolve() / "prometheus"
        metrics_dir.mkdir(parents=True, exist_ok=True)
        for stale in metrics_dir.glob("*.db"):
            stale.unlink()
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    planner = None
    if plan_every is not None:  # its own process: planning never competes with a worker's loop
        env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
        planner = subprocess.Popen(
            [sys.executable, "-m", "backbeat.cli.main", "plan", "--every", str(plan_every)],
            env=env,
        )
    try:
        _run_server(settings, host, port, workers)
    finally:
        if planner is not None:
            planner.terminate()
            try:
                planner.wait(timeout=10)
            except subprocess.TimeoutExpired:
                planner.kill()


def _run_server(settings: Settings, host: str, port: int, workers: int) -> None:
    import uvicorn

    from backbeat.api.supervisor import APP, PortInUse, Supervisor

    options = {
        "log_level": "warning",
        "access_log": False,
        "proxy_headers": False,
        "timeout_keep_alive": settings.keep_alive_seconds,  # idle connections are not held
        "h11_max_incomplete_event_size": 16 * 1024,  # request line and headers at most 16 KiB
    }
    if workers == 1:
        uvicorn.run(APP, host=host, port=port, **options)
        return
    # Several workers: a listening socket each (SO_REUSEPORT), so the kernel spreads kept-alive
    # connections over them; uvicorn's shared socket lets one idle worker take them all.
    from backbeat.observability import configure_logging

    configure_logging(settings.log_level, json=settings.log_json)  # the supervisor's own lines
    try:
        supervisor = Supervisor(host, port, workers, options)
    except PortInUse as error:
        raise click.ClickException(str(error)) from None
    status = supervisor.run()
    if status:
        raise SystemExit(status)


@cli.command()
@click.option(
    "--full", is_flag=True, help="Forget every count and recount the whole log (one transaction)."
)
@click.option(
    "--accept-damage",
    is_flag=True,
    help="Count past damage found in the middle of a segment, recording it (see README).",
)
@click.option(
    "--batch-records",
    default=100_000,
    show_default=True,
    type=click.IntRange(1),
    help="Records per committed batch.",
)
@click.option(
    "--from-kafka",
    is_flag=True,
    help="Count from BACKBEAT_KAFKA_TOPIC instead of the local event log, until caught up.",
)
@click.pass_obj
def report(
    settings: Settings, full: bool, accept_damage: bool, batch_records: int, from_kafka: bool
) -> None:
    """Count the event log into hourly delivery rows (exactly once) and recount promotion delivery."""
    from backbeat.cli.measure import run_report

    run_report(
        settings,
        full=full,
        accept_damage=accept_damage,
        batch_records=batch_records,
        from_kafka=from_kafka,
    )


def _register() -> None:
    from backbeat.cli import demo, measure
    from backbeat.cli import plan as plan_cli

    for command in (demo.demo, plan_cli.plan, *measure.COMMANDS):
        cli.add_command(command)
    from backbeat.cli.promotion import promotion

    cli.add_command(promotion)
    from backbeat.cli.forecast import forecast

    cli.add_command(forecast)


_register()


def main() -> None:
    cli(prog_name="backbeat")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
