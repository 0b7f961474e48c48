"""The run store's operations.

Writes go through one group writer per process (see `writer`): each write is
a function of a connection, committed together with the writes of other runs
waiting at the same moment. Reads use a pool of their own; SQLite's WAL mode
lets them run beside the writer and beside other processes. Workers claim due
runs with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.exc import IntegrityError

from lobflows import errors
from lobflows.store import engines, records, tables
from lobflows.store.records import (
    DEFAULT_STEP_DATA_BUDGET_BYTES,
    Attempt,
    DeadLetter,
    RunRecord,
    cut_to_budget,
    new_run_id,
)
from lobflows.store.writer import GroupWriter

T = TypeVar("T")
_MIGRATIONS = str(Path(__file__).with_name("migrations"))


class RunStore:
    """Durable state of every run, shared by all workers of one installation."""

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
            "lease_owner": lease_owner,
            "lease_expires_at": now + lease_seconds if lease_owner else None,
            "created_at": now,
            "updated_at": now,
        }
        try:
            await self._write(lambda conn: conn.execute(_INSERT_RUN, values))
        except IntegrityError:
            if dedupe_key is None:
                raise
            existing = await self._run_by_dedupe_key(flow, dedupe_key)
            if existing is None:
                raise
            return await self.get_run(existing), False
        record = {name: values.get(name) for name in RunRecord.__dataclass_fields__}
        return RunRecord(**{**record, "current_attempts": 0}), True

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
    ) -> None:
        """Journal a succeeded step; the run's attempt counter starts over.

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
    ) -> None:
        """Journal a failed attempt and put the run back in the queue for later."""
        now = time.time()
        attempt_row = self._attempt_row(
            run_id=run_id,
            step=step,
            attempt=attempt,
            status="failed",
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
        await self._write(lambda conn: _update_run(conn, run_id, run_values), wait=wait)

    def _attempt_row(self, **values: Any) -> dict[str, Any]:
        values["input"] = cut_to_budget(
            values.get("input"), self.step_data_budget_bytes
        )
        values["output"] = cut_to_budget(
            values.get("output"), self.step_data_budget_bytes
        )
        return values

    @staticmethod
    def _journal(
        conn: sa.Connection,
        attempt_row: dict[str, Any],
        run_id: str,
        run_values: dict[str, Any],
    ) -> None:
        conn.execute(_INSERT_ATTEMPT, attempt_row)
        _update_run(conn, run_id, run_values)

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

    # -- waiting -----------------------------------------------------------

    async def record_wait(
        self,
        *,
        run_id: str,
        step: str,
        until: float,
        signal: str | None = None,
        first: bool,
    ) -> None:
        """Park a run at a sleep or wait step until `until` (or a signal, if named).

        The run holds no worker while it waits: it is a row with a due time. A
        signal that arrived before the wait is seen here and wakes it at once.
        """
        now = time.time()
        row = self._attempt_row(
            run_id=run_id,
            step=step,
            attempt=1,
            status="waiting",
            output={"until": until, "signal": signal},
            started_at=now,
            finished_at=now,
        )

        def write(conn: sa.Connection) -> None:
            _lock_run(conn, self.is_sqlite, run_id)
            pending = (
                signal is not None
                and _untaken_signal(conn, run_id, signal, step) is not None
            )
            if first:
                conn.execute(_INSERT_ATTEMPT, row)
            _update_run(
                conn,
                run_id,
                {
                    "status": "queued" if pending else "waiting",
                    "current_step": step,
                    "due_at": now if pending else until,
                    "lease_owner": None,
                    "lease_expires_at": None,
                    "updated_at": now,
                },
            )

        await self._write(write)

    async def waiting_record(self, run_id: str, step: str) -> dict[str, Any] | None:
        """What a sleep or wait step stored when it began waiting: until and signal."""
        a = tables.step_attempts
        query = (
            sa.select(a.c.output)
            .where(a.c.run_id == run_id, a.c.step == step, a.c.status == "waiting")
            .order_by(a.c.id.desc())
            .limit(1)
        )
        async with self.engine.connect() as conn:
            return (await conn.execute(query)).scalar()

    async def take_signal(
        self, *, run_id: str, name: str, step: str
    ) -> dict[str, Any] | None:
        """The oldest signal of that name not taken by another step; it becomes this step's."""
        s = tables.signals

        def write(conn: sa.Connection) -> dict[str, Any] | None:
            row = _untaken_signal(conn, run_id, name, step)
            if row is None:
                return None
            conn.execute(s.update().where(s.c.id == row.id).values(taken_by_step=step))
            return {
                "signal": name,
                "payload": row.payload,
                "received_at": row.received_at,
            }

        return await self._write(write)

    async def send_signal(self, run_id: str, name: str, payload: Any) -> RunRecord:
        """Deliver a signal to a run; a run waiting for signals wakes now."""
        run = await self.get_run(run_id)
        if run.is_terminal:
            raise errors.StoreError(
                f"run {run_id} is {run.status}; it takes no signals"
            )
        r = tables.runs

        def write(conn: sa.Connection) -> None:
            now = time.time()
            _lock_run(conn, self.is_sqlite, run_id)
            conn.execute(
                tables.signals.insert().values(
                    run_id=run_id, name=name, payload=payload, received_at=now
                )
            )
            conn.execute(
                r.update()
                .where(r.c.id == run_id, r.c.status == "waiting")
                .values(due_at=now, updated_at=now)
            )

        await self._write(write)
        return run

    # -- schedules -------------------------------------------------------

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

    # -- reading ---------------------------------------------------------

    async def get_run(self, run_id: str) -> RunRecord:
        r = tables.runs
        async with self.engine.connect() as conn:
            row = (await conn.execute(sa.select(r).where(r.c.id == run_id))).first()
        if row is None:
            raise errors.RunNotFoundError(f"no run with id {run_id!r}", run_id=run_id)
        return records.run_record(row)

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

    # -- dead letters ----------------------------------------------------

    async def dead_letters(
        self, *, status: str | None = "open", limit: int = 100
    ) -> list[DeadLetter]:
        d = tables.dead_letters
        query = sa.select(d).order_by(d.c.id.desc()).limit(limit)
        if status:
            query = query.where(d.c.status == status)
        async with self.engine.connect() as conn:
            return [DeadLetter(**row._mapping) for row in await conn.execute(query)]

    async def dead_letter(self, dead_letter_id: int) -> DeadLetter:
        d = tables.dead_letters
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(sa.select(d).where(d.c.id == dead_letter_id))
            ).first()
        if row is None:
            raise errors.RunNotFoundError(f"no dead letter with id {dead_letter_id}")
        return DeadLetter(**row._mapping)

    async def replay_dead_letter(
        self,
        dead_letter_id: int,
        *,
        corrected_input: Any = None,
        corrected_run_input: Any = None,
    ) -> str:
        """Queue the run again from its failed step.

        `corrected_input` replaces the failed step's input; `corrected_run_input`
        replaces the run's input (the trigger payload) that every step reads.
        Only an open dead letter can be replayed, once.
        """
        letter = await self.dead_letter(dead_letter_id)
        run = await self.get_run(letter.run_id)
        overrides = dict(run.overrides or {})
        if corrected_input is not None:
            overrides[letter.step] = corrected_input
        run_values: dict[str, Any] = {}
        if corrected_run_input is not None:
            run_values["input"] = corrected_run_input
        d = tables.dead_letters

        def write(conn: sa.Connection) -> None:
            now = time.time()
            claimed = conn.execute(
                d.update()
                .where(d.c.id == dead_letter_id, d.c.status == "open")
                .values(status="replayed", resolved_at=now)
            )
            if claimed.rowcount != 1:
                raise errors.StoreError(
                    f"dead letter {dead_letter_id} is {letter.status}, not open"
                )
            conn.execute(
                tables.runs.update()
                .where(tables.runs.c.id == letter.run_id)
                .values(
                    status="queued",
                    error=None,
                    overrides=overrides or None,
                    current_attempts=0,
                    due_at=now,
                    finished_at=None,
                    updated_at=now,
                    **run_values,
                )
            )

        await self._write(write)
        return letter.run_id

    async def discard_dead_letter(self, dead_letter_id: int) -> None:
        letter = await self.dead_letter(dead_letter_id)
        d = tables.dead_letters
        statement = d.update().where(d.c.id == dead_letter_id, d.c.status == "open")
        discarded = await self._write(
            lambda conn: (
                conn.execute(
                    statement.values(status="discarded", resolved_at=time.time())
                ).rowcount
            )
        )
        if discarded != 1:
            raise errors.StoreError(
                f"dead letter {dead_letter_id} is {letter.status}, not open"
            )

    # -- retention -------------------------------------------------------

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


# Hot statements are built once; their values travel as parameters, so each
# execution hits SQLAlchemy's compiled cache without building a statement.
_INSERT_RUN = tables.runs.insert()
_INSERT_ATTEMPT = tables.step_attempts.insert()
_UPDATE_RUN = tables.runs.update().where(tables.runs.c.id == sa.bindparam("run_key"))


def _lock_run(conn: sa.Connection, is_sqlite: bool, run_id: str) -> None:
    # Waits and signals for one run take turns; SQLite's write lock already
    # makes them, PostgreSQL needs the row lock.
    if not is_sqlite:
        conn.execute(
            sa.select(tables.runs.c.id)
            .where(tables.runs.c.id == run_id)
            .with_for_update()
        )


def _untaken_signal(conn: sa.Connection, run_id: str, name: str, step: str) -> Any:
    s = tables.signals
    query = (
        sa.select(s.c.id, s.c.payload, s.c.received_at)
        .where(
            s.c.run_id == run_id,
            s.c.name == name,
            sa.or_(s.c.taken_by_step.is_(None), s.c.taken_by_step == step),
        )
        .order_by(s.c.id)
        .limit(1)
    )
    return conn.execute(query).first()


def _update_run(conn: sa.Connection, run_id: str, values: dict[str, Any]) -> None:
    conn.execute(_UPDATE_RUN, {"run_key": run_id, **values})


def _upgrade(connection: sa.Connection) -> None:
    config = Config()
    config.set_main_option("script_location", _MIGRATIONS)
    config.attributes["connection"] = connection
    command.upgrade(config, "head")
