"""Connection limits kept in the store, so every worker process shares them.

A concurrency limit is a count of slot rows; a rate limit is a token bucket
row. Both are read and changed in one transaction under a lock on the
connection's name (SQLite's write lock; an advisory lock on PostgreSQL).

Circuit breakers act per process, but each process records its breakers
that are not closed, so the dashboard, ``/metrics`` and ``lobflows health``
in any process show them.
"""

from __future__ import annotations

import time

import sqlalchemy as sa

from lobflows.store import tables
from lobflows.store.base import StoreBase, lock_name

# A breaker row is taken as left behind by a stopped process once its
# cool-down has been over this long with no probe to close or reopen it.
BREAKER_STALE_SECONDS = 600.0
STATE_RANK = {"closed": 0, "half-open": 1, "open": 2}


def worse_breaker(first: str, second: str) -> str:
    """Of two breaker states, the one that holds calls back more."""
    return first if STATE_RANK[first] >= STATE_RANK[second] else second


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

    async def save_breaker(
        self,
        connection: str,
        *,
        holder: str,
        state: str,
        failures: int,
        open_until: float,
        now: float | None = None,
    ) -> None:
        """Record the new state of one process's breaker; closed removes it."""
        b = tables.connection_breakers
        changed_at = time.time() if now is None else now

        def write(conn: sa.Connection) -> None:
            conn.execute(
                b.delete().where(b.c.connection == connection, b.c.holder == holder)
            )
            if state != "closed":
                conn.execute(
                    b.insert().values(
                        connection=connection,
                        holder=holder,
                        state=state,
                        failures=failures,
                        open_until=open_until,
                        changed_at=changed_at,
                    )
                )

        await self._write(write)

    async def breaker_states(self, now: float | None = None) -> dict[str, str]:
        """The worst breaker of each connection over every process: open while
        one is cooling down, half-open once a cool-down is over and a probe is
        due or under way. A connection missing from the answer is closed."""
        at = time.time() if now is None else now
        b = tables.connection_breakers
        query = sa.select(b.c.connection, b.c.state, b.c.open_until, b.c.changed_at)
        async with self.engine.connect() as conn:
            rows = list(await conn.execute(query))
        found: dict[str, str] = {}
        for connection, state, open_until, changed_at in rows:
            if at - max(open_until, changed_at) > BREAKER_STALE_SECONDS:
                continue
            cooling = state == "open" and at < open_until
            seen = "open" if cooling else "half-open"
            found[connection] = worse_breaker(seen, found.get(connection, "closed"))
        return found
