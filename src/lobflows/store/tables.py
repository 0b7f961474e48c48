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

secrets = sa.Table(
    "secrets",
    metadata,
    # A secret in the encrypted vault; its values live in secret_versions.
    sa.Column("name", sa.String(200), primary_key=True),
    # Rotation policy: the secret is overdue this many days after its last
    # rotation (or creation); null means no policy.
    sa.Column("rotate_every_days", sa.Integer),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("rotated_at", Time),
)

secret_versions = sa.Table(
    "secret_versions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "name",
        sa.String(200),
        sa.ForeignKey("secrets.name", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("version", sa.Integer, nullable=False),
    # Fernet token of the value, under the master key (never stored here).
    sa.Column("ciphertext", sa.Text, nullable=False),
    sa.Column("created_at", Time, nullable=False),
    # Set when a newer version replaces this one: runs started before then
    # keep this value until grace_until.
    sa.Column("superseded_at", Time),
    sa.Column("grace_until", Time),
    sa.UniqueConstraint("name", "version"),
)

secret_usage = sa.Table(
    "secret_usage",
    metadata,
    # What uses a secret (from any backend) and when it was last read.
    sa.Column("name", sa.String(200), primary_key=True),
    # ["connection erp", "flow intake (webhook signature)"], as declared by
    # the flows and connections of the last process that started.
    sa.Column("used_by", Json),
    sa.Column("last_used_at", Time),
)

# -- access control and audit (migration 0010) -------------------------

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("email", sa.String(320)),
    # argon2id; none for users who only sign in through single sign-on.
    sa.Column("password_hash", sa.Text),
    # A list of role names: viewer, approver, operator, admin.
    sa.Column("roles", Json, nullable=False),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("updated_at", Time, nullable=False),
    sa.UniqueConstraint("name"),
    sa.UniqueConstraint("email"),
)

api_tokens = sa.Table(
    "api_tokens",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "user_id",
        sa.Integer,
        sa.ForeignKey("users.id", ondelete="CASCADE"),
        nullable=False,
    ),
    # A label the user chose, shown in listings.
    sa.Column("name", sa.String(200), nullable=False),
    # SHA-256 of the token, in hex; the token itself is shown once, never stored.
    sa.Column("token_hash", sa.String(64), nullable=False),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("last_used_at", Time),
    sa.Column("revoked_at", Time),
    sa.UniqueConstraint("token_hash"),
    sa.Index("ix_api_tokens_user_id", "user_id"),
)

web_sessions = sa.Table(
    "web_sessions",
    metadata,
    # SHA-256 of the random session id the signed cookie carries, in hex.
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column(
        "user_id",
        sa.Integer,
        sa.ForeignKey("users.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("created_at", Time, nullable=False),
    # Refreshed at most once a minute, so a request rarely writes.
    sa.Column("last_seen_at", Time, nullable=False),
    # Set at sign-out and when the user's password changes.
    sa.Column("ended_at", Time),
    sa.Index("ix_web_sessions_user_id", "user_id"),
)

audit_log = sa.Table(
    "audit_log",
    metadata,
    # Who did what to what, and when; rows are only ever added.
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", Time, nullable=False),
    sa.Column("actor", sa.String(320), nullable=False),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("target", sa.String(500), nullable=False),
    sa.Column("detail", Json),
    sa.Index("ix_audit_log_actor_id", "actor", "id"),
    sa.Index("ix_audit_log_action_id", "action", "id"),
    sa.Index("ix_audit_log_action_at", "action", "at"),
)

# -- monitoring (migration 0011) ---------------------------------------

health_checks = sa.Table(
    "health_checks",
    metadata,
    # The latest scheduled check of one connection, shared by every process.
    sa.Column("connection", sa.String(200), primary_key=True),
    # None until a check has finished.
    sa.Column("ok", sa.Boolean),
    # What the check said, or why it failed (secrets scrubbed).
    sa.Column("message", sa.Text),
    sa.Column("checked_at", Time),
    # Failed checks in a row, and when the first of them failed.
    sa.Column("failures", sa.Integer, nullable=False, server_default="0"),
    sa.Column("failing_since", Time),
    sa.Column("last_ok_at", Time),
    # The next check is due then; a process claims it until claimed_until.
    sa.Column("next_due_at", Time, nullable=False),
    sa.Column("claimed_by", sa.String(64)),
    sa.Column("claimed_until", Time),
)

alert_states = sa.Table(
    "alert_states",
    metadata,
    # One problem of one alert rule: "<rule>:<subject>:<name>".
    sa.Column("key", sa.String(500), primary_key=True),
    sa.Column("subject", sa.String(16), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    # firing while the problem lasts, resolved after it.
    sa.Column("state", sa.String(16), nullable=False),
    # The subject's status and reasons when last sent.
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("reasons", Json),
    sa.Column("since", Time, nullable=False),
    sa.Column("last_sent_at", Time),
    sa.Column("sent_count", sa.Integer, nullable=False, server_default="0"),
    # Bumped on every change, so two processes never both send.
    sa.Column("version", sa.Integer, nullable=False, server_default="0"),
    sa.Column("updated_at", Time, nullable=False),
)

# Indexes that keep the monitor's per-window queries cheap.
sa.Index("ix_runs_created_at", runs.c.created_at)
sa.Index(
    "ix_runs_flow_status_finished_at", runs.c.flow, runs.c.status, runs.c.finished_at
)
sa.Index("ix_runs_flow_created_at", runs.c.flow, runs.c.created_at)
sa.Index("ix_step_attempts_finished_at", step_attempts.c.finished_at)

# -- circuit breakers (migration 0012) ---------------------------------

connection_breakers = sa.Table(
    "connection_breakers",
    metadata,
    # A breaker that is not closed, in one process (holder); a closed one has
    # no row. Written on each change of state, read to show every process's.
    sa.Column("connection", sa.String(200), primary_key=True),
    sa.Column("holder", sa.String(64), primary_key=True),
    # open or half-open, as the holder last changed it.
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("failures", sa.Integer, nullable=False),
    sa.Column("open_until", Time, nullable=False),
    sa.Column("changed_at", Time, nullable=False),
)

# -- dashboard replay jobs (migration 0013) ----------------------------

replay_jobs = sa.Table(
    "replay_jobs",
    metadata,
    # Dead letters an operator chose to replay together, worked through in
    # the background by one process at a time (owner, until lease_until).
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("letter_ids", Json, nullable=False),
    # One entry per letter done, in order: {"letter", "run_id"} or
    # {"letter", "refused"}.
    sa.Column("results", Json, nullable=False),
    sa.Column("started_at", Time, nullable=False),
    sa.Column("finished_at", Time),
    sa.Column("owner", sa.String(64), nullable=False),
    sa.Column("lease_until", Time, nullable=False),
    sa.Index("ix_replay_jobs_started_at", "started_at"),
)
