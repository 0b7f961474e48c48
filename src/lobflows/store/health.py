"""Connection health checks, the figures health is judged by, and alert states.

Everything the monitor decides is read from here, so every process (and
``lobflows health`` in another one) sees the same health. Each query reads
one time range through an index: today's runs by ``created_at``, the
window's finished runs by ``finished_at``, the window's step attempts by
their ``finished_at``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic.script import ScriptDirectory
from sqlalchemy.dialects import postgresql, sqlite

from lobflows.store import tables
from lobflows.store.base import StoreBase

_MIGRATIONS = str(Path(__file__).with_name("migrations"))
# Rows read for latency percentiles; the newest are kept past it.
MAX_SAMPLE_ROWS = 20_000


@dataclass(frozen=True)
class CheckRecord:
    """The latest scheduled check of one connection."""

    connection: str
    ok: bool | None
    message: str | None
    checked_at: float | None
    failures: int
    failing_since: float | None
    last_ok_at: float | None
    next_due_at: float


@dataclass(frozen=True)
class AlertState:
    """Where one problem of one alert rule stands: firing or resolved."""

    key: str
    subject: str
    name: str
    state: str
    status: str
    reasons: list[str]
    since: float
    last_sent_at: float | None
    sent_count: int
    version: int


@dataclass(frozen=True)
class ErrorRecord:
    """A failed step attempt, newest first in listings."""

    at: float
    flow: str
    run_id: str
    step: str
    error: str


class HealthOps(StoreBase):
    """Connection health checks and the state of alerts."""

    # -- scheduled checks ----------------------------------------------

    async def claim_checks(
        self,
        connections: list[str],
        *,
        owner: str,
        lease_seconds: float,
        now: float | None = None,
        due_only: bool = True,
    ) -> list[str]:
        """Claim the connections whose check is due (all, without `due_only`);
        a claimed check is run by one process only."""
        h = tables.health_checks

        def write(conn: sa.Connection) -> list[str]:
            at = time.time() if now is None else now
            if not connections:
                return []
            rows = [{"connection": c, "next_due_at": at} for c in connections]
            conn.execute(self._insert_ignore(h, ["connection"]), rows)
            due = sa.and_(
                h.c.connection.in_(connections),
                h.c.next_due_at <= at if due_only else sa.true(),
                sa.or_(h.c.claimed_until.is_(None), h.c.claimed_until < at),
            )
            until = at + lease_seconds
            conn.execute(
                h.update().where(due).values(claimed_by=owner, claimed_until=until)
            )
            claimed = sa.select(h.c.connection).where(
                h.c.claimed_by == owner, h.c.claimed_until == until
            )
            return sorted(conn.execute(claimed).scalars())

        return await self._write(write) or []

    async def record_check(
        self,
        connection: str,
        *,
        ok: bool,
        message: str,
        next_due_at: float,
        now: float | None = None,
    ) -> None:
        """Keep a check's outcome; failures in a row are counted from the first."""
        h = tables.health_checks
        at = time.time() if now is None else now
        values: dict[str, Any] = {
            "ok": ok,
            "message": message[:2000],
            "checked_at": at,
            "next_due_at": next_due_at,
            "claimed_by": None,
            "claimed_until": None,
        }
        if ok:
            values |= {"failures": 0, "failing_since": None, "last_ok_at": at}
        else:
            values |= {
                "failures": h.c.failures + 1,
                "failing_since": sa.func.coalesce(h.c.failing_since, at),
            }
        statement = h.update().where(h.c.connection == connection).values(**values)
        await self._write(lambda conn: conn.execute(statement))

    async def check_records(self) -> dict[str, CheckRecord]:
        """The latest check of every connection checked so far."""
        h = tables.health_checks
        query = sa.select(
            h.c.connection,
            h.c.ok,
            h.c.message,
            h.c.checked_at,
            h.c.failures,
            h.c.failing_since,
            h.c.last_ok_at,
            h.c.next_due_at,
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return {row.connection: CheckRecord(**row._mapping) for row in rows}

    # -- figures -------------------------------------------------------

    async def run_counts_since(self, since: float) -> list[tuple[str, str, int]]:
        """(flow, status, runs) of runs created since then."""
        r = tables.runs
        query = (
            sa.select(r.c.flow, r.c.status, sa.func.count())
            .where(r.c.created_at >= since)
            .group_by(r.c.flow, r.c.status)
        )
        return await self._rows(query)

    async def finished_runs_since(
        self, since: float
    ) -> list[tuple[str, str, float, float]]:
        """(flow, status, duration, finished_at) of runs that ended since then."""
        r = tables.runs
        query = (
            sa.select(
                r.c.flow,
                r.c.status,
                (r.c.finished_at - r.c.created_at).label("duration"),
                r.c.finished_at,
            )
            .where(r.c.finished_at >= since, r.c.status.in_(("succeeded", "failed")))
            .order_by(r.c.finished_at.desc())
            .limit(MAX_SAMPLE_ROWS)
        )
        return await self._rows(query)

    async def attempt_counts_since(
        self, since: float
    ) -> list[tuple[str, str, str, int]]:
        """(flow, step, status, attempts) of step attempts that ended since then."""
        a, r = tables.step_attempts, tables.runs
        query = (
            sa.select(r.c.flow, a.c.step, a.c.status, sa.func.count())
            .select_from(a.join(r, r.c.id == a.c.run_id))
            .where(a.c.finished_at >= since)
            .group_by(r.c.flow, a.c.step, a.c.status)
        )
        return await self._rows(query)

    async def attempts_since(
        self, since: float, *, steps: set[str] | None = None
    ) -> list[tuple[str, str, str, float, float, bool | None]]:
        """(flow, step, status, duration, finished_at, retryable) of attempts
        ended since then."""
        a, r = tables.step_attempts, tables.runs
        query = (
            sa.select(
                r.c.flow,
                a.c.step,
                a.c.status,
                (a.c.finished_at - a.c.started_at).label("duration"),
                a.c.finished_at,
                a.c.retryable,
            )
            .select_from(a.join(r, r.c.id == a.c.run_id))
            .where(a.c.finished_at >= since)
            .order_by(a.c.finished_at.desc())
            .limit(MAX_SAMPLE_ROWS)
        )
        if steps is not None:
            query = query.where(a.c.step.in_(sorted(steps)))
        return await self._rows(query)

    async def backlog(self, now: float | None = None) -> list[tuple[str, str, int]]:
        """(flow, current step, runs) of runs due now that no worker has taken."""
        r = tables.runs
        at = time.time() if now is None else now
        query = (
            sa.select(r.c.flow, r.c.current_step, sa.func.count())
            .where(r.c.status.in_(("queued", "waiting")), r.c.due_at <= at)
            .group_by(r.c.flow, r.c.current_step)
        )
        return await self._rows(query)

    async def flow_times(
        self, flows: list[str]
    ) -> dict[str, tuple[float | None, float | None]]:
        """Each flow's newest run start and newest success, one index probe each."""
        r = tables.runs
        found: dict[str, tuple[float | None, float | None]] = {}
        async with self.engine.connect() as conn:
            for flow in flows:
                last_run = sa.select(sa.func.max(r.c.created_at)).where(
                    r.c.flow == flow
                )
                last_success = sa.select(sa.func.max(r.c.finished_at)).where(
                    r.c.flow == flow, r.c.status == "succeeded"
                )
                found[flow] = (
                    (await conn.execute(last_run)).scalar(),
                    (await conn.execute(last_success)).scalar(),
                )
        return found

    async def first_registered(self) -> dict[str, float]:
        """When each flow's first version was stored."""
        v = tables.flow_versions
        query = sa.select(v.c.flow, sa.func.min(v.c.created_at)).group_by(v.c.flow)
        return {flow: at for flow, at in await self._rows(query)}

    async def recent_errors(
        self, since: float, *, limit: int = 20
    ) -> list[ErrorRecord]:
        """Failed attempts since then, newest first."""
        a, r = tables.step_attempts, tables.runs
        query = (
            sa.select(a.c.finished_at, r.c.flow, a.c.run_id, a.c.step, a.c.error)
            .select_from(a.join(r, r.c.id == a.c.run_id))
            .where(a.c.finished_at >= since, a.c.status.in_(("failed", "dead")))
            .order_by(a.c.finished_at.desc())
            .limit(limit)
        )
        return [
            ErrorRecord(at, flow, run_id, step, error or "")
            for at, flow, run_id, step, error in await self._rows(query)
        ]

    async def open_dead_letters(self) -> dict[str, tuple[int, float, str, str]]:
        """Per flow: open dead letters, and the newest one's time, step and error."""
        d = tables.dead_letters
        counts = (
            sa.select(
                d.c.flow,
                sa.func.count().label("open"),
                sa.func.max(d.c.id).label("newest"),
            )
            .where(d.c.status == "open")
            .group_by(d.c.flow)
            .subquery()
        )
        query = sa.select(
            counts.c.flow, counts.c.open, d.c.created_at, d.c.step, d.c.error
        ).join(d, d.c.id == counts.c.newest)
        return {
            flow: (count, at, step, error or "")
            for flow, count, at, step, error in await self._rows(query)
        }

    # -- alert states --------------------------------------------------

    async def alert_states(self) -> dict[str, AlertState]:
        s = tables.alert_states
        query = sa.select(
            s.c.key,
            s.c.subject,
            s.c.name,
            s.c.state,
            s.c.status,
            s.c.reasons,
            s.c.since,
            s.c.last_sent_at,
            s.c.sent_count,
            s.c.version,
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return {
            row.key: AlertState(**{**row._mapping, "reasons": list(row.reasons or [])})
            for row in rows
        }

    async def save_alert_state(
        self, state: AlertState, *, expected_version: int | None
    ) -> bool:
        """Store a new alert state if nobody changed it since it was read.

        `expected_version` is the version read (None: there was no row). The
        process whose write lands is the one that sends; the others see
        False and send nothing.
        """
        s = tables.alert_states
        values = {
            "key": state.key,
            "subject": state.subject,
            "name": state.name,
            "state": state.state,
            "status": state.status,
            "reasons": state.reasons,
            "since": state.since,
            "last_sent_at": state.last_sent_at,
            "sent_count": state.sent_count,
            "version": state.version,
            "updated_at": time.time(),
        }

        def write(conn: sa.Connection) -> bool:
            if expected_version is None:
                # RETURNING says whether the row went in; rowcount of an
                # ignored insert differs between drivers.
                insert = self._insert_ignore(s, ["key"]).values(**values)
                return conn.execute(insert.returning(s.c.key)).first() is not None
            statement = (
                s.update()
                .where(s.c.key == state.key, s.c.version == expected_version)
                .values(**values)
            )
            return conn.execute(statement).rowcount == 1

        return bool(await self._write(write))

    # -- readiness -----------------------------------------------------

    async def schema_problem(self) -> str | None:
        """None when the store answers and its schema is the newest; else why not."""
        head = ScriptDirectory(_MIGRATIONS).get_current_head()
        try:
            async with self.engine.connect() as conn:
                found = (
                    await conn.exec_driver_sql(
                        "SELECT version_num FROM alembic_version"
                    )
                ).scalar()
        except sa.exc.SQLAlchemyError as exc:
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
            return f"the run store does not answer: {reason[0] if reason else 'error'}"
        if found != head:
            return f"the run store schema is at {found or 'nothing'}, expected {head}"
        return None

    # -- plumbing ------------------------------------------------------

    def _insert_ignore(self, table: sa.Table, keys: list[str]) -> Any:
        dialect = sqlite if self.is_sqlite else postgresql
        return dialect.insert(table).on_conflict_do_nothing(index_elements=keys)

    async def _rows(self, query: Any) -> list[Any]:
        async with self.engine.connect() as conn:
            return [tuple(row) for row in await conn.execute(query)]
