"""Delivery spend in nanos of the currency unit, so every CPM the API accepts stays exact.

Revision ID: 0004_spend_in_nanos
Revises: 0003_download_reports
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_spend_in_nanos"
down_revision = "0003_download_reports"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(sa.text("UPDATE delivery_hourly SET spend = spend * 1000"))


def downgrade() -> None:
    op.execute(sa.text("UPDATE delivery_hourly SET spend = spend / 1000"))
