"""Connection limits kept in the store, so every worker process shares them.

A concurrency limit is a count of slot rows; a rate limit is a token bucket
row. Both are read and changed in one transaction under a lock on the
connection's name (SQLite's write lock; an advisory lock on PostgreSQL).
"""

from __future__ import annotations

import time

import sqlalchemy as sa

from lobflows.store import tables
from lobflows.store.base import StoreBase, lock_name


class LimitOps(StoreBase):
    """Slots and tokens of rate- and concurrency-limited connections."""

    async def acquire_slot(
        self, connection: str, *, holder: str, limit: int, lease_seconds: float
    ) -> int | None:
        """A slot id if fewer than `limit` are held (expired ones freed), else None."""
        s = tables.connection_slots

        def write(conn: sa.Connection) -> int | None:
            now = time.time()
            lock_name(conn, self.is_sqlite, f"slots:{connection}")
            conn.execute(
                s.delete().where(s.c.connection == connection, s.c.expires_at < now)
            )
            held = conn.execute(
                sa.select(sa.func.count())
                .select_from(s)
                .where(s.c.connection == connection)
            ).scalar_one()
            if held >= limit:
                return None
            return conn.execute(
                s.insert()
                .values(
                    connection=connection, holder=holder, expires_at=now + lease_seconds
                )
                .returning(s.c.id)
            ).scalar_one()

        return await self._write(write)

    async def release_slot(self, slot: int) -> None:
        s = tables.connection_slots
        await self._write(lambda conn: conn.execute(s.delete().where(s.c.id == slot)))

    async def take_token(
        self, connection: str, *, rate: float, burst: int, now: float | None = None
    ) -> float:
        """Take a token: 0.0 when one was free, else the seconds until one is."""
        b = tables.rate_buckets

        def write(conn: sa.Connection) -> float:
            at = time.time() if now is None else now
            lock_name(conn, self.is_sqlite, f"rate:{connection}")
            row = conn.execute(
                sa.select(b.c.tokens, b.c.updated_at).where(
                    b.c.connection == connection
                )
            ).first()
            if row is None:
                tokens = float(burst)
                conn.execute(
                    b.insert().values(
                        connection=connection, tokens=tokens, updated_at=at
                    )
                )
            else:
                tokens = min(float(burst), row.tokens + (at - row.updated_at) * rate)
            if tokens < 1.0:
                conn.execute(
                    b.update()
                    .where(b.c.connection == connection)
                    .values(tokens=tokens, updated_at=at)
                )
                return (1.0 - tokens) / rate
            conn.execute(
                b.update()
                .where(b.c.connection == connection)
                .values(tokens=tokens - 1.0, updated_at=at)
            )
            return 0.0

        return await self._write(write)
