"""tasks, task_actions and rotations: human tasks, their history, round-robin turns

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def _json() -> sa.types.TypeEngine:
    return sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    time = sa.Float(precision=53)
    op.create_table(
        "tasks",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("run_id", sa.String(length=32), nullable=False),
        sa.Column("step", sa.String(length=200), nullable=False),
        sa.Column("flow", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("assignees", _json(), nullable=False),
        sa.Column("required", sa.Integer(), nullable=False),
        sa.Column("requester", sa.String(length=320), nullable=True),
        sa.Column("form", _json(), nullable=False),
        sa.Column("data", _json(), nullable=True),
        sa.Column("due_at", time, nullable=True),
        sa.Column("created_at", time, nullable=False),
        sa.Column("closed_at", time, nullable=True),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_tasks_run_id"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tasks")),
        sa.UniqueConstraint("run_id", "step", name=op.f("uq_tasks_run_id_step")),
    )
    op.create_index(
        "ix_tasks_status_created_at", "tasks", ["status", "created_at"], unique=False
    )
    op.create_table(
        "task_actions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("task_id", sa.String(length=32), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("by", sa.String(length=320), nullable=True),
        sa.Column("for_user", sa.String(length=320), nullable=True),
        sa.Column("data", _json(), nullable=True),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("at", time, nullable=False),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["tasks.id"],
            name=op.f("fk_task_actions_task_id"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_task_actions")),
    )
    op.create_index(
        "ix_task_actions_task_id", "task_actions", ["task_id", "id"], unique=False
    )
    op.create_table(
        "rotations",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_rotations")),
    )


def downgrade() -> None:
    op.drop_table("rotations")
    op.drop_index("ix_task_actions_task_id", table_name="task_actions")
    op.drop_table("task_actions")
    op.drop_index("ix_tasks_status_created_at", table_name="tasks")
    op.drop_table("tasks")
