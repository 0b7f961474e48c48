"""The tables the code declares are the tables the migrations make."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from lobflows.store import RunStore, tables


async def test_every_table_and_index_matches_the_migrations(store: RunStore):
    async with store.engine.connect() as conn:
        differences = await conn.run_sync(
            lambda sync: compare_metadata(
                MigrationContext.configure(sync), tables.metadata
            )
        )

    # Alembic's own bookkeeping table is the store's, not the code's.
    differences = [d for d in differences if "alembic_version" not in repr(d)]
    assert differences == []
