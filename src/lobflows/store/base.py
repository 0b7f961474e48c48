"""What every part of the run store shares: engines, the group writer, migrations.

Writes go through one group writer per process (see `writer`): each write is
a function of a connection, committed together with the writes of other runs
waiting at the same moment. Reads use a pool of their own; SQLite's WAL mode
lets them run beside the writer and beside other processes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from lobflows import errors
from lobflows.store import engines, records, tables
from lobflows.store.records import (
    DEFAULT_STEP_DATA_BUDGET_BYTES,
    RunRecord,
    cut_to_budget,
)
from lobflows.store.writer import GroupWriter

T = TypeVar("T")
_MIGRATIONS = str(Path(__file__).with_name("migrations"))


class StoreBase:
    """Connections and the write path; the store's parts build on it."""

    def __init__(
        self, url: str, *, step_data_budget_bytes: int = DEFAULT_STEP_DATA_BUDGET_BYTES
    ) -> None:
        engines.check_url(url)
        self.url = url
        self.display_url = engines.display_url(url)
        self.is_sqlite = engines.is_sqlite(url)
        self.step_data_budget_bytes = step_data_budget_bytes
        self.engine = engines.create_read_engine(url)
        self._writer: GroupWriter | None = None

    async def close(self) -> None:
        if self._writer is not None:
            await asyncio.to_thread(self._writer.close)
            self._writer = None
        await self.engine.dispose()

    async def migrate(self) -> None:
        """Bring the schema to the newest version."""
        try:
            async with self.engine.begin() as conn:
                await conn.run_sync(_upgrade)
        except (
            sa.exc.OperationalError,
            sa.exc.InterfaceError,
            sa.exc.DatabaseError,
        ) as exc:
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
            raise errors.ConfigurationError(
                f"cannot open the run store {self.display_url}: {reason}"
            ) from None

    def _group_writer(self) -> GroupWriter:
        if self._writer is None:
            # Started on first use: read-only commands never need the thread.
            self._writer = GroupWriter(engines.create_write_engine(self.url))
        return self._writer

    async def _write(
        self, write: Callable[[sa.Connection], T], *, wait: bool = True
    ) -> T | None:
        if not wait:
            self._group_writer().submit_nowait(write)
            return None
        return await self._group_writer().submit(write)

    async def flush(self) -> None:
        """Wait until every write queued so far is committed."""
        if self._writer is not None:
            await self._writer.submit(lambda conn: None)

    async def get_run(self, run_id: str) -> RunRecord:
        r = tables.runs
        async with self.engine.connect() as conn:
            row = (await conn.execute(sa.select(r).where(r.c.id == run_id))).first()
        if row is None:
            raise errors.RunNotFoundError(f"no run with id {run_id!r}", run_id=run_id)
        return records.run_record(row)

    def _attempt_row(self, **values: Any) -> dict[str, Any]:
        values["input"] = cut_to_budget(
            values.get("input"), self.step_data_budget_bytes
        )
        values["output"] = cut_to_budget(
            values.get("output"), self.step_data_budget_bytes
        )
        return values


# Hot statements are built once; their values travel as parameters, so each
# execution hits SQLAlchemy's compiled cache without building a statement.
INSERT_RUN = tables.runs.insert()
INSERT_ATTEMPT = tables.step_attempts.insert()
UPDATE_RUN = tables.runs.update().where(tables.runs.c.id == sa.bindparam("run_key"))


def lock_run(conn: sa.Connection, is_sqlite: bool, run_id: str) -> None:
    # Waits and signals for one run take turns; SQLite's write lock already
    # makes them, PostgreSQL needs the row lock.
    if not is_sqlite:
        conn.execute(
            sa.select(tables.runs.c.id)
            .where(tables.runs.c.id == run_id)
            .with_for_update()
        )


def lock_name(conn: sa.Connection, is_sqlite: bool, name: str) -> None:
    """Take turns on a name for the rest of the transaction (PostgreSQL's
    advisory lock; SQLite's write lock already makes writers take turns)."""
    if not is_sqlite:
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtext(name))))


def update_run(conn: sa.Connection, run_id: str, values: dict[str, Any]) -> None:
    conn.execute(UPDATE_RUN, {"run_key": run_id, **values})


def _upgrade(connection: sa.Connection) -> None:
    config = Config()
    config.set_main_option("script_location", _MIGRATIONS)
    config.attributes["connection"] = connection
    command.upgrade(config, "head")
