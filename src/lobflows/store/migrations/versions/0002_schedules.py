"""schedules: the last fire time of each scheduled flow

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "schedules",
        sa.Column("flow", sa.String(length=200), nullable=False),
        sa.Column("last_fire_at", sa.Float(precision=53), nullable=False),
        sa.Column("updated_at", sa.Float(precision=53), nullable=False),
        sa.PrimaryKeyConstraint("flow", name=op.f("pk_schedules")),
    )


def downgrade() -> None:
    op.drop_table("schedules")
