"""monitoring: health_checks, alert_states, and indexes for health windows

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_INDEXES = (
    ("ix_runs_created_at", "runs", ["created_at"]),
    ("ix_runs_flow_status_finished_at", "runs", ["flow", "status", "finished_at"]),
    ("ix_runs_flow_created_at", "runs", ["flow", "created_at"]),
    ("ix_step_attempts_finished_at", "step_attempts", ["finished_at"]),
)


def upgrade() -> None:
    time = sa.Float(precision=53)
    json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
    op.create_table(
        "health_checks",
        sa.Column("connection", sa.String(length=200), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("checked_at", time, nullable=True),
        sa.Column("failures", sa.Integer(), server_default="0", nullable=False),
        sa.Column("failing_since", time, nullable=True),
        sa.Column("last_ok_at", time, nullable=True),
        sa.Column("next_due_at", time, nullable=False),
        sa.Column("claimed_by", sa.String(length=64), nullable=True),
        sa.Column("claimed_until", time, nullable=True),
        sa.PrimaryKeyConstraint("connection", name=op.f("pk_health_checks")),
    )
    op.create_table(
        "alert_states",
        sa.Column("key", sa.String(length=500), nullable=False),
        sa.Column("subject", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reasons", json, nullable=True),
        sa.Column("since", time, nullable=False),
        sa.Column("last_sent_at", time, nullable=True),
        sa.Column("sent_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("version", sa.Integer(), server_default="0", nullable=False),
        sa.Column("updated_at", time, nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_alert_states")),
    )
    for name, table, columns in _INDEXES:
        op.create_index(name, table, columns)


def downgrade() -> None:
    for name, table, _ in reversed(_INDEXES):
        op.drop_index(name, table_name=table)
    op.drop_table("alert_states")
    op.drop_table("health_checks")
