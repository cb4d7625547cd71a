"""Alembic environment: the URL comes from the caller (``backbeat migrate``) or Settings."""

from __future__ import annotations

from alembic import context

from backbeat.catalog import models as _catalog_models  # noqa: F401  (register tables)
from backbeat.config import get_settings
from backbeat.db import Base, make_engine
from backbeat.reporting import models as _reporting_models  # noqa: F401

config = context.config
url = config.get_main_option("sqlalchemy.url") or get_settings().resolved_database_url


def run_migrations() -> None:
    if context.is_offline_mode():
        context.configure(url=url, target_metadata=Base.metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(url)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run_migrations()
