"""The run store's tables. Times are seconds since the epoch (UTC), as floats."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s",
        "pk": "pk_%(table_name)s",
    }
)

Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
Time = sa.Float(precision=53)

flow_versions = sa.Table(
    "flow_versions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("flow", sa.String(200), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("digest", sa.String(64), nullable=False),
    sa.Column("definition", Json, nullable=False),
    sa.Column("created_at", Time, nullable=False),
    sa.UniqueConstraint("flow", "digest"),
    sa.UniqueConstraint("flow", "version"),
)

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("flow", sa.String(200), nullable=False),
    sa.Column(
        "flow_version_id", sa.Integer, sa.ForeignKey("flow_versions.id"), nullable=False
    ),
    # queued -> running -> succeeded | failed; failed runs sit in the dead letter queue.
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("trigger", sa.String(16), nullable=False),
    sa.Column("dedupe_key", sa.String(500)),
    sa.Column("input", Json, nullable=False),
    sa.Column("trigger_data", Json),
    # Corrected step inputs given on replay, by step id.
    sa.Column("overrides", Json),
    sa.Column("response", Json),
    sa.Column("error", sa.Text),
    sa.Column("current_step", sa.String(200)),
    sa.Column("current_attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("due_at", Time, nullable=False),
    sa.Column("lease_owner", sa.String(64)),
    sa.Column("lease_expires_at", Time),
    sa.Column("parent_run_id", sa.String(32)),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("updated_at", Time, nullable=False),
    sa.Column("finished_at", Time),
    sa.UniqueConstraint("flow", "dedupe_key"),
    sa.Index("ix_runs_status_due_at", "status", "due_at"),
    sa.Index("ix_runs_finished_at", "finished_at"),
)

step_attempts = sa.Table(
    "step_attempts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "run_id",
        sa.String(32),
        sa.ForeignKey("runs.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("step", sa.String(200), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    # succeeded | failed (retried later) | dead (retries over or permanent)
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("input", Json),
    sa.Column("output", Json),
    sa.Column("error", sa.Text),
    sa.Column("retryable", sa.Boolean),
    sa.Column("started_at", Time, nullable=False),
    sa.Column("finished_at", Time, nullable=False),
    sa.Column("next_attempt_at", Time),
    # Mapping steps: which rule made each target field, from which source.
    sa.Column("trace", Json),
    sa.Index("ix_step_attempts_run_id", "run_id", "id"),
)

timers = sa.Table(
    "timers",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "run_id",
        sa.String(32),
        sa.ForeignKey("runs.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("step", sa.String(200)),
    sa.Column("due_at", Time, nullable=False),
    sa.Column("fired_at", Time),
    sa.Index("ix_timers_due_at", "due_at"),
)

dead_letters = sa.Table(
    "dead_letters",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "run_id",
        sa.String(32),
        sa.ForeignKey("runs.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("flow", sa.String(200), nullable=False),
    sa.Column("step", sa.String(200), nullable=False),
    sa.Column("error", sa.Text, nullable=False),
    sa.Column("step_input", Json),
    # open | replayed | discarded
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("resolved_at", Time),
    sa.Index("ix_dead_letters_status", "status", "id"),
)

schedules = sa.Table(
    "schedules",
    metadata,
    sa.Column("flow", sa.String(200), primary_key=True),
    # The last fire time handled (started or skipped), so no time fires twice
    # and downtime is seen on restart.
    sa.Column("last_fire_at", Time, nullable=False),
    sa.Column("updated_at", Time, nullable=False),
)

signals = sa.Table(
    "signals",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "run_id",
        sa.String(32),
        sa.ForeignKey("runs.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("payload", Json),
    sa.Column("received_at", Time, nullable=False),
    # The wait step that took it; set once, so a retaken signal stays its own.
    sa.Column("taken_by_step", sa.String(200)),
    sa.Index("ix_signals_run_id_name", "run_id", "name", "id"),
)

poll_states = sa.Table(
    "poll_states",
    metadata,
    sa.Column("flow", sa.String(200), primary_key=True),
    # The newest watermark seen, and when the flow was last polled.
    sa.Column("watermark", Json),
    sa.Column("polled_at", Time, nullable=False),
)

tasks = sa.Table(
    "tasks",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column(
        "run_id",
        sa.String(32),
        sa.ForeignKey("runs.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("step", sa.String(200), nullable=False),
    sa.Column("flow", sa.String(200), nullable=False),
    # approval | review
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("description", sa.Text),
    # open -> approved | rejected | completed | timed_out | cancelled
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("assignees", Json, nullable=False),
    sa.Column("required", sa.Integer, nullable=False),
    sa.Column("requester", sa.String(320)),
    sa.Column("form", Json, nullable=False),
    # The form as submitted by the decision that closed the task.
    sa.Column("data", Json),
    sa.Column("due_at", Time),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("closed_at", Time),
    sa.UniqueConstraint("run_id", "step"),
    sa.Index("ix_tasks_status_created_at", "status", "created_at"),
)

task_actions = sa.Table(
    "task_actions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "task_id",
        sa.String(32),
        sa.ForeignKey("tasks.id", ondelete="CASCADE"),
        nullable=False,
    ),
    # approve | reject | complete | delegate | notify | timeout
    sa.Column("action", sa.String(16), nullable=False),
    sa.Column("by", sa.String(320)),
    # The assignee a delegate acted for; the user delegated to, for delegate.
    sa.Column("for_user", sa.String(320)),
    sa.Column("data", Json),
    sa.Column("comment", sa.Text),
    sa.Column("at", Time, nullable=False),
    sa.Index("ix_task_actions_task_id", "task_id", "id"),
)

rotations = sa.Table(
    "rotations",
    metadata,
    # Round-robin assignment: the next position in each role's member list.
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("position", sa.Integer, nullable=False),
)

event_waits = sa.Table(
    "event_waits",
    metadata,
    # A run's wait step waiting for an event with this topic and key.
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("topic", sa.String(200), nullable=False),
    sa.Column("key", sa.String(500), nullable=False),
    sa.Column(
        "run_id",
        sa.String(32),
        sa.ForeignKey("runs.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("step", sa.String(200), nullable=False),
    sa.Column("created_at", Time, nullable=False),
    sa.UniqueConstraint("run_id", "step"),
    sa.Index("ix_event_waits_topic_key", "topic", "key"),
)

event_mailbox = sa.Table(
    "event_mailbox",
    metadata,
    # Keyed events that came before any run waited for them.
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("topic", sa.String(200), nullable=False),
    sa.Column("key", sa.String(500), nullable=False),
    sa.Column("event_id", sa.String(300), nullable=False),
    sa.Column("data", Json),
    sa.Column("received_at", Time, nullable=False),
    sa.Column("taken_by_run", sa.String(32)),
    sa.UniqueConstraint("event_id"),
    sa.Index("ix_event_mailbox_topic_key", "topic", "key", "id"),
)

connection_slots = sa.Table(
    "connection_slots",
    metadata,
    # A call in flight to a connection with a concurrency limit.
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("connection", sa.String(200), nullable=False),
    sa.Column("holder", sa.String(64), nullable=False),
    sa.Column("expires_at", Time, nullable=False),
    sa.Index("ix_connection_slots_connection", "connection"),
)

rate_buckets = sa.Table(
    "rate_buckets",
    metadata,
    # A token bucket per rate-limited connection, shared by every process.
    sa.Column("connection", sa.String(200), primary_key=True),
    sa.Column("tokens", sa.Float(precision=53), nullable=False),
    sa.Column("updated_at", Time, nullable=False),
)

# -- secrets vault (migration 0009) ------------------------------------

# -- access control and audit (migration 0010) -------------------------

# -- monitoring (migration 0011) ---------------------------------------
