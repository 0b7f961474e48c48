"""Run data has a lifecycle: finished runs are pruned after their flow's retention.

Pruning deletes in small batches, each its own short transaction, so
workers are never locked out for long; on SQLite the freed pages are then
returned to the file system so the file really shrinks.
"""

from __future__ import annotations

import logging
import time

import sqlalchemy as sa

from lobflows.store import tables
from lobflows.store.runs import RunStore

log = logging.getLogger(__name__)
DEFAULT_RETENTION_DAYS = 30.0
SECONDS_PER_DAY = 86_400.0


async def retention_days_by_flow(store: RunStore) -> dict[str, float]:
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
    store: RunStore, *, batch_size: int = 500, now: float | None = None
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
