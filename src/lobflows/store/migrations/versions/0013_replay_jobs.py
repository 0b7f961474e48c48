"""replay jobs: dead letters replayed together from the dashboard

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    time = sa.Float(precision=53)
    json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
    op.create_table(
        "replay_jobs",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("letter_ids", json, nullable=False),
        sa.Column("results", json, nullable=False),
        sa.Column("started_at", time, nullable=False),
        sa.Column("finished_at", time, nullable=True),
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column("lease_until", time, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_replay_jobs")),
    )
    op.create_index("ix_replay_jobs_started_at", "replay_jobs", ["started_at"])


def downgrade() -> None:
    op.drop_index("ix_replay_jobs_started_at", table_name="replay_jobs")
    op.drop_table("replay_jobs")
