"""Dashboard state: revoked sessions, listener frequency, download runs by reason

Revision ID: 0008_dashboard_state
Revises: 0007_incremental_counting
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_dashboard_state"
down_revision = "0007_incremental_counting"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ui_session_revocations",
        sa.Column("sid", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("sid", name=op.f("pk_ui_session_revocations")),
    )
    op.create_index(
        op.f("ix_ui_session_revocations_expires_at"), "ui_session_revocations", ["expires_at"]
    )
    op.create_table(
        "listener_frequency",
        sa.Column("line_item_id", sa.Integer(), nullable=False),
        sa.Column("listener_hash", sa.BigInteger(), nullable=False),
        sa.Column("impressions", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "line_item_id", "listener_hash", name=op.f("pk_listener_frequency")
        ),
    )
    op.create_table(
        "download_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("first_day", sa.Date(), nullable=True),
        sa.Column("last_day", sa.Date(), nullable=True),
        sa.Column("lines", sa.BigInteger(), nullable=False),
        sa.Column("counted", sa.BigInteger(), nullable=False),
        sa.Column("excluded", sa.JSON(), nullable=False),
        sa.Column("rejected", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_download_runs")),
    )


def downgrade() -> None:
    op.drop_table("download_runs")
    op.drop_table("listener_frequency")
    op.drop_index(op.f("ix_ui_session_revocations_expires_at"), table_name="ui_session_revocations")
    op.drop_table("ui_session_revocations")
