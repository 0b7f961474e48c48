"""event_waits and event_mailbox: runs waiting for a keyed event, and early events

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    time = sa.Float(precision=53)
    op.create_table(
        "event_waits",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("topic", sa.String(length=200), nullable=False),
        sa.Column("key", sa.String(length=500), nullable=False),
        sa.Column("run_id", sa.String(length=32), nullable=False),
        sa.Column("step", sa.String(length=200), nullable=False),
        sa.Column("created_at", time, nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["runs.id"],
            name=op.f("fk_event_waits_run_id"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_event_waits")),
        sa.UniqueConstraint("run_id", "step", name=op.f("uq_event_waits_run_id_step")),
    )
    op.create_index(
        "ix_event_waits_topic_key", "event_waits", ["topic", "key"], unique=False
    )
    op.create_table(
        "event_mailbox",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("topic", sa.String(length=200), nullable=False),
        sa.Column("key", sa.String(length=500), nullable=False),
        sa.Column("event_id", sa.String(length=300), nullable=False),
        sa.Column(
            "data",
            sa.JSON().with_variant(
                postgresql.JSONB(astext_type=sa.Text()), "postgresql"
            ),
            nullable=True,
        ),
        sa.Column("received_at", time, nullable=False),
        sa.Column("taken_by_run", sa.String(length=32), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_event_mailbox")),
        sa.UniqueConstraint("event_id", name=op.f("uq_event_mailbox_event_id")),
    )
    op.create_index(
        "ix_event_mailbox_topic_key",
        "event_mailbox",
        ["topic", "key", "id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_event_mailbox_topic_key", table_name="event_mailbox")
    op.drop_table("event_mailbox")
    op.drop_index("ix_event_waits_topic_key", table_name="event_waits")
    op.drop_table("event_waits")
