"""Runs that wait: sleep and wait steps park a run as a row; signals wake it."""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa

from lobflows import errors
from lobflows.store import tables
from lobflows.store.base import (
    INSERT_ATTEMPT,
    StoreBase,
    lock_name,
    lock_run,
    update_run,
)


class SignalOps(StoreBase):
    """Waiting runs and the signals sent to them."""

    async def record_wait(
        self,
        *,
        run_id: str,
        step: str,
        until: float,
        signal: str | None = None,
        children: tuple[str, int] | None = None,
        first: bool,
    ) -> None:
        """Park a run at a waiting step until `until`, a named signal or a child run's end.

        The run holds no worker while it waits: it is a row with a due time. A
        signal that arrived before the wait, or more ended child runs than
        the step saw (`children`: their dedupe key prefix and that count), is
        seen here and wakes it at once.
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
            lock_run(conn, self.is_sqlite, run_id)
            pending = (
                signal is not None
                and _untaken_signal(conn, run_id, signal, step) is not None
            ) or (
                children is not None
                and _children_ended(conn, run_id, children[0]) > children[1]
            )
            if first:
                conn.execute(INSERT_ATTEMPT, row)
            update_run(
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

    async def wake(self, run_id: str) -> None:
        """Make a waiting run due now, so it looks again at what it waits for."""
        r = tables.runs

        def write(conn: sa.Connection) -> None:
            now = time.time()
            lock_run(conn, self.is_sqlite, run_id)
            statement = r.update().where(r.c.id == run_id, r.c.status == "waiting")
            conn.execute(statement.values(due_at=now, updated_at=now))

        await self._write(write)

    async def send_signal(self, run_id: str, name: str, payload: Any) -> None:
        """Deliver a signal to a run; a run waiting for signals wakes now.

        A finished run takes none: StoreError, and nothing is stored.
        """
        r = tables.runs

        def write(conn: sa.Connection) -> None:
            lock_run(conn, self.is_sqlite, run_id)
            status = conn.execute(
                sa.select(r.c.status).where(r.c.id == run_id)
            ).scalar()
            if status is None:
                raise errors.RunNotFoundError(
                    f"no run with id {run_id!r}", run_id=run_id
                )
            if status in ("succeeded", "failed"):
                raise errors.StoreError(
                    f"run {run_id} is {status}; it takes no signals"
                )
            insert_signal(conn, run_id, name, payload, time.time())

        await self._write(write)

    async def deliver_keyed_event(
        self, *, topic: str, key: str, event_id: str, data: Any
    ) -> list[str]:
        """Hand an event to the runs waiting for its topic and key, waking them;
        with none waiting, keep it for the first run that will."""
        payload = {"topic": topic, "key": key, "event_id": event_id, "data": data}

        def write(conn: sa.Connection) -> list[str]:
            now = time.time()
            lock_name(conn, self.is_sqlite, f"{topic}\n{key}")
            w = tables.event_waits
            waiting = list(
                conn.execute(
                    sa.select(w.c.run_id).where(w.c.topic == topic, w.c.key == key)
                ).scalars()
            )
            for run_id in waiting:
                insert_signal(conn, run_id, f"event:{topic}", payload, now)
            if not waiting:
                m = tables.event_mailbox
                seen = conn.execute(
                    sa.select(m.c.id).where(m.c.event_id == event_id)
                ).first()
                if seen is None:
                    conn.execute(
                        m.insert().values(
                            topic=topic,
                            key=key,
                            event_id=event_id,
                            data=payload,
                            received_at=now,
                        )
                    )
            return waiting

        return await self._write(write)

    async def await_event(
        self, *, run_id: str, step: str, topic: str, key: str
    ) -> None:
        """Register a run's wait for an event; an event that came early is
        handed over at once, as a signal the wait step then takes."""

        def write(conn: sa.Connection) -> None:
            now = time.time()
            lock_name(conn, self.is_sqlite, f"{topic}\n{key}")
            m = tables.event_mailbox
            early = conn.execute(
                sa.select(m.c.id, m.c.data)
                .where(m.c.topic == topic, m.c.key == key, m.c.taken_by_run.is_(None))
                .order_by(m.c.id)
                .limit(1)
            ).first()
            if early is not None:
                conn.execute(
                    m.update().where(m.c.id == early.id).values(taken_by_run=run_id)
                )
                insert_signal(conn, run_id, f"event:{topic}", early.data, now)
                return
            w = tables.event_waits
            registered = conn.execute(
                sa.select(w.c.id).where(w.c.run_id == run_id, w.c.step == step)
            ).first()
            if registered is None:
                conn.execute(
                    w.insert().values(
                        topic=topic, key=key, run_id=run_id, step=step, created_at=now
                    )
                )

        await self._write(write)

    async def end_event_wait(self, run_id: str, step: str) -> None:
        w = tables.event_waits
        await self._write(
            lambda conn: conn.execute(
                w.delete().where(w.c.run_id == run_id, w.c.step == step)
            ),
            wait=False,
        )


def insert_signal(
    conn: sa.Connection, run_id: str, name: str, payload: Any, now: float
) -> None:
    """A signal for a run; a run waiting for signals becomes due now."""
    conn.execute(
        tables.signals.insert().values(
            run_id=run_id, name=name, payload=payload, received_at=now
        )
    )
    r = tables.runs
    conn.execute(
        r.update()
        .where(r.c.id == run_id, r.c.status == "waiting")
        .values(due_at=now, updated_at=now)
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


def _children_ended(conn: sa.Connection, parent_run_id: str, key_prefix: str) -> int:
    r = tables.runs
    query = (
        sa.select(sa.func.count())
        .select_from(r)
        .where(
            r.c.parent_run_id == parent_run_id,
            r.c.dedupe_key.startswith(key_prefix, autoescape=True),
            r.c.status.in_(("succeeded", "failed")),
        )
    )
    return int(conn.execute(query).scalar_one())
