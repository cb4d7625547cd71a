"""download and DAI ad delivery reports

Revision ID: 0003_download_reports
Revises: 0002_decisioning
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_download_reports"
down_revision = "0002_decisioning"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "download_daily",
        sa.Column("date", sa.Date(), nullable=False),
        sa.Column("episode_id", sa.String(length=200), nullable=False),
        sa.Column("app", sa.String(length=200), nullable=False),
        sa.Column("show_id", sa.String(length=200), nullable=False),
        sa.Column("downloads", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("date", "episode_id", "app", name=op.f("pk_download_daily")),
    )
    op.create_index(op.f("ix_download_daily_show_id"), "download_daily", ["show_id"])
    op.create_table(
        "ad_delivery_daily",
        sa.Column("date", sa.Date(), nullable=False),
        sa.Column("episode_id", sa.String(length=200), nullable=False),
        sa.Column("ad_id", sa.String(length=200), nullable=False),
        sa.Column("delivered", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("date", "episode_id", "ad_id", name=op.f("pk_ad_delivery_daily")),
    )


def downgrade() -> None:
    op.drop_table("ad_delivery_daily")
    op.drop_index(op.f("ix_download_daily_show_id"), table_name="download_daily")
    op.drop_table("download_daily")
