"""Alembic environment: migrations run on a connection handed over by the run store."""

from __future__ import annotations

from alembic import context

from lobflows.store import tables

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=tables.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
