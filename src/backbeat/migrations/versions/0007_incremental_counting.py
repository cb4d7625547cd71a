"""Incremental delivery counting: consumer positions, de-duplication state, set-aside records, damage

Revision ID: 0007_incremental_counting
Revises: 0006_api_key_roles
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_incremental_counting"
down_revision = "0006_api_key_roles"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "counting_state",
        sa.Column("consumer", sa.String(length=64), nullable=False),
        sa.Column("positions", sa.Text(), nullable=False),
        sa.Column("events_read", sa.BigInteger(), nullable=False),
        sa.Column("duplicates", sa.BigInteger(), nullable=False),
        sa.Column("rejected", sa.BigInteger(), nullable=False),
        sa.Column("bad_records", sa.BigInteger(), nullable=False),
        sa.Column("torn_tails", sa.BigInteger(), nullable=False),
        sa.Column("damaged_bytes", sa.BigInteger(), nullable=False),
        sa.Column("watermark", sa.Float(), nullable=False),
        sa.Column("runs", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("consumer", name=op.f("pk_counting_state")),
    )
    op.create_table(
        "counted_event",
        sa.Column("decision_id", sa.String(length=64), nullable=False),
        sa.Column("event_type", sa.String(length=32), nullable=False),
        sa.Column("ts", sa.Float(), nullable=False),
        sa.Column("line_item_id", sa.Integer(), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("price_micros", sa.BigInteger(), nullable=False),
        sa.Column("expires", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("decision_id", "event_type", name=op.f("pk_counted_event")),
    )
    op.create_index(op.f("ix_counted_event_expires"), "counted_event", ["expires"])
    op.create_table(
        "rejected_record",
        sa.Column("consumer", sa.String(length=64), nullable=False),
        sa.Column("position", sa.String(length=200), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=False),
        sa.Column("excerpt", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("consumer", "position", name=op.f("pk_rejected_record")),
    )
    op.create_table(
        "eventlog_damage",
        sa.Column("segment", sa.String(length=200), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.Column("length", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("segment", "offset", name=op.f("pk_eventlog_damage")),
    )


def downgrade() -> None:
    op.drop_table("eventlog_damage")
    op.drop_table("rejected_record")
    op.drop_index(op.f("ix_counted_event_expires"), table_name="counted_event")
    op.drop_table("counted_event")
    op.drop_table("counting_state")
