"""Decisioning at scale: several frequency caps per line item and campaign, daily budgets,
auction mode and reserve prices by country per slot.

Revision ID: 0002_decisioning
Revises: 0001_catalog
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0002_decisioning"
down_revision = "0001_catalog"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("line_items") as batch:
        batch.add_column(sa.Column("daily_budget", sa.BigInteger(), nullable=True))
        batch.add_column(
            sa.Column("frequency_caps", sa.JSON(), nullable=False, server_default="[]")
        )
    with op.batch_alter_table("campaigns") as batch:
        batch.add_column(
            sa.Column("frequency_caps", sa.JSON(), nullable=False, server_default="[]")
        )
    with op.batch_alter_table("ad_slots") as batch:
        batch.add_column(
            sa.Column("reserve_by_country", sa.JSON(), nullable=False, server_default="{}")
        )
        batch.add_column(
            sa.Column("auction", sa.String(16), nullable=False, server_default="second_price")
        )
    connection = op.get_bind()
    rows = connection.execute(
        sa.text("SELECT id, cap_count, cap_period FROM line_items WHERE cap_count IS NOT NULL")
    ).all()
    for row in rows:
        caps = json.dumps([{"count": row.cap_count, "period": row.cap_period, "length": 1}])
        connection.execute(
            sa.text("UPDATE line_items SET frequency_caps = :caps WHERE id = :id"),
            {"caps": caps, "id": row.id},
        )
    with op.batch_alter_table("line_items") as batch:
        batch.drop_column("cap_count")
        batch.drop_column("cap_period")


def downgrade() -> None:
    with op.batch_alter_table("line_items") as batch:
        batch.add_column(sa.Column("cap_count", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("cap_period", sa.String(8), nullable=True))
    connection = op.get_bind()
    for row in connection.execute(sa.text("SELECT id, frequency_caps FROM line_items")).all():
        caps = (
            row.frequency_caps
            if isinstance(row.frequency_caps, list)
            else json.loads(row.frequency_caps or "[]")
        )
        if caps:
            connection.execute(
                sa.text(
                    "UPDATE line_items SET cap_count = :count, cap_period = :period WHERE id = :id"
                ),
                {"count": caps[0]["count"], "period": caps[0]["period"], "id": row.id},
            )
    with op.batch_alter_table("line_items") as batch:
        batch.drop_column("frequency_caps")
        batch.drop_column("daily_budget")
    with op.batch_alter_table("campaigns") as batch:
        batch.drop_column("frequency_caps")
    with op.batch_alter_table("ad_slots") as batch:
        batch.drop_column("auction")
        batch.drop_column("reserve_by_country")
