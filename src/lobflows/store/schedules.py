"""The last handled fire time of each scheduled flow."""

from __future__ import annotations

import time

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from lobflows.store import tables
from lobflows.store.base import StoreBase


class ScheduleOps(StoreBase):
    """Fire times of schedule triggers."""

    async def schedule_last_fire(self, flow: str) -> float | None:
        """The last fire time of a scheduled flow that was handled, if any."""
        t = tables.schedules
        async with self.engine.connect() as conn:
            query = sa.select(t.c.last_fire_at).where(t.c.flow == flow)
            return (await conn.execute(query)).scalar()

    async def record_schedule_fire(self, flow: str, fire_at: float) -> None:
        """Remember a handled fire time; it only ever moves forward."""
        t = tables.schedules

        def write(conn: sa.Connection) -> None:
            now = time.time()
            moved = conn.execute(
                t.update()
                .where(t.c.flow == flow, t.c.last_fire_at < fire_at)
                .values(last_fire_at=fire_at, updated_at=now)
            )
            exists = conn.execute(sa.select(t.c.flow).where(t.c.flow == flow)).first()
            if moved.rowcount == 0 and exists is None:
                conn.execute(
                    t.insert().values(flow=flow, last_fire_at=fire_at, updated_at=now)
                )

        try:
            await self._write(write)
        except IntegrityError:
            # Another process inserted the row first; now it is an update.
            await self._write(write)
