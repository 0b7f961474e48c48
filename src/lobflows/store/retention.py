"""Run data has a lifecycle: finished runs are pruned after their flow's retention.

Finished replay jobs of the dashboard go after the default retention.

Pruning deletes in small batches, each its own short transaction, so
workers are never locked out for long; on SQLite the freed pages are then
returned to the file system so the file really shrinks.
"""

from __future__ import annotations

import logging
import time

import sqlalchemy as sa

from lobflows.store import tables
from lobflows.store.base import StoreBase

log = logging.getLogger(__name__)
DEFAULT_RETENTION_DAYS = 30.0
SECONDS_PER_DAY = 86_400.0


class RetentionOps(StoreBase):
    """Deleting finished runs and giving the space back."""

    async def prune_batch(
        self, *, flow: str, older_than: float, batch_size: int
    ) -> int:
        """Delete one batch of finished runs of a flow; open dead letters are kept."""
        r, d = tables.runs, tables.dead_letters
        open_letters = sa.select(d.c.run_id).where(d.c.status == "open")
        victims = (
            sa.select(r.c.id)
            .where(
                r.c.flow == flow,
                r.c.finished_at < older_than,
                r.c.id.not_in(open_letters),
            )
            .limit(batch_size)
        )

        def write(conn: sa.Connection) -> int:
            ids = list(conn.execute(victims).scalars())
            # Children first, whether or not the database enforces cascades.
            for child in (
                tables.step_attempts,
                tables.timers,
                tables.dead_letters,
                tables.signals,
            ):
                conn.execute(child.delete().where(child.c.run_id.in_(ids)))
            conn.execute(r.delete().where(r.c.id.in_(ids)))
            return len(ids)

        return await self._write(write)

    async def prune_replay_jobs(self, *, older_than: float) -> int:
        """Delete replay jobs that finished before `older_than`."""
        j = tables.replay_jobs
        statement = j.delete().where(j.c.finished_at < older_than)
        return await self._write(lambda conn: conn.execute(statement).rowcount)

    async def release_free_pages(self, *, pages: int = 2000) -> None:
        """Give deleted space back to the file system (SQLite), a few pages at a time."""
        if self.is_sqlite:
            statement = f"PRAGMA incremental_vacuum({int(pages)})"
            await self._write(lambda conn: conn.exec_driver_sql(statement))

    async def free_pages(self) -> int:
        if not self.is_sqlite:
            return 0
        async with self.engine.connect() as conn:
            return int(
                (await conn.exec_driver_sql("PRAGMA freelist_count")).scalar_one()
            )


async def retention_days_by_flow(store: RetentionOps) -> dict[str, float]:
    """Each flow's retention, from its newest stored version."""
    t = tables.flow_versions
    newest = (
        sa.select(t.c.flow, sa.func.max(t.c.version).label("version"))
        .group_by(t.c.flow)
        .subquery()
    )
    query = sa.select(t.c.flow, t.c.definition).join(
        newest, sa.and_(t.c.flow == newest.c.flow, t.c.version == newest.c.version)
    )
    async with store.engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return {
        row.flow: float(row.definition.get("retention_days", DEFAULT_RETENTION_DAYS))
        for row in rows
    }


async def prune(
    store: RetentionOps, *, batch_size: int = 500, now: float | None = None
) -> int:
    """Delete every finished run past retention; return how many were deleted."""
    now = time.time() if now is None else now
    removed = 0
    for flow, days in (await retention_days_by_flow(store)).items():
        older_than = now - days * SECONDS_PER_DAY
        while batch := await store.prune_batch(
            flow=flow, older_than=older_than, batch_size=batch_size
        ):
            removed += batch
            await store.release_free_pages()
    await store.prune_replay_jobs(
        older_than=now - DEFAULT_RETENTION_DAYS * SECONDS_PER_DAY
    )
    while await store.free_pages() > 0:
        before = await store.free_pages()
        await store.release_free_pages()
        if await store.free_pages() >= before:
            break
    if removed:
        log.info(
            "Finished runs pruned", extra={"event": "runs_pruned", "runs": removed}
        )
    return removed
