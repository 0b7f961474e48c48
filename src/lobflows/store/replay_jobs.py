"""Replay jobs: dead letters an operator replays together from the dashboard.

One process works through a job at a bounded pace and writes each letter's
outcome here as it goes, holding the job under a lease it renews with
every outcome. Any server process shows the progress, and one whose
visitor finds the lease run out (its process stopped) takes the job over
from the first letter without an outcome.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from lobflows.store import tables
from lobflows.store.base import StoreBase, lock_name


@dataclass(frozen=True)
class ReplayJob:
    """A replay job and how far it got."""

    id: str
    actor: str
    letter_ids: list[int]
    # One per letter done, in order: {"letter", "run_id"} or {"letter", "refused"}.
    results: list[dict[str, Any]]
    started_at: float
    finished_at: float | None
    owner: str
    lease_until: float

    @property
    def done(self) -> int:
        return len(self.results)

    @property
    def is_finished(self) -> bool:
        return self.finished_at is not None

    @property
    def remaining(self) -> list[int]:
        return self.letter_ids[self.done :]

    @property
    def replayed(self) -> list[tuple[int, str]]:
        return [(r["letter"], r["run_id"]) for r in self.results if "run_id" in r]

    @property
    def refused(self) -> list[tuple[int, str]]:
        return [(r["letter"], r["refused"]) for r in self.results if "refused" in r]

    def is_stalled(self, now: float) -> bool:
        """Unfinished, and its process has not renewed the lease in time."""
        return not self.is_finished and self.lease_until < now


class ReplayJobOps(StoreBase):
    """Replay jobs, their outcomes and who works on them."""

    async def create_replay_job(
        self,
        job_id: str,
        *,
        actor: str,
        letter_ids: list[int],
        owner: str,
        lease_seconds: float,
    ) -> ReplayJob:
        now = time.time()
        statement = tables.replay_jobs.insert().values(
            id=job_id,
            actor=actor,
            letter_ids=letter_ids,
            results=[],
            started_at=now,
            finished_at=None,
            owner=owner,
            lease_until=now + lease_seconds,
        )
        await self._write(lambda conn: conn.execute(statement))
        found = await self.replay_job(job_id)
        assert found is not None
        return found

    async def replay_job(self, job_id: str) -> ReplayJob | None:
        j = tables.replay_jobs
        async with self.engine.connect() as conn:
            row = (await conn.execute(sa.select(j).where(j.c.id == job_id))).first()
        return None if row is None else ReplayJob(**row._mapping)

    async def recent_replay_jobs(self, limit: int) -> list[ReplayJob]:
        j = tables.replay_jobs
        query = sa.select(j).order_by(j.c.started_at.desc()).limit(limit)
        async with self.engine.connect() as conn:
            return [ReplayJob(**row._mapping) for row in await conn.execute(query)]

    async def record_replay_result(
        self,
        job_id: str,
        result: dict[str, Any],
        *,
        owner: str,
        lease_seconds: float,
    ) -> bool:
        """Add the next letter's outcome and renew the lease; finish the job
        after its last letter. False when another process has taken it over."""
        j = tables.replay_jobs

        def write(conn: sa.Connection) -> bool:
            lock_name(conn, self.is_sqlite, f"replay_job:{job_id}")
            row = conn.execute(
                sa.select(j.c.owner, j.c.results, j.c.letter_ids).where(
                    j.c.id == job_id
                )
            ).first()
            if row is None or row.owner != owner:
                return False
            results = [*row.results, result]
            now = time.time()
            finished = now if len(results) >= len(row.letter_ids) else None
            conn.execute(
                j.update()
                .where(j.c.id == job_id)
                .values(
                    results=results,
                    lease_until=now + lease_seconds,
                    finished_at=finished,
                )
            )
            return True

        return await self._write(write)

    async def take_over_replay_job(
        self, job_id: str, *, owner: str, lease_seconds: float
    ) -> ReplayJob | None:
        """Hold a stalled job for `owner`; None when it is not stalled (its
        process is alive, or it is finished) or another process took it first."""
        j = tables.replay_jobs

        def write(conn: sa.Connection) -> bool:
            lock_name(conn, self.is_sqlite, f"replay_job:{job_id}")
            now = time.time()
            taken = conn.execute(
                j.update()
                .where(
                    j.c.id == job_id,
                    j.c.finished_at.is_(None),
                    j.c.lease_until < now,
                )
                .values(owner=owner, lease_until=now + lease_seconds)
            )
            return taken.rowcount == 1

        if not await self._write(write):
            return None
        return await self.replay_job(job_id)
