"""``backbeat promotion generate|train|score|report``: the promotion data and model lifecycle.

With no options every command works under the configured var directory:
``var/promotion/data`` (listening data), ``var/promotion/features`` (training rows),
``var/models/promotion`` (the model registry).
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from backbeat.config import Settings


PATH = click.Path(path_type=Path)


def _session_factory(settings: Settings) -> Any:
    from backbeat.db import ensure_migrated, make_engine, make_session_factory
    from backbeat.db import migrate as run_migrations

    if settings.is_embedded_database:
        run_migrations(settings.resolved_database_url)
    engine = make_engine(settings.resolved_database_url)
    ensure_migrated(engine)
    return make_session_factory(engine)


def _write_metrics(settings: Settings) -> None:
    """The run's Prometheus metrics for a node-exporter textfile collector."""
    from prometheus_client import REGISTRY, write_to_textfile

    from backbeat.promotion.dataset import promotion_dir

    target = promotion_dir(settings.var_dir) / "metrics.prom"
    target.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(target), REGISTRY)


@click.group()
def promotion() -> None:
    """Promotion scores: synthetic data, features, model training, batch scoring, delivery."""


@promotion.command()
@click.option("--output", type=PATH, help="Data directory [default: var/promotion/data].")
@click.option("--listeners", type=click.IntRange(50, 2_000_000), default=5_000, show_default=True)
@click.option("--artists", type=click.IntRange(20, 200_000), default=400, show_default=True)
@click.option("--days", type=click.IntRange(35, 730), default=56, show_default=True)
@click.option("--promoted", type=click.IntRange(1, 10_000), default=24, show_default=True)
@click.option("--seed", type=int, default=7, show_default=True)
@click.option(
    "--end", type=click.DateTime(["%Y-%m-%d"]), help="Last day (exclusive) [default: today, UTC]."
)
@click.pass_obj
def generate(settings: Settings, output: Path | None, listeners: int, artists: int, days: int,
             promoted: int, seed: int, end: datetime | None) -> None:  # fmt: skip
    """Write seeded synthetic listening data, promotion exposures and responses."""
    from backbeat.promotion.dataset import data_dir
    from backbeat.promotion.synthetic import SyntheticConfig
    from backbeat.promotion.synthetic import generate as make

    config = SyntheticConfig(listeners=listeners, artists=artists, days=days, seed=seed,
                             promoted_releases=promoted)  # fmt: skip
    if end is not None:
        config = SyntheticConfig(**{**config.__dict__, "end": end.replace(tzinfo=UTC)})
    target = output or data_dir(settings.var_dir)
    started = time.perf_counter()
    counts = make(config).write(target)
    click.echo(f"wrote {target} in {time.perf_counter() - started:.1f} s: " + json.dumps(counts))


@promotion.command()
@click.option("--data", type=PATH, help="Data directory [default: var/promotion/data].")
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--model", "kind", type=click.Choice(["lightgbm", "logistic"]), default="lightgbm",
              show_default=True)  # fmt: skip
@click.option("--no-feedback", is_flag=True, help="Ignore exposures reported to the event log.")
@click.option("--beam-option", "beam_options", multiple=True,
              help="Passed to Beam, e.g. --beam-option=--runner=DirectRunner (repeatable).")  # fmt: skip
@click.pass_obj
def train(settings: Settings, data: Path | None, seed: int, kind: str, no_feedback: bool,
          beam_options: tuple[str, ...]) -> None:  # fmt: skip
    """Build features (Beam), check data quality, train, register; prints the model hash."""
    from backbeat.promotion.dataset import data_dir, features_dir, models_dir
    from backbeat.promotion.feedback import export_feedback
    from backbeat.promotion.pipeline import FeatureJob, run_features
    from backbeat.promotion.training import TrainJob
    from backbeat.promotion.training import train as fit

    source = data or data_dir(settings.var_dir)
    if not (source / "manifest.json").exists():
        from backbeat.errors import InvalidInput

        raise InvalidInput(f"no promotion data in {source}: run `backbeat promotion generate`",
                           reason="no-promotion-data")  # fmt: skip
    if not no_feedback:
        exported = export_feedback(settings.resolved_event_log_dir, source)
        if exported.exposures or exported.skipped:
            click.echo(f"feedback: {exported.exposures} exposures ({exported.conversions} converted) "
                       f"from the event log, {exported.skipped} left out")  # fmt: skip
    job = FeatureJob(source, features_dir(settings.var_dir), beam_args=list(beam_options))
    run = run_features(job)
    click.echo(f"features: {run.rows} rows, {run.labels} conversions, {run.seconds:.1f} s")
    result = fit(TrainJob(run.path, models_dir(settings.var_dir), seed=seed, model_kind=kind))
    _write_metrics(settings)
    metrics = result.version.metrics
    click.echo(
        f"model {result.version.version} sha256 {result.version.manifest['model_sha256']}\n"
        f"holdout AUC {metrics['holdout']['auc']:.4f} (popularity baseline "
        f"{metrics['popularity_baseline']['auc']:.4f}, logistic {metrics['logistic_baseline']['auc']:.4f}), "
        f"log loss {metrics['holdout']['log_loss']:.4f}, ECE {metrics['holdout']['ece']:.4f}\n"
        + (
            f"champion: {result.champion}"
            if result.promoted
            else f"kept champion {result.champion} (AUC {result.champion_auc_on_holdout}); "
            f"{result.version.version} is the challenger"
        )  # fmt: skip
    )


@promotion.command()
@click.option("--workers", type=click.IntRange(1, 64), default=2, show_default=True)
@click.pass_obj
def score(settings: Settings, workers: int) -> None:
    """Score every listener × live promoted item with the champion into the score store."""
    from sqlalchemy import select

    from backbeat.catalog.vocabulary import Status
    from backbeat.errors import InvalidInput
    from backbeat.promotion.batch import Item, score_all
    from backbeat.promotion.dataset import data_dir, models_dir
    from backbeat.promotion.models import PromotionCampaign
    from backbeat.promotion.profiles import load_profiles
    from backbeat.promotion.registry import CHAMPION, Registry
    from backbeat.promotion.scoring import _code
    from backbeat.promotion.store import make_store
    from backbeat.promotion.training import load_model

    champion = Registry(models_dir(settings.var_dir)).resolve(CHAMPION)
    if champion is None:
        raise InvalidInput("no champion model: run `backbeat promotion train`", reason="no-model")
    sessions = _session_factory(settings)
    with sessions() as session:
        rows = session.execute(
            select(PromotionCampaign.item_id, PromotionCampaign.artist_id)
            .where(PromotionCampaign.status == Status.ACTIVE)
            .order_by(PromotionCampaign.id)
        ).all()
    items = list({item: Item(item, _code("artist", artist)) for item, artist in rows}.values())
    profiles = load_profiles(data_dir(settings.var_dir))
    run = score_all(profiles, items, load_model(champion), int(time.time()), workers=workers)
    store = make_store(sessions, settings.redis_url)
    written = store.write(champion.version, run.rows)
    click.echo(f"scored {run.listeners} listeners × {run.items} items = {written} scores with "
               f"{champion.version} in {run.seconds:.1f} s ({run.rate:,.0f}/s, {workers} workers)")  # fmt: skip


@promotion.command()
@click.pass_obj
def report(settings: Settings) -> None:
    """Count promotion exposures, clicks and conversions from the event log (idempotent)."""
    from backbeat.db import session_scope
    from backbeat.promotion.reporting import run_promotion_report

    with session_scope(_session_factory(settings)) as session:
        result = run_promotion_report(
            session=session, event_log_dir=settings.resolved_event_log_dir
        )
    click.echo(json.dumps({field: getattr(result, field) for field in result.__slots__}))
