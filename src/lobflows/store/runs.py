"""The run store: runs, their claims and their step journal.

Workers claim due runs with a lease, with ``FOR UPDATE SKIP LOCKED`` on
PostgreSQL. Every step's attempt is journaled; the journal is what a resumed
run replays.
"""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from lobflows import errors
from lobflows.store import records, tables
from lobflows.store.access import AccessOps
from lobflows.store.base import INSERT_ATTEMPT, INSERT_RUN, update_run
from lobflows.store.dead_letters import DeadLetterOps
from lobflows.store.health import HealthOps
from lobflows.store.limits import LimitOps
from lobflows.store.records import Attempt, RunRecord, cut_to_budget, new_run_id
from lobflows.store.replay_jobs import ReplayJobOps
from lobflows.store.retention import RetentionOps
from lobflows.store.schedules import ScheduleOps
from lobflows.store.signals import SignalOps
from lobflows.store.tasks import TaskOps
from lobflows.store.vault import SecretOps


class RunStore(
    SignalOps,
    TaskOps,
    ScheduleOps,
    DeadLetterOps,
    ReplayJobOps,
    RetentionOps,
    LimitOps,
    SecretOps,
    AccessOps,
    HealthOps,
):
    """Durable state of every run, shared by all workers of one installation.

    Runs, claims and the step journal live here; waits and signals, tasks,
    schedules, dead letters and retention each have a module of their own.
    """

    # -- flow versions -------------------------------------------------

    async def register_flow_version(
        self, *, flow: str, digest: str, definition: dict[str, Any]
    ) -> tuple[int, int]:
        """Store a flow definition once per distinct content; return (id, version)."""
        t = tables.flow_versions

        def write(conn: sa.Connection) -> tuple[int, int]:
            row = conn.execute(
                sa.select(t.c.id, t.c.version).where(
                    t.c.flow == flow, t.c.digest == digest
                )
            ).first()
            if row is not None:
                return row.id, row.version
            latest = conn.execute(
                sa.select(sa.func.max(t.c.version)).where(t.c.flow == flow)
            ).scalar()
            version = (latest or 0) + 1
            values = {
                "flow": flow,
                "version": version,
                "digest": digest,
                "definition": definition,
                "created_at": time.time(),
            }
            return conn.execute(
                t.insert().values(**values).returning(t.c.id)
            ).scalar_one(), version

        return await self._write(write)

    async def flow_definition(self, flow_version_id: int) -> dict[str, Any]:
        t = tables.flow_versions
        async with self.engine.connect() as conn:
            definition = (
                await conn.execute(
                    sa.select(t.c.definition).where(t.c.id == flow_version_id)
                )
            ).scalar()
        if definition is None:
            raise errors.StoreError(
                f"flow version {flow_version_id} is not in the store"
            )
        return dict(definition)

    # -- starting runs ---------------------------------------------------

    async def create_run(
        self,
        *,
        flow: str,
        flow_version_id: int,
        input: Any,
        trigger: str,
        trigger_data: Any = None,
        dedupe_key: str | None = None,
        lease_owner: str | None = None,
        lease_seconds: float = 30.0,
        due_at: float | None = None,
        parent_run_id: str | None = None,
    ) -> tuple[RunRecord, bool]:
        """Store a new run; with a dedupe key already seen, return the original run.

        Returns the run and whether it was created now. A run created with a
        lease owner starts out claimed by that worker.
        """
        now = time.time()
        values = {
            "id": new_run_id(),
            "flow": flow,
            "flow_version_id": flow_version_id,
            "status": "running" if lease_owner else "queued",
            "trigger": trigger,
            "dedupe_key": dedupe_key,
            "input": input,
            "trigger_data": trigger_data,
            "due_at": now if due_at is None else due_at,
            "parent_run_id": parent_run_id,
            "lease_owner": lease_owner,
            "lease_expires_at": now + lease_seconds if lease_owner else None,
            "created_at": now,
            "updated_at": now,
        }
        try:
            await self._write(lambda conn: conn.execute(INSERT_RUN, values))
        except IntegrityError:
            if dedupe_key is None:
                raise
            existing = await self._run_by_dedupe_key(flow, dedupe_key)
            if existing is None:
                raise
            return await self.get_run(existing), False
        record = {name: values.get(name) for name in RunRecord.__dataclass_fields__}
        return RunRecord(**{**record, "current_attempts": 0}), True

    async def run_by_dedupe_key(self, flow: str, dedupe_key: str) -> RunRecord | None:
        """The run a trigger with this dedupe key started, if any."""
        run_id = await self._run_by_dedupe_key(flow, dedupe_key)
        return None if run_id is None else await self.get_run(run_id)

    async def children(
        self, run_id: str, *, key_prefix: str | None = None
    ) -> list[RunRecord]:
        """Runs started by a run's subflow and foreach steps, oldest first."""
        r = tables.runs
        query = sa.select(r).where(r.c.parent_run_id == run_id).order_by(r.c.created_at)
        if key_prefix is not None:
            query = query.where(r.c.dedupe_key.startswith(key_prefix, autoescape=True))
        async with self.engine.connect() as conn:
            return [records.run_record(row) for row in await conn.execute(query)]

    async def _run_by_dedupe_key(self, flow: str, dedupe_key: str) -> str | None:
        r = tables.runs
        async with self.engine.connect() as conn:
            query = sa.select(r.c.id).where(
                r.c.flow == flow, r.c.dedupe_key == dedupe_key
            )
            return (await conn.execute(query)).scalar()

    # -- claiming work ---------------------------------------------------

    async def claim_runs(
        self, *, owner: str, limit: int, lease_seconds: float, now: float | None = None
    ) -> list[RunRecord]:
        """Lease due queued or waiting runs, and running runs whose lease ran out."""
        r = tables.runs

        def write(conn: sa.Connection) -> list[RunRecord]:
            nonlocal now
            now = time.time() if now is None else now
            due = sa.or_(
                sa.and_(r.c.status.in_(("queued", "waiting")), r.c.due_at <= now),
                sa.and_(r.c.status == "running", r.c.lease_expires_at < now),
            )
            candidates = sa.select(r.c.id).where(due).order_by(r.c.due_at).limit(limit)
            if not self.is_sqlite:
                candidates = candidates.with_for_update(skip_locked=True)
            ids = list(conn.execute(candidates).scalars())
            if not ids:
                return []
            # The condition is repeated so a run another process took in between stays theirs.
            conn.execute(
                r.update()
                .where(r.c.id.in_(ids), due)
                .values(
                    status="running",
                    lease_owner=owner,
                    lease_expires_at=now + lease_seconds,
                    updated_at=now,
                )
            )
            rows = conn.execute(
                sa.select(r).where(
                    r.c.id.in_(ids), r.c.lease_owner == owner, r.c.updated_at == now
                )
            ).all()
            return [records.run_record(row) for row in rows]

        return await self._write(write)

    async def claim_run(
        self, run_id: str, *, owner: str, lease_seconds: float, now: float | None = None
    ) -> RunRecord | None:
        """Lease one run if it is due, already ours, or its lease ran out."""
        r = tables.runs

        def write(conn: sa.Connection) -> RunRecord | None:
            nonlocal now
            now = time.time() if now is None else now
            claimable = sa.or_(
                sa.and_(r.c.status.in_(("queued", "waiting")), r.c.due_at <= now),
                sa.and_(
                    r.c.status == "running",
                    sa.or_(r.c.lease_owner == owner, r.c.lease_expires_at < now),
                ),
            )
            result = conn.execute(
                r.update()
                .where(r.c.id == run_id, claimable)
                .values(
                    status="running",
                    lease_owner=owner,
                    lease_expires_at=now + lease_seconds,
                    updated_at=now,
                )
            )
            if result.rowcount != 1:
                return None
            return records.run_record(
                conn.execute(sa.select(r).where(r.c.id == run_id)).one()
            )

        return await self._write(write)

    async def renew_leases(self, *, owner: str, lease_seconds: float) -> int:
        r = tables.runs
        statement = r.update().where(r.c.lease_owner == owner, r.c.status == "running")
        return await self._write(
            lambda conn: (
                conn.execute(
                    statement.values(lease_expires_at=time.time() + lease_seconds)
                ).rowcount
            )
        )

    async def release_leases(self, *, owner: str) -> None:
        """Hand a stopping worker's runs back at once instead of when the lease ends."""
        r = tables.runs
        statement = r.update().where(r.c.lease_owner == owner, r.c.status == "running")
        await self._write(
            lambda conn: conn.execute(
                statement.values(
                    status="queued",
                    lease_owner=None,
                    lease_expires_at=None,
                    due_at=time.time(),
                )
            )
        )

    # -- journaling steps ------------------------------------------------

    async def completed_steps(self, run_id: str) -> dict[str, Any]:
        """The output of every step that succeeded in this run, by step id."""
        a = tables.step_attempts
        query = (
            sa.select(a.c.step, a.c.output)
            .where(a.c.run_id == run_id, a.c.status == "succeeded")
            .order_by(a.c.id)
        )
        async with self.engine.connect() as conn:
            return {row.step: row.output for row in await conn.execute(query)}

    async def journal_state(self, run_id: str) -> tuple[dict[str, Any], dict[str, int]]:
        """What a resumed run needs of its journal, in one read: the output of
        every succeeded step, and each step's failed attempts since it last
        went to the dead letter queue.

        The failures are each step's attempt count: a replay gives the step a
        new budget, and branches failing at once each keep their own count.
        """
        a = tables.step_attempts
        query = (
            sa.select(a.c.step, a.c.status, a.c.output)
            .where(
                a.c.run_id == run_id, a.c.status.in_(("succeeded", "failed", "dead"))
            )
            .order_by(a.c.id)
        )
        completed: dict[str, Any] = {}
        failures: dict[str, int] = {}
        async with self.engine.connect() as conn:
            for step, status, output in await conn.execute(query):
                if status == "succeeded":
                    completed[step] = output
                elif status == "failed":
                    failures[step] = failures.get(step, 0) + 1
                else:
                    failures.pop(step, None)
        return completed, failures

    async def record_attempt(self, **attempt: Any) -> None:
        """Journal one attempt without changing the run (a branch's failure
        settled together with its siblings')."""
        row = self._attempt_row(finished_at=time.time(), **attempt)
        await self._write(lambda conn: conn.execute(INSERT_ATTEMPT, row))

    async def record_success(
        self,
        *,
        run_id: str,
        step: str,
        attempt: int,
        input: Any,
        output: Any,
        started_at: float,
        response: Any = None,
        wait: bool = True,
        trace: Any = None,
    ) -> None:
        """Journal a succeeded step; the run's attempt counter starts over.

        `trace` is a mapping step's record of which rule made each field.

        Without `wait` the record commits with the next batch: right for steps
        with no effect outside the run, which a crash merely repeats.
        """
        now = time.time()
        attempt_row = self._attempt_row(
            run_id=run_id,
            step=step,
            attempt=attempt,
            status="succeeded",
            input=input,
            output=output,
            started_at=started_at,
            finished_at=now,
        )
        if trace is not None:
            attempt_row["trace"] = cut_to_budget(trace, self.step_data_budget_bytes)
        run_values: dict[str, Any] = {
            "current_step": None,
            "current_attempts": 0,
            "updated_at": now,
        }
        if response is not None:
            run_values["response"] = response
        await self._write(
            lambda conn: self._journal(conn, attempt_row, run_id, run_values), wait=wait
        )

    async def record_retry(
        self,
        *,
        run_id: str,
        step: str,
        attempt: int,
        input: Any,
        error: str,
        started_at: float,
        next_attempt_at: float,
        status: str = "failed",
    ) -> None:
        """Journal a failed attempt and put the run back in the queue for later.

        A `paused` attempt (the call was not made) does not count as one.
        """
        now = time.time()
        attempt_row = self._attempt_row(
            run_id=run_id,
            step=step,
            attempt=attempt,
            status=status,
            input=input,
            error=error,
            retryable=True,
            started_at=started_at,
            finished_at=now,
            next_attempt_at=next_attempt_at,
        )
        run_values = {
            "status": "queued",
            "current_step": step,
            "current_attempts": attempt,
            "due_at": next_attempt_at,
            "lease_owner": None,
            "lease_expires_at": None,
            "updated_at": now,
        }
        await self._write(
            lambda conn: self._journal(conn, attempt_row, run_id, run_values)
        )

    async def record_dead_letter(
        self,
        *,
        run_id: str,
        flow: str,
        step: str,
        attempt: int,
        input: Any,
        error: str,
        retryable: bool,
        started_at: float,
    ) -> int:
        """Journal the last attempt, fail the run and park it in the dead letter queue."""
        now = time.time()
        attempt_row = self._attempt_row(
            run_id=run_id,
            step=step,
            attempt=attempt,
            status="dead",
            input=input,
            error=error,
            retryable=retryable,
            started_at=started_at,
            finished_at=now,
        )
        run_values = {
            "status": "failed",
            "error": error,
            "current_step": step,
            "current_attempts": attempt,
            "lease_owner": None,
            "lease_expires_at": None,
            "updated_at": now,
            "finished_at": now,
        }
        letter = {
            "run_id": run_id,
            "flow": flow,
            "step": step,
            "error": error,
            "step_input": attempt_row["input"],
            "status": "open",
            "created_at": now,
        }

        def write(conn: sa.Connection) -> int:
            self._journal(conn, attempt_row, run_id, run_values)
            return conn.execute(
                tables.dead_letters.insert()
                .values(**letter)
                .returning(tables.dead_letters.c.id)
            ).scalar_one()

        return await self._write(write)

    async def finish_run(self, run_id: str, *, wait: bool = True) -> None:
        """Mark a run succeeded. Its journal already proves it; a crash before
        this commits only makes a worker walk the completed steps once more."""
        now = time.time()
        run_values = {
            "status": "succeeded",
            "error": None,
            "lease_owner": None,
            "lease_expires_at": None,
            "updated_at": now,
            "finished_at": now,
        }
        await self._write(lambda conn: update_run(conn, run_id, run_values), wait=wait)

    @staticmethod
    def _journal(
        conn: sa.Connection,
        attempt_row: dict[str, Any],
        run_id: str,
        run_values: dict[str, Any],
    ) -> None:
        conn.execute(INSERT_ATTEMPT, attempt_row)
        update_run(conn, run_id, run_values)

    async def flow_versions(self, flow: str | None = None) -> list[dict[str, Any]]:
        """Every stored flow version with its runs in flight (queued or running)."""
        v, r = tables.flow_versions, tables.runs
        in_flight = (
            sa.select(r.c.flow_version_id, sa.func.count().label("in_flight"))
            .where(r.c.status.in_(("queued", "running")))
            .group_by(r.c.flow_version_id)
            .subquery()
        )
        query = (
            sa.select(
                v.c.flow,
                v.c.version,
                v.c.digest,
                v.c.created_at,
                sa.func.coalesce(in_flight.c.in_flight, 0).label("in_flight"),
            )
            .outerjoin(in_flight, in_flight.c.flow_version_id == v.c.id)
            .order_by(v.c.flow, v.c.version)
        )
        if flow:
            query = query.where(v.c.flow == flow)
        async with self.engine.connect() as conn:
            return [dict(row._mapping) for row in await conn.execute(query)]

    # -- reading ---------------------------------------------------------

    async def find_run(self, prefix: str) -> RunRecord:
        """A run by its id or an unambiguous prefix of at least six characters."""
        prefix = prefix.strip().lower()
        if len(prefix) >= 32:
            return await self.get_run(prefix)
        if len(prefix) < 6:
            raise errors.RunNotFoundError(
                f"run id {prefix!r} is too short: give at least 6 characters"
            )
        if any(c not in "0123456789abcdef" for c in prefix):
            raise errors.RunNotFoundError(
                f"{prefix!r} is not a run id: run ids are hexadecimal"
            )
        r = tables.runs
        async with self.engine.connect() as conn:
            ids = list(
                (
                    await conn.execute(
                        sa.select(r.c.id).where(r.c.id.like(prefix + "%")).limit(2)
                    )
                ).scalars()
            )
        if len(ids) != 1:
            found = "no run" if not ids else "more than one run"
            raise errors.RunNotFoundError(f"{found} matches {prefix!r}")
        return await self.get_run(ids[0])

    async def list_runs(
        self, *, flow: str | None = None, status: str | None = None, limit: int = 50
    ) -> list[RunRecord]:
        r = tables.runs
        query = sa.select(r).order_by(r.c.created_at.desc()).limit(limit)
        if flow:
            query = query.where(r.c.flow == flow)
        if status:
            query = query.where(r.c.status == status)
        async with self.engine.connect() as conn:
            return [records.run_record(row) for row in await conn.execute(query)]

    async def search_runs(
        self,
        *,
        flow: str | None = None,
        status: str | None = None,
        since: float | None = None,
        id_contains: str | None = None,
        limit: int = 50,
    ) -> list[RunRecord]:
        """Runs newest first, filtered by flow, status, creation time and run id text."""
        r = tables.runs
        query = sa.select(r).order_by(r.c.created_at.desc()).limit(limit)
        if flow:
            query = query.where(r.c.flow == flow)
        if status:
            query = query.where(r.c.status == status)
        if since is not None:
            query = query.where(r.c.created_at >= since)
        if id_contains:
            query = query.where(r.c.id.contains(id_contains.lower(), autoescape=True))
        async with self.engine.connect() as conn:
            return [records.run_record(row) for row in await conn.execute(query)]

    async def attempts(self, run_id: str) -> list[Attempt]:
        a = tables.step_attempts
        query = sa.select(a).where(a.c.run_id == run_id).order_by(a.c.id)
        async with self.engine.connect() as conn:
            return [records.attempt_record(row) for row in await conn.execute(query)]

    async def count_runs(self, *, status: str | None = None) -> int:
        r = tables.runs
        query = sa.select(sa.func.count()).select_from(r)
        if status:
            query = query.where(r.c.status == status)
        async with self.engine.connect() as conn:
            return int((await conn.execute(query)).scalar_one())
