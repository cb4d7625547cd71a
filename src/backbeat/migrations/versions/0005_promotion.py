"""Promotion: campaigns promoting an artist, release or track; precomputed scores; delivery.

Revision ID: 0005_promotion
Revises: 0004_spend_in_nanos
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_promotion"
down_revision = "0004_spend_in_nanos"
branch_labels = None
depends_on = None


def _delivery_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("exposures", sa.BigInteger(), nullable=False),
        sa.Column("reach", sa.BigInteger(), nullable=False),
        sa.Column("clicks", sa.BigInteger(), nullable=False),
        sa.Column("conversions_new", sa.BigInteger(), nullable=False),
        sa.Column("conversions_reactivated", sa.BigInteger(), nullable=False),
        sa.Column("conversions_amplified", sa.BigInteger(), nullable=False),
        sa.Column("spend", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "promotion_campaigns",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("advertiser_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("item_type", sa.String(length=16), nullable=False),
        sa.Column("item_id", sa.String(length=128), nullable=False),
        sa.Column("artist_id", sa.String(length=128), nullable=False),
        sa.Column("surfaces", sa.JSON(), nullable=False),
        sa.Column("markets", sa.JSON(), nullable=False),
        sa.Column("audiences", sa.JSON(), nullable=False),
        sa.Column("start_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("end_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("budget", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("price_model", sa.String(length=8), nullable=False),
        sa.Column("price", sa.BigInteger(), nullable=False),
        sa.Column("exposure_cap", sa.Integer(), nullable=False),
        sa.Column("attribution_days", sa.Integer(), nullable=False),
        sa.Column("exclusion_days", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["advertiser_id"],
            ["advertisers.id"],
            name=op.f("fk_promotion_campaigns_advertiser_id_advertisers"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_promotion_campaigns")),
    )
    op.create_index(
        op.f("ix_promotion_campaigns_advertiser_id"), "promotion_campaigns", ["advertiser_id"]
    )
    op.create_index(op.f("ix_promotion_campaigns_item_id"), "promotion_campaigns", ["item_id"])
    op.create_table(
        "promotion_scores",
        sa.Column("listener_id", sa.String(length=128), nullable=False),
        sa.Column("item_id", sa.String(length=128), nullable=False),
        sa.Column("p_conversion", sa.Float(), nullable=False),
        sa.Column("model_version", sa.String(length=64), nullable=False),
        sa.Column("scored_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("listener_id", "item_id", name=op.f("pk_promotion_scores")),
    )
    op.create_table(
        "promotion_delivery_daily",
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        *_delivery_columns(),
        sa.PrimaryKeyConstraint("campaign_id", "day", name=op.f("pk_promotion_delivery_daily")),
    )
    op.create_table(
        "promotion_delivery_totals",
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        *_delivery_columns(),
        sa.PrimaryKeyConstraint("campaign_id", name=op.f("pk_promotion_delivery_totals")),
    )


def downgrade() -> None:
    op.drop_table("promotion_delivery_totals")
    op.drop_table("promotion_delivery_daily")
    op.drop_table("promotion_scores")
    op.drop_index(op.f("ix_promotion_campaigns_item_id"), table_name="promotion_campaigns")
    op.drop_index(op.f("ix_promotion_campaigns_advertiser_id"), table_name="promotion_campaigns")
    op.drop_table("promotion_campaigns")
