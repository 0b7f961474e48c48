"""What time-driven triggers remember: fire times of schedules, watermarks of polls."""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from lobflows.store import tables
from lobflows.store.base import StoreBase


class ScheduleOps(StoreBase):
    """Fire times of schedule triggers and watermarks of poll triggers."""

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

    async def poll_state(self, flow: str) -> tuple[Any, float] | None:
        """A polled flow's watermark and last poll time, if it was polled before."""
        t = tables.poll_states
        async with self.engine.connect() as conn:
            query = sa.select(t.c.watermark, t.c.polled_at).where(t.c.flow == flow)
            row = (await conn.execute(query)).first()
        return None if row is None else (row.watermark, row.polled_at)

    async def record_poll(self, flow: str, *, watermark: Any, polled_at: float) -> None:
        """Store a poll's outcome, after the runs it started are stored."""
        t = tables.poll_states

        def write(conn: sa.Connection) -> None:
            updated = conn.execute(
                t.update()
                .where(t.c.flow == flow)
                .values(watermark=watermark, polled_at=polled_at)
            )
            if updated.rowcount == 0:
                conn.execute(
                    t.insert().values(
                        flow=flow, watermark=watermark, polled_at=polled_at
                    )
                )

        try:
            await self._write(write)
        except IntegrityError:
            await self._write(write)  # another process inserted first
