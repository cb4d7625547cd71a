"""API key roles: advertiser keys, and server-side ad inserter keys not tied to an advertiser.

Revision ID: 0006_api_key_roles
Revises: 0005_promotion
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_api_key_roles"
down_revision = "0005_promotion"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("role", sa.String(length=16), nullable=False, server_default="advertiser")
        )
        batch_op.alter_column("advertiser_id", existing_type=sa.Integer(), nullable=True)


def downgrade() -> None:
    op.execute(sa.text("DELETE FROM api_keys WHERE advertiser_id IS NULL"))
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.alter_column("advertiser_id", existing_type=sa.Integer(), nullable=False)
        batch_op.drop_column("role")
