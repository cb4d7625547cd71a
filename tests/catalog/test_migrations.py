"""Migrations go up and down on SQLite and PostgreSQL, match the models, and guard startup."""

from __future__ import annotations

import importlib
import pkgutil
from decimal import Decimal
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from fastapi.testclient import TestClient
from sqlalchemy import inspect, text

import backbeat
from backbeat.api.app import create_app
from backbeat.config import Settings
from backbeat.db import (
    MIGRATIONS_DIR,
    Base,
    current_revision,
    downgrade,
    head_revision,
    make_engine,
    migrate,
)
from backbeat.errors import DatabaseNotMigrated

ISSUE_3_TABLES = {
    "advertisers",
    "api_keys",
    "campaigns",
    "line_items",
    "creatives",
    "ad_slots",
    "catalog_state",
    "delivery_hourly",
    "rejected_hourly",
}


def revisions_base_to_head() -> list[str]:
    script = ScriptDirectory(str(MIGRATIONS_DIR))
    return [revision.revision for revision in reversed(list(script.walk_revisions()))]


def tables(engine) -> set[str]:
    return set(inspect(engine).get_table_names()) - {"alembic_version"}


def _import_models() -> None:
    for module in pkgutil.walk_packages(backbeat.__path__, "backbeat."):
        if module.name.endswith(".models"):
            importlib.import_module(module.name)


def test_upgrade_step_by_step_then_downgrade_to_base_and_up_again(database_url):
    revisions = revisions_base_to_head()
    assert revisions[-1] == head_revision()
    engine = make_engine(database_url)
    try:
        assert current_revision(engine) is None and tables(engine) == set()
        seen: list[set[str]] = []
        for revision in revisions:
            migrate(database_url, revision)
            assert current_revision(engine) == revision
            seen.append(tables(engine))
        assert seen[-1] >= ISSUE_3_TABLES
        with engine.connect() as connection:
            assert connection.execute(text("SELECT id, version FROM catalog_state")).all() == [
                (1, 0)
            ]

        for revision, expected in zip(reversed(revisions[:-1]), reversed(seen[:-1]), strict=True):
            downgrade(database_url, "-1")
            assert current_revision(engine) == revision
            assert tables(engine) == expected
        downgrade(database_url, "base")
        assert current_revision(engine) is None and tables(engine) == set()

        migrate(database_url)
        assert current_revision(engine) == head_revision()
        assert tables(engine) == seen[-1]
        migrate(database_url)  # already at head: a no-op
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()


def test_the_migrated_schema_matches_the_models(database_url):
    _import_models()
    migrate(database_url)
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            differences = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()
    assert differences == []


def test_the_app_refuses_an_unmigrated_database_and_names_the_command(database_url, tmp_path: Path):
    settings = Settings(
        var_dir=tmp_path / "var",
        database_url=database_url,
        signing_key="test-signing-key-0123456789abcdef",
        log_json=False,
        log_level="WARNING",
    )
    behind = [None, *revisions_base_to_head()[:-1]]
    for revision in behind:
        if revision is not None:
            migrate(database_url, revision)
        with pytest.raises(DatabaseNotMigrated) as raised, TestClient(create_app(settings)):
            pass
        assert "backbeat migrate" in str(raised.value), revision
        assert raised.value.status == 503 and raised.value.context["head"] == head_revision()
    migrate(database_url)
    with TestClient(create_app(settings)) as client:
        assert client.get("/healthz").status_code == 200


def test_the_embedded_default_database_migrates_itself(tmp_path: Path):
    settings = Settings(
        var_dir=tmp_path / "var",
        signing_key="test-signing-key-0123456789abcdef",
        log_json=False,
        log_level="WARNING",
    )
    assert settings.is_embedded_database
    for _ in range(2):  # and starts again on its own, already migrated, database
        with TestClient(create_app(settings)) as client:
            assert client.get("/healthz").json()["status"] == "ok"
            assert client.get("/v1/slots").json()["count"] == 0
    assert (tmp_path / "var" / "backbeat.db").exists()


def test_booked_data_survives_the_decisioning_migration_both_ways(database_url):
    """0002 turns a line item's one cap into a list of caps, and back on downgrade."""
    migrate(database_url, "0001_catalog")
    engine = make_engine(database_url)
    stamp = "2026-01-01 00:00:00"
    try:
        with engine.begin() as connection:
            for statement in (
                "INSERT INTO advertisers (id, name, version, status, created_at, updated_at)"
                f" VALUES (1, 'Acme', 1, 'active', '{stamp}', '{stamp}')",
                "INSERT INTO campaigns (id, advertiser_id, name, start_at, end_at, total_budget,"
                " currency, version, status, created_at, updated_at) VALUES (1, 1, 'c',"
                f" '{stamp}', '2027-01-01 00:00:00', 5000000, 'USD', 1, 'active', '{stamp}', '{stamp}')",
                "INSERT INTO line_items (id, campaign_id, advertiser_id, name, tier, cpm, pacing,"
                " cap_count, cap_period, targeting, version, status, created_at, updated_at)"
                " VALUES (1, 1, 1, 'capped', 'guaranteed', 2500000, 'asap', 3, 'day',"
                f" '{{\"countries\": [\"US\"]}}', 1, 'active', '{stamp}', '{stamp}'),"
                " (2, 1, 1, 'uncapped', 'house', 0, 'even', NULL, NULL, '{}', 1, 'active',"
                f" '{stamp}', '{stamp}')",
                "INSERT INTO creatives (id, line_item_id, advertiser_id, name, media_url, mime_type,"
                " duration_ms, categories, version, status, created_at, updated_at) VALUES (1, 1, 1,"
                f" 'spot', 'https://a.example/s.mp3', 'audio/mpeg', 30000, '[]', 1, 'active', '{stamp}', '{stamp}')",
            ):
                connection.execute(text(statement))
        migrate(database_url, "0002_decisioning")
        from sqlalchemy.orm import Session

        from backbeat.catalog.models import LineItem

        with Session(engine) as session:
            capped, uncapped = session.get(LineItem, 1), session.get(LineItem, 2)
            assert capped.frequency_caps == [{"count": 3, "period": "day", "length": 1}]
            assert capped.frequency_cap == {"count": 3, "period": "day", "length": 1}
            assert (capped.targeting, capped.cpm, capped.daily_budget) == (
                {"countries": ["US"]},
                Decimal("2.5"),
                None,
            )
            assert uncapped.frequency_caps == []
        downgrade(database_url, "0001_catalog")
        with engine.connect() as connection:
            rows = connection.execute(
                text("SELECT id, cap_count, cap_period FROM line_items ORDER BY id")
            ).all()
        assert [tuple(row) for row in rows] == [(1, 3, "day"), (2, None, None)]
    finally:
        engine.dispose()


def test_a_failed_sqlite_migration_leaves_the_previous_revision_whole(tmp_path: Path):
    """pysqlite commits before DDL by default: a migration that dies half-way used to leave
    its first tables behind, and every rerun then failed on 'table already exists'."""
    url = f"sqlite:///{tmp_path / 'half.db'}"
    migrate(url, "0002_decisioning")
    engine = make_engine(url)
    with engine.begin() as connection:
        # 0003 creates download_daily, then ad_delivery_daily: make the second step fail.
        connection.execute(text("CREATE TABLE ad_delivery_daily (x INTEGER)"))
    with pytest.raises(Exception, match="already exists"):
        migrate(url, "0003_download_reports")
    assert current_revision(engine) == "0002_decisioning"
    assert "download_daily" not in tables(engine)
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE ad_delivery_daily"))
    migrate(url)
    assert current_revision(engine) == head_revision()
    assert {"download_daily", "ad_delivery_daily"} <= tables(engine)
    engine.dispose()
