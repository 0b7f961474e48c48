"""connection_slots and rate_buckets: connection limits shared by all workers

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    time = sa.Float(precision=53)
    op.create_table(
        "connection_slots",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("connection", sa.String(length=200), nullable=False),
        sa.Column("holder", sa.String(length=64), nullable=False),
        sa.Column("expires_at", time, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_connection_slots")),
    )
    op.create_index(
        "ix_connection_slots_connection", "connection_slots", ["connection"]
    )
    op.create_table(
        "rate_buckets",
        sa.Column("connection", sa.String(length=200), nullable=False),
        sa.Column("tokens", sa.Float(precision=53), nullable=False),
        sa.Column("updated_at", time, nullable=False),
        sa.PrimaryKeyConstraint("connection", name=op.f("pk_rate_buckets")),
    )


def downgrade() -> None:
    op.drop_table("rate_buckets")
    op.drop_index("ix_connection_slots_connection", table_name="connection_slots")
    op.drop_table("connection_slots")
