"""Human tasks: approvals and reviews that runs wait on, and who did what to them.

A task is a row, its history rows of `task_actions`. A decision is checked
and written in one transaction with the run locked; the decision that closes
a task also sends the run its signal (``task:<step>``) and wakes it, so a
task never closes without its run learning of it.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from lobflows import errors
from lobflows.store import tables
from lobflows.store.base import StoreBase, lock_run
from lobflows.store.signals import insert_signal

OPEN = "open"
DECISIONS = {"approval": ("approve", "reject"), "review": ("complete",)}


@dataclass(frozen=True)
class TaskAction:
    action: str
    by: str | None
    for_user: str | None
    data: Any
    comment: str | None
    at: float


@dataclass(frozen=True)
class TaskRecord:
    id: str
    run_id: str
    step: str
    flow: str
    kind: str
    title: str
    description: str | None
    status: str
    assignees: list[str]
    required: int
    requester: str | None
    form: list[dict[str, Any]]
    data: Any
    due_at: float | None
    created_at: float
    closed_at: float | None

    @property
    def is_open(self) -> bool:
        return self.status == OPEN


@dataclass(frozen=True)
class NewTask:
    """What the engine asks for; `rotations` are roles to pick one member of, in turn."""

    run_id: str
    step: str
    flow: str
    kind: str
    title: str
    description: str | None
    assignees: list[str]
    rotations: list[tuple[str, list[str]]]
    required: int
    requester: str | None
    form: list[dict[str, Any]]
    due_at: float | None


def signal_name(step: str) -> str:
    """The signal a run receives when the task of its step closes."""
    return f"task:{step}"


def task_outcome(task: TaskRecord, actions: list[TaskAction]) -> dict[str, Any]:
    """The output of a task step: outcome, the decisions taken, the form data."""
    return {
        "task_id": task.id,
        "outcome": task.status,
        "assignees": task.assignees,
        "decisions": [
            {
                "by": a.by,
                "for": a.for_user,
                "decision": a.action,
                "comment": a.comment,
                "at": a.at,
            }
            for a in actions
            if a.action in ("approve", "reject", "complete")
        ],
        "data": task.data or {},
    }


class TaskOps(StoreBase):
    """Tasks: opened by runs, decided by people, timed out by the engine."""

    async def open_task(self, new: NewTask) -> TaskRecord:
        """The task of a run's step; created the first time, with round-robin picks."""
        t = tables.tasks

        def write(conn: sa.Connection) -> str:
            existing = conn.execute(
                sa.select(t.c.id).where(t.c.run_id == new.run_id, t.c.step == new.step)
            ).scalar()
            if existing is not None:
                return existing
            assignees = list(new.assignees)
            for name, members in new.rotations:
                assignees.append(_next_in_turn(conn, name, members))
            task_id = uuid.uuid4().hex
            conn.execute(
                t.insert().values(
                    id=task_id,
                    run_id=new.run_id,
                    step=new.step,
                    flow=new.flow,
                    kind=new.kind,
                    title=new.title,
                    description=new.description,
                    status=OPEN,
                    assignees=list(dict.fromkeys(assignees)),
                    required=new.required,
                    requester=new.requester,
                    form=new.form,
                    due_at=new.due_at,
                    created_at=time.time(),
                )
            )
            return task_id

        task_id = await self._write(write)
        return await self.get_task(task_id)

    async def get_task(self, task_id: str) -> TaskRecord:
        t = tables.tasks
        async with self.engine.connect() as conn:
            row = (await conn.execute(sa.select(t).where(t.c.id == task_id))).first()
        if row is None:
            raise errors.TaskNotFoundError(f"no task with id {task_id!r}")
        return _task_record(row)

    async def find_task(self, prefix: str) -> TaskRecord:
        """A task by its id or an unambiguous prefix of at least six characters."""
        prefix = prefix.strip().lower()
        if len(prefix) < 6 or any(c not in "0123456789abcdef" for c in prefix):
            raise errors.TaskNotFoundError(
                f"{prefix!r} is not a task id: give at least 6 hexadecimal characters"
            )
        t = tables.tasks
        query = sa.select(t.c.id).where(t.c.id.like(prefix + "%")).limit(2)
        async with self.engine.connect() as conn:
            ids = list((await conn.execute(query)).scalars())
        if len(ids) != 1:
            found = "no task" if not ids else "more than one task"
            raise errors.TaskNotFoundError(f"{found} matches {prefix!r}")
        return await self.get_task(ids[0])

    async def task_of_step(self, run_id: str, step: str) -> TaskRecord | None:
        t = tables.tasks
        query = sa.select(t).where(t.c.run_id == run_id, t.c.step == step)
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else _task_record(row)

    async def task_actions(self, task_id: str) -> list[TaskAction]:
        a = tables.task_actions
        query = sa.select(a).where(a.c.task_id == task_id).order_by(a.c.id)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_action_record(row) for row in rows]

    async def list_tasks(
        self,
        *,
        status: str | None = OPEN,
        user: str | None = None,
        run_id: str | None = None,
        limit: int = 100,
    ) -> list[TaskRecord]:
        """Tasks, newest first; `user` keeps the ones they may act on (delegations included)."""
        t = tables.tasks
        query = sa.select(t).order_by(t.c.created_at.desc())
        if status is not None:
            query = query.where(t.c.status == status)
        if run_id is not None:
            query = query.where(t.c.run_id == run_id)
        if user is None:
            query = query.limit(limit)
        async with self.engine.connect() as conn:
            found = [_task_record(row) for row in (await conn.execute(query)).all()]
            if user is None:
                return found
            delegated = await _delegations_to(conn, user)
        mine = [
            task
            for task in found
            if user in task.assignees
            or any(a in task.assignees for a in delegated.get(task.id, ()))
        ]
        return mine[:limit]

    async def record_task_action(
        self,
        task_id: str,
        action: str,
        *,
        by: str | None = None,
        for_user: str | None = None,
        data: Any = None,
    ) -> None:
        """Note something done for a task (a notification sent, a reminder)."""

        def write(conn: sa.Connection) -> None:
            conn.execute(
                tables.task_actions.insert().values(
                    task_id=task_id,
                    action=action,
                    by=by,
                    for_user=for_user,
                    data=data,
                    at=time.time(),
                )
            )

        await self._write(write)

    async def check_decision(self, task: TaskRecord, *, by: str, decision: str) -> str:
        """Whom `by` would decide for, or DecisionRefusedError; `decide` checks again."""
        _check_kind(task, decision)
        actions = await self.task_actions(task.id)
        principal = _principal(task, actions, by.strip())
        _check_decision(task, actions, by.strip(), principal, decision)
        return principal

    async def decide(
        self,
        task_id: str,
        *,
        by: str,
        decision: str,
        data: dict[str, Any] | None = None,
        comment: str | None = None,
    ) -> TaskRecord:
        """Take a person's decision; the one that settles the task wakes its run.

        Refused (DecisionRefusedError) when the task is closed, `by` is not an
        assignee nor a delegate of one, the requester approves their own
        request, or the same assignee decides twice.
        """
        task = await self.get_task(task_id)
        by = by.strip()
        _check_kind(task, decision)

        def write(conn: sa.Connection) -> None:
            lock_run(conn, self.is_sqlite, task.run_id)
            current = _task_record(
                conn.execute(
                    sa.select(tables.tasks).where(tables.tasks.c.id == task.id)
                ).one()
            )
            actions = _actions(conn, task.id)
            principal = _principal(current, actions, by)
            _check_decision(current, actions, by, principal, decision)
            now = time.time()
            conn.execute(
                tables.task_actions.insert().values(
                    task_id=task.id,
                    action=decision,
                    by=by,
                    for_user=principal if principal != by else None,
                    data=data or None,
                    comment=comment,
                    at=now,
                )
            )
            approvals = 1 + sum(1 for a in actions if a.action == "approve")
            status = {
                "reject": "rejected",
                "complete": "completed",
                "approve": "approved" if approvals >= current.required else OPEN,
            }[decision]
            if status != OPEN:
                _close(conn, current, status, data, now)

        await self._write(write)
        return await self.get_task(task.id)

    async def delegate(self, task_id: str, *, by: str, to: str) -> TaskRecord:
        """Let `to` decide in place of the assignee `by`; a later delegation replaces it."""
        task = await self.get_task(task_id)
        by, to = by.strip(), to.strip()

        def write(conn: sa.Connection) -> None:
            lock_run(conn, self.is_sqlite, task.run_id)
            status = conn.execute(
                sa.select(tables.tasks.c.status).where(tables.tasks.c.id == task.id)
            ).scalar_one()
            if status != OPEN:
                raise errors.DecisionRefusedError(
                    f"task {task.id} is {status}; it cannot be delegated"
                )
            if by not in task.assignees:
                raise errors.DecisionRefusedError(
                    f"{by} is not an assignee of task {task.id}; assignees: {', '.join(task.assignees)}"
                )
            if not to or to == by:
                raise errors.DecisionRefusedError(
                    f"task {task.id}: delegate to someone other than {by}"
                )
            if task.kind == "approval" and to == task.requester:
                raise errors.DecisionRefusedError(
                    f"task {task.id}: {to} made the request and cannot approve it"
                )
            conn.execute(
                tables.task_actions.insert().values(
                    task_id=task.id,
                    action="delegate",
                    by=by,
                    for_user=to,
                    at=time.time(),
                )
            )

        await self._write(write)
        return task

    async def time_out_task(self, task_id: str) -> bool:
        """Close an open task whose deadline passed; False if a decision came first."""

        def write(conn: sa.Connection) -> bool:
            task = _task_record(
                conn.execute(
                    sa.select(tables.tasks).where(tables.tasks.c.id == task_id)
                ).one()
            )
            lock_run(conn, self.is_sqlite, task.run_id)
            if not task.is_open:
                return False
            now = time.time()
            conn.execute(
                tables.task_actions.insert().values(
                    task_id=task_id, action="timeout", at=now
                )
            )
            conn.execute(
                tables.tasks.update()
                .where(tables.tasks.c.id == task_id)
                .values(status="timed_out", closed_at=now)
            )
            return True

        return bool(await self._write(write))


def _close(
    conn: sa.Connection,
    task: TaskRecord,
    status: str,
    data: dict[str, Any] | None,
    now: float,
) -> None:
    t = tables.tasks
    conn.execute(
        t.update()
        .where(t.c.id == task.id)
        .values(status=status, data=data or None, closed_at=now)
    )
    payload = {"task_id": task.id, "outcome": status}
    insert_signal(conn, task.run_id, signal_name(task.step), payload, now)


def _check_kind(task: TaskRecord, decision: str) -> None:
    if decision not in DECISIONS[task.kind]:
        allowed = " or ".join(DECISIONS[task.kind])
        article = "an" if task.kind[:1] in "aeiou" else "a"
        raise errors.InvalidDecisionError(
            f"task {task.id}: {article} {task.kind} takes {allowed}, not {decision!r}"
        )


def _principal(task: TaskRecord, actions: list[TaskAction], by: str) -> str:
    """Whom `by` decides for: themselves as an assignee, or the assignee who delegated to them."""
    if by in task.assignees:
        return by
    delegates: dict[str, str] = {}
    for a in actions:
        if a.action == "delegate" and a.by is not None and a.for_user is not None:
            delegates[a.by] = a.for_user
    for assignee, delegate in delegates.items():
        if delegate == by and assignee in task.assignees:
            return assignee
    raise errors.DecisionRefusedError(
        f"{by} is not an assignee of task {task.id} nor a delegate of one; "
        f"assignees: {', '.join(task.assignees)}"
    )


def _check_decision(
    task: TaskRecord,
    actions: list[TaskAction],
    by: str,
    principal: str,
    decision: str,
) -> None:
    if not task.is_open:
        raise errors.DecisionRefusedError(
            f"task {task.id} is already {task.status}; it takes no more decisions"
        )
    if (
        task.kind == "approval"
        and decision == "approve"
        and task.requester in (by, principal)
    ):
        raise errors.DecisionRefusedError(
            f"task {task.id}: {task.requester} made the request and cannot approve it"
        )
    decided = {
        a.for_user or a.by
        for a in actions
        if a.action in ("approve", "reject", "complete")
    }
    if principal in decided:
        raise errors.DecisionRefusedError(
            f"task {task.id}: {principal} has already decided"
        )


def _next_in_turn(conn: sa.Connection, name: str, members: list[str]) -> str:
    """The member whose turn it is in a role; each pick moves the turn on."""
    r = tables.rotations
    query = sa.select(r.c.position).where(r.c.name == name)
    position = conn.execute(query.with_for_update()).scalar()
    if position is None:
        conn.execute(r.insert().values(name=name, position=1))
        position = 0
    else:
        conn.execute(r.update().where(r.c.name == name).values(position=position + 1))
    return members[position % len(members)]


def _actions(conn: sa.Connection, task_id: str) -> list[TaskAction]:
    a = tables.task_actions
    query = sa.select(a).where(a.c.task_id == task_id).order_by(a.c.id)
    return [_action_record(row) for row in conn.execute(query).all()]


async def _delegations_to(conn: Any, user: str) -> dict[str, list[str]]:
    """Task id to the assignees who delegated it to `user`."""
    a = tables.task_actions
    query = sa.select(a.c.task_id, a.c.by).where(
        a.c.action == "delegate", a.c.for_user == user
    )
    found: dict[str, list[str]] = {}
    for task_id, by in (await conn.execute(query)).all():
        found.setdefault(task_id, []).append(by)
    return found


def _task_record(row: Any) -> TaskRecord:
    values = {f.name: row._mapping[f.name] for f in dataclasses.fields(TaskRecord)}
    values["assignees"] = list(values["assignees"] or [])
    values["form"] = list(values["form"] or [])
    return TaskRecord(**values)


def _action_record(row: Any) -> TaskAction:
    return TaskAction(
        **{f.name: row._mapping[f.name] for f in dataclasses.fields(TaskAction)}
    )
