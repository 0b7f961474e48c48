"""circuit breakers: connection_breakers, each process's breakers that are not closed

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    time = sa.Float(precision=53)
    op.create_table(
        "connection_breakers",
        sa.Column("connection", sa.String(length=200), nullable=False),
        sa.Column("holder", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("open_until", time, nullable=False),
        sa.Column("changed_at", time, nullable=False),
        sa.PrimaryKeyConstraint(
            "connection", "holder", name=op.f("pk_connection_breakers")
        ),
    )


def downgrade() -> None:
    op.drop_table("connection_breakers")
