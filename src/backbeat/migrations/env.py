"""Alembic environment: the URL comes from the caller (``backbeat migrate``) or Settings.

Every migration runs in its own transaction together with its version stamp, on SQLite
as on PostgreSQL, so a migration killed half-way leaves the schema at the previous
revision and a rerun simply applies it again.
"""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from backbeat.catalog import models as _catalog_models  # noqa: F401  (register tables)
from backbeat.config import get_settings
from backbeat.db import Base, make_engine
from backbeat.measurement import models as _measurement_models  # noqa: F401
from backbeat.reporting import models as _reporting_models  # noqa: F401

config = context.config
url = config.get_main_option("sqlalchemy.url") or get_settings().resolved_database_url


def _transactional_sqlite_ddl(engine: Engine) -> None:
    """Make pysqlite put DDL inside the transaction (it commits before DDL by default).

    SQLAlchemy's documented recipe: take transaction control away from the driver and emit
    BEGIN ourselves. Foreign keys are switched off before the transaction (the pragma is a
    no-op inside one) because batch mode recreates tables that rows refer to; they are
    checked once at the end.
    """

    @event.listens_for(engine, "connect")
    def _driver_autocommit(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        dbapi_connection.execute("PRAGMA foreign_keys=OFF")

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def run_migrations() -> None:
    if context.is_offline_mode():
        context.configure(url=url, target_metadata=Base.metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(url)
    sqlite = engine.dialect.name == "sqlite"
    if sqlite:
        _transactional_sqlite_ddl(engine)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            render_as_batch=sqlite,
            transaction_per_migration=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        if sqlite:
            broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
            connection.rollback()
            if broken:
                raise RuntimeError(f"migration left dangling foreign keys: {broken[:5]}")
    engine.dispose()


run_migrations()
