"""poll_states: the watermark and last poll time of each polled flow

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "poll_states",
        sa.Column("flow", sa.String(length=200), nullable=False),
        sa.Column(
            "watermark",
            sa.JSON().with_variant(
                postgresql.JSONB(astext_type=sa.Text()), "postgresql"
            ),
            nullable=True,
        ),
        sa.Column("polled_at", sa.Float(precision=53), nullable=False),
        sa.PrimaryKeyConstraint("flow", name=op.f("pk_poll_states")),
    )


def downgrade() -> None:
    op.drop_table("poll_states")
