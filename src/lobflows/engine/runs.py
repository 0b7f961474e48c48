"""Executing runs: one step after another, each journaled before the next begins.

A run's progress lives in the journal (the step attempts in the run store),
not in memory. Executing a run replays the journal: steps that succeeded
contribute their stored output and are not called again; the first step
without a success is executed. So a run resumed after a crash, a retry or a
replay from the dead letter queue continues where it stopped.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from lobflows import errors
from lobflows.connectors import base as connectors
from lobflows.engine import events, tasks
from lobflows.engine import retry as retry_policy
from lobflows.engine.clock import Clock, SystemClock
from lobflows.secrets import redactor
from lobflows.spec import models
from lobflows.spec.loader import LoadedFlow, Project
from lobflows.spec.mappings import SENSITIVE
from lobflows.spec.models import COMPENSATION_STEP, step_kind
from lobflows.store import RunRecord, RunStore, records
from lobflows.store.tasks import NewTask, TaskRecord, signal_name, task_outcome
from lobflows.transform import mapping, templates, validation
from lobflows.transform.mapper import Mapper, RecordRejected, map_records

log = logging.getLogger(__name__)
# Due time of a wait with no timeout: it wakes by signal only.
FAR_FUTURE = 32503680000.0  # 3000-01-01


@dataclass(frozen=True)
class StepOutcome:
    """How a run left the engine: succeeded, queued for a retry, failed
    (dead-lettered), or released to another worker at shutdown."""

    status: str
    next_attempt_at: float | None = None


class _Stop(Exception):
    """Internal: the run cannot go on in this pass (retry scheduled or dead letter)."""

    def __init__(self, outcome: StepOutcome) -> None:
        self.outcome = outcome


@dataclass
class _Pass:
    """One pass of execution over a run: its record, flow and growing context."""

    run: RunRecord
    flow: models.Flow
    completed: dict[str, Any]
    context: dict[str, Any] = field(default_factory=dict)
    # Failed attempts so far per step (the attempt count of its next try).
    failures: dict[str, int] = field(default_factory=dict)
    # Inside parallel branches: failures wait here to be settled together.
    deferred: list[_Failure] | None = None
    # In the undo phase: completed steps are being undone after a failure.
    compensating: bool = False
    # Mapping steps: which rule made each field, journaled with the step.
    traces: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _Failure:
    """A failed attempt of a step, and when it is tried again (None: never)."""

    step: str
    attempt: int
    input: Any
    error: str
    retryable: bool
    started_at: float
    next_attempt_at: float | None


class Engine:
    """Starts runs and executes them against the run store and the connections."""

    def __init__(
        self,
        *,
        store: RunStore,
        project: Project,
        connections: dict[str, connectors.Connector],
        owner: str,
        lease_seconds: float = 30.0,
        clock: Clock | None = None,
        links: tasks.TaskLinks | None = None,
    ) -> None:
        self.store = store
        self.project = project
        self.connections = connections
        self.owner = owner
        self.lease_seconds = lease_seconds
        self.clock = clock or SystemClock()
        self.links = links or tasks.TaskLinks(
            public_url="http://127.0.0.1:8080", key=None
        )
        self._versions: dict[str, int] = {}
        self._flows_by_version: dict[int, models.Flow] = {}
        self._mappers: dict[str, Mapper] = {}
        self._responses: dict[str, asyncio.Future[Any]] = {}
        # Called with a time at which some run becomes due (a retry, a child
        # run, a woken parent), so a local worker looks then instead of polling.
        self.on_due: list[Any] = []
        # Set when the process is shutting down: no step starts after that.
        self.is_stopping = False

    def notify_due(self) -> None:
        """Tell a local worker that a run became due now (a signal, a decision,
        a child run, an event)."""
        for callback in self.on_due:
            callback(self.clock.now())

    async def register_flows(self) -> None:
        """Store the current version of every flow; unchanged flows keep their version."""
        for loaded in self.project.flows.values():
            version_id, version = await self.store.register_flow_version(
                flow=loaded.name, digest=loaded.digest, definition=loaded.document
            )
            self._versions[loaded.name] = version_id
            self._flows_by_version[version_id] = loaded.spec
            log.debug(
                "Flow loaded",
                extra={"event": "flow_loaded", "flow": loaded.name, "version": version},
            )

    def flow(self, name: str) -> LoadedFlow:
        try:
            return self.project.flows[name]
        except KeyError:
            known = ", ".join(sorted(self.project.flows)) or "none"
            raise errors.RunNotFoundError(
                f"no flow named {name!r}; loaded flows: {known}"
            ) from None

    async def start_run(
        self,
        flow: str,
        *,
        input: Any,
        trigger: str,
        trigger_data: Any = None,
        dedupe_key: str | None = None,
        claim: bool = False,
        parent_run_id: str | None = None,
    ) -> tuple[RunRecord, bool]:
        """Store a new run (durably, before returning); a seen dedupe key gives the original run."""
        self.flow(flow)
        run, created = await self.store.create_run(
            flow=flow,
            flow_version_id=self._versions[flow],
            input=input,
            trigger=trigger,
            trigger_data=trigger_data,
            dedupe_key=dedupe_key,
            lease_owner=self.owner if claim else None,
            lease_seconds=self.lease_seconds,
            due_at=self.clock.now(),
            parent_run_id=parent_run_id,
        )
        if created:
            log.info(
                "Run started",
                extra={
                    "event": "run_started",
                    "run_id": run.id,
                    "flow": flow,
                    "trigger": trigger,
                },
            )
        else:
            log.info(
                "Duplicate trigger resolved to its run",
                extra={"event": "run_deduplicated", "run_id": run.id, "flow": flow},
            )
        return run, created

    # -- synchronous replies --------------------------------------------

    def expect_response(self, run_id: str) -> asyncio.Future[Any]:
        future = self._responses.get(run_id)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._responses[run_id] = future
        return future

    def forget_response(self, run_id: str) -> None:
        self._responses.pop(run_id, None)

    def _answer(self, run_id: str, response: Any) -> None:
        future = self._responses.pop(run_id, None)
        if future is not None and not future.done():
            future.set_result(response)

    # -- execution ------------------------------------------------------

    async def execute(self, run: RunRecord, *, fresh: bool = False) -> StepOutcome:
        """Run the steps that have not succeeded yet, until the end, a retry or a dead letter.

        `fresh` says the run was just created here, so its journal is empty
        and need not be read.
        """
        flow = await self._flow_of(run)
        completed, failures = (
            ({}, {}) if fresh else await self.store.journal_state(run.id)
        )
        context = {
            "input": run.input,
            "trigger": run.trigger_data or {},
            "steps": dict(completed),
            "run": {
                "id": run.id,
                "flow": run.flow,
                "started_at": tasks.iso_time(run.created_at),
            },
        }
        state = _Pass(
            run=run, flow=flow, completed=completed, context=context, failures=failures
        )
        if completed:
            log.info(
                "Run resumed",
                extra={
                    "event": "run_resumed",
                    "run_id": run.id,
                    "flow": run.flow,
                    "completed_steps": len(completed),
                },
            )
        try:
            if COMPENSATION_STEP in completed:
                raise await self._compensate(state)
            await self._run_block(state, flow.steps)
        except _Stop as stop:
            if stop.outcome.status == "failed":
                self._answer(run.id, None)
                await self._wake_parent(run)
            return stop.outcome
        await self.store.finish_run(run.id, wait=False)
        self._answer(run.id, None)
        await self._wake_parent(run)
        log.info(
            "Run succeeded",
            extra={
                "event": "run_succeeded",
                "run_id": run.id,
                "flow": run.flow,
                "seconds": round(time.time() - run.created_at, 4),
            },
        )
        return StepOutcome("succeeded")

    async def _wake_parent(self, run: RunRecord) -> None:
        if run.parent_run_id is not None:
            await self.store.wake(run.parent_run_id)
            self.notify_due()

    async def _flow_of(self, run: RunRecord) -> models.Flow:
        # A run keeps the flow version it started with, even after a redeploy.
        flow = self._flows_by_version.get(run.flow_version_id)
        if flow is None:
            definition = await self.store.flow_definition(run.flow_version_id)
            flow = models.Flow.model_validate(definition)
            self._flows_by_version[run.flow_version_id] = flow
        return flow

    async def _run_block(self, state: _Pass, steps: list[Any]) -> None:
        for step in steps:
            if step.id in state.completed:
                await self._run_block(
                    state, self._chosen_block(step, state.completed[step.id])
                )
                continue
            if self.is_stopping:
                # Between steps is the one safe place to let go of a run: the
                # journal says exactly where the next worker resumes.
                raise _Stop(StepOutcome("released"))
            if isinstance(step, models.SubflowStep):
                output = await self._run_subflow_step(state, step)
            elif isinstance(step, models.ForeachStep):
                output = await self._run_foreach_step(state, step)
            elif isinstance(step, models.ParallelStep):
                output = await self._run_parallel_step(state, step)
            elif isinstance(step, models.SleepStep | models.WaitStep):
                output = await self._run_waiting_step(state, step)
            elif isinstance(step, models.TaskStep):
                output = await self._run_task_step(state, step)
            else:
                output = await self._run_step(state, step)
            await self._run_block(state, self._chosen_block(step, output))

    async def _run_waiting_step(self, state: _Pass, step: Any) -> Any:
        """A sleep or wait: succeed if its time or signal has come, else park the run."""
        run = state.run
        stored = (
            await self.store.waiting_record(run.id, step.id)
            if run.current_step == step.id
            else None
        )
        now = self.clock.now()
        started_at = time.time()
        try:
            until = stored["until"] if stored else self._wait_until(state, step, now)
        except errors.LobflowsError as exc:
            raise await self._fail(
                state, step, exc, attempt=1, step_input=None, started_at=started_at
            ) from None
        if isinstance(step, models.WaitStep):
            output = await self._take_signal(state, step, started_at)
            if output is None and until is not None and now >= until:
                output = await self._wait_timed_out(state, step, started_at)
        else:
            output = {"slept_until": until} if now >= until else None
        if output is None:
            signal = (
                step.wait.signal_name if isinstance(step, models.WaitStep) else None
            )
            await self.store.record_wait(
                run_id=run.id,
                step=step.id,
                until=FAR_FUTURE if until is None else until,
                signal=signal,
                first=stored is None,
            )
            log.info(
                "Run waiting",
                extra={
                    "event": "run_waiting",
                    "run_id": run.id,
                    "flow": run.flow,
                    "step": step.id,
                    "until": until,
                    "signal": signal,
                },
            )
            raise _Stop(StepOutcome("waiting", next_attempt_at=until))
        return await self._record_step(state, step.id, output, started_at)

    async def _take_signal(
        self, state: _Pass, step: models.WaitStep, started_at: float
    ) -> dict[str, Any] | None:
        """The signal or keyed event that ends a wait, if it has come."""
        run, wait = state.run, step.wait
        if wait.event is None:
            return await self.store.take_signal(
                run_id=run.id, name=wait.signal_name, step=step.id
            )
        key = str(await self._step_value(state, step, wait.key, started_at))
        taken = await self.store.take_signal(
            run_id=run.id, name=wait.signal_name, step=step.id
        )
        if taken is None:
            await self.store.await_event(
                run_id=run.id, step=step.id, topic=wait.event, key=key
            )
            taken = await self.store.take_signal(
                run_id=run.id, name=wait.signal_name, step=step.id
            )
        if taken is None:
            return None
        await self.store.end_event_wait(run.id, step.id)
        event = taken["payload"] or {}
        return {
            "event": wait.event,
            "key": key,
            "event_id": event.get("event_id"),
            "data": event.get("data"),
            "received_at": taken["received_at"],
        }

    async def _run_task_step(self, state: _Pass, step: models.TaskStep) -> Any:
        """Open the step's task once, tell its assignees, and park until it closes.

        The run wakes when a decision settles the task (its signal), when a
        reminder is due, or at the deadline, where the task closes as
        timed_out and the step's escalate steps follow.
        """
        run = state.run
        started_at = time.time()
        task = await self.store.task_of_step(run.id, step.id)
        if task is None:
            try:
                new = self._new_task(state, step)
            except errors.LobflowsError as exc:
                raise await self._fail(
                    state, step, exc, attempt=1, step_input=None, started_at=started_at
                ) from None
            task = await self.store.open_task(new)
            self._log_task("Task opened", "task_opened", run, step, task)
        now = self.clock.now()
        if task.is_open and task.due_at is not None and now >= task.due_at:
            if await self.store.time_out_task(task.id):
                self._log_task("Task timed out", "task_timed_out", run, step, task)
            task = await self.store.get_task(task.id)
        if not task.is_open:
            await self.store.take_signal(
                run_id=run.id, name=signal_name(step.id), step=step.id
            )
            actions = await self.store.task_actions(task.id)
            output = task_outcome(task, actions)
            return await self._record_step(state, step.id, output, started_at)
        until = await self._notify_assignees(state, step, task, now)
        await self.store.record_wait(
            run_id=run.id,
            step=step.id,
            until=FAR_FUTURE if until is None else until,
            signal=signal_name(step.id),
            first=run.current_step != step.id,
        )
        log.info(
            "Run waiting for a task",
            extra={
                "event": "run_waiting",
                "run_id": run.id,
                "flow": run.flow,
                "step": step.id,
                "task_id": task.id,
                "until": until,
            },
        )
        raise _Stop(StepOutcome("waiting", next_attempt_at=until))

    def _new_task(self, state: _Pass, step: models.TaskStep) -> NewTask:
        spec = step.task
        context = state.context
        users: list[str] = []
        rotations: list[tuple[str, list[str]]] = []
        for assignee in spec.assignees:
            if assignee.user is not None:
                user = str(self._render(step, assignee.user, context) or "").strip()
                if not user:
                    raise errors.StepInputError(
                        f"step {step.id!r}: assignee {assignee.user!r} gave no user",
                        step=step.id,
                    )
                users.append(user)
                continue
            role = str(self._render(step, assignee.role, context) or "").strip()
            members = self.project.roles.get(role)
            if not members:
                known = ", ".join(sorted(self.project.roles)) or "none"
                raise errors.StepInputError(
                    f"step {step.id!r}: no role named {role!r} in roles.yaml; roles: {known}",
                    step=step.id,
                )
            if assignee.pick == "round_robin":
                rotations.append((f"role:{role}", members))
            else:
                users.extend(members)
        requester = (
            str(self._render(step, spec.requester, context) or "").strip() or None
            if spec.requester is not None
            else None
        )
        if spec.kind == "approval" and not rotations:
            eligible = {u for u in users if u != requester}
            if len(eligible) < spec.required:
                raise errors.StepInputError(
                    f"step {step.id!r}: {spec.required} approvals are required but only "
                    f"{len(eligible)} assignee(s) other than the requester can give one",
                    step=step.id,
                )
        due_at = None
        if spec.due_in is not None:
            text = self._render(step, spec.due_in, context)
            try:
                due_at = self.clock.now() + models.parse_duration(text)
            except ValueError as exc:
                raise errors.StepInputError(
                    f"step {step.id!r}: due_in: {exc}", step=step.id
                ) from None
        description = (
            None
            if spec.description is None
            else str(self._render(step, spec.description, context))
        )
        return NewTask(
            run_id=state.run.id,
            step=step.id,
            flow=state.run.flow,
            kind=spec.kind,
            title=str(self._render(step, spec.title, context))[:500],
            description=description,
            assignees=users,
            rotations=rotations,
            required=spec.required,
            requester=requester,
            form=[f.model_dump() for f in spec.form],
            due_at=due_at,
        )

    async def _notify_assignees(
        self, state: _Pass, step: models.TaskStep, task: TaskRecord, now: float
    ) -> float | None:
        """Send what is due of the first message and the reminders; the time to
        look again (the next reminder or the deadline)."""
        spec = step.task
        reminders = sorted(
            task.due_at - models.parse_duration(r)
            for r in spec.remind_before
            if task.due_at is not None
        )
        due_rounds = [i + 1 for i, at in enumerate(reminders) if now >= at]
        upcoming = [at for at in reminders if at > now]
        wake = min([*upcoming, task.due_at] if task.due_at else upcoming, default=None)
        if spec.notify is None:
            return wake
        # A worker that was away sends the latest reminder only, not every one missed.
        rounds = [0, *due_rounds[-1:]]
        actions = await self.store.task_actions(task.id)
        sent = {
            (a.for_user, (a.data or {}).get("round"))
            for a in actions
            if a.action == "notify"
        }
        for round_ in rounds:
            for index, user in enumerate(task.assignees):
                if (user, round_) in sent:
                    continue
                await self._notify_one(state, step, task, user, index, round_)
                await self.store.record_task_action(
                    task.id, "notify", for_user=user, data={"round": round_}
                )
        return wake

    async def _notify_one(
        self,
        state: _Pass,
        step: models.TaskStep,
        task: TaskRecord,
        user: str,
        index: int,
        round_: int,
    ) -> None:
        notify = step.task.notify
        assert notify is not None
        attempt = state.failures.get(step.id, 0) + 1
        started_at = time.time()
        try:
            links = (
                self.links.links(
                    task.id,
                    user,
                    kind=task.kind,
                    expires_at=tasks.link_expiry(task.due_at, task.created_at),
                )
                if self.links.enabled or _uses_links(notify)
                else {}
            )
            context = {
                **state.context,
                "task": {
                    "id": task.id,
                    "title": task.title,
                    "description": task.description,
                    "kind": task.kind,
                    "assignee": user,
                    "requester": task.requester,
                    "due_at": tasks.iso_time(task.due_at),
                    "reminder": round_ > 0,
                    "links": links,
                },
            }
            params = self._render(step, notify.with_, context)
            call = models.CallStep(id=step.id, call=notify.call, with_=notify.with_)
            await self._call(
                state,
                call,
                params,
                attempt,
                key=f"{step.id}-notify-{round_}-{index}",
            )
        except errors.LobflowsError as exc:
            raise await self._fail(
                state,
                step,
                exc,
                attempt=attempt,
                step_input=None,
                started_at=started_at,
            ) from None

    @staticmethod
    def _log_task(
        message: str, event: str, run: RunRecord, step: Any, task: TaskRecord
    ) -> None:
        log.info(
            message,
            extra={
                "event": event,
                "run_id": run.id,
                "flow": run.flow,
                "step": step.id,
                "task_id": task.id,
                "assignees": len(task.assignees),
            },
        )

    async def _run_parallel_step(self, state: _Pass, step: models.ParallelStep) -> Any:
        """Run the unfinished branches together until the join is met; settle
        the failures of the others once they stop."""
        started_at = time.time()
        collected = {
            name: state.completed[branch_step_id(step.id, name)]
            for name in step.parallel
            if branch_step_id(step.id, name) in state.completed
        }
        outer, state.deferred = state.deferred, []
        try:
            succeeded, stopped = await self._race_branches(state, step, collected)
        finally:
            deferred, state.deferred = state.deferred, outer
        if step.on_branch_failure == "collect":
            deferred = await self._collect_failures(state, step, deferred, collected)
        ended = len(succeeded) + len(collected) == len(step.parallel)
        if len(succeeded) >= step.needed() or (ended and not deferred):
            for d in deferred:  # retries no longer needed: the join is met
                await self._journal_failure(state, d, status="failed")
            output = {
                "branches": list(step.parallel),
                "succeeded": succeeded,
                "failed": collected,
            }
            return await self._record_step(state, step.id, output, started_at)
        if deferred:
            raise await self._settle_failures(state, deferred)
        raise stopped[0]  # released at shutdown

    async def _race_branches(
        self, state: _Pass, step: models.ParallelStep, collected: dict[str, Any]
    ) -> tuple[list[str], list[_Stop]]:
        """Run branches until enough succeed; stop the rest. Returns the names
        that succeeded, in the order they did, and the branches' stops."""
        pending = {
            asyncio.ensure_future(self._run_block(state, steps)): name
            for name, steps in step.parallel.items()
            if name not in collected
        }
        succeeded: list[str] = []
        stopped: list[_Stop] = []
        try:
            while pending and len(succeeded) < step.needed():
                done, _ = await asyncio.wait(
                    pending, return_when=asyncio.FIRST_COMPLETED
                )
                for task in done:
                    name = pending.pop(task)
                    error = task.exception()
                    if error is None:
                        succeeded.append(name)
                    elif isinstance(error, _Stop):
                        stopped.append(error)
                    else:
                        raise error
        finally:
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        return succeeded, stopped

    async def _collect_failures(
        self,
        state: _Pass,
        step: models.ParallelStep,
        deferred: list[_Failure],
        collected: dict[str, Any],
    ) -> list[_Failure]:
        """Note each branch that failed for good in the journal, where a resumed
        run finds it; the failures still to be retried are returned."""
        branch_of = {
            inner.id: name
            for name, steps in step.parallel.items()
            for inner in models.walk_steps(steps)
        }
        for d in (d for d in deferred if d.next_attempt_at is None):
            await self._journal_failure(state, d, status="dead")
            name = branch_of[d.step]
            collected[name] = {"step": d.step, "error": d.error}
            await self._record_step(
                state, branch_step_id(step.id, name), collected[name], time.time()
            )
        return [d for d in deferred if d.next_attempt_at is not None]

    async def _journal_failure(self, state: _Pass, d: _Failure, *, status: str) -> None:
        """Journal a failed attempt that changes nothing else about the run."""
        await self.store.record_attempt(
            run_id=state.run.id,
            step=d.step,
            attempt=d.attempt,
            status=status,
            input=d.input,
            error=d.error,
            retryable=d.retryable,
            started_at=d.started_at,
            next_attempt_at=d.next_attempt_at,
        )

    async def _settle_failures(self, state: _Pass, deferred: list[_Failure]) -> _Stop:
        """Journal every failure of a pass; the run waits for the earliest retry,
        or goes to the dead letter queue if any failed step cannot go on."""
        run = state.run
        dead = [d for d in deferred if d.next_attempt_at is None]
        if dead and not state.compensating and self._undoable(state):
            return await self._begin_compensation(state, deferred, dead[0])
        if dead:
            first = dead[0]
            for d in (d for d in deferred if d is not first):
                status = "failed" if d.next_attempt_at else "dead"
                await self._journal_failure(state, d, status=status)
            letter = await self.store.record_dead_letter(
                run_id=run.id,
                flow=run.flow,
                step=first.step,
                attempt=first.attempt,
                input=first.input,
                error=first.error,
                retryable=first.retryable,
                started_at=first.started_at,
            )
            log.warning(
                "Run moved to the dead letter queue",
                extra={
                    "event": "run_dead_lettered",
                    "run_id": run.id,
                    "flow": run.flow,
                    "step": first.step,
                    "attempt": first.attempt,
                    "dead_letter": letter,
                    "reason": "retries exhausted"
                    if first.retryable
                    else "permanent error",
                    "error": first.error,
                },
            )
            return _Stop(StepOutcome("failed"))
        # Latest first, so the run's due time ends at the earliest retry.
        for d in sorted(deferred, key=lambda d: d.next_attempt_at or 0.0, reverse=True):
            await self.store.record_retry(
                run_id=run.id,
                step=d.step,
                attempt=d.attempt,
                input=d.input,
                error=d.error,
                started_at=d.started_at,
                next_attempt_at=d.next_attempt_at or 0.0,
            )
            log.info(
                "Step failed; retry scheduled",
                extra={
                    "event": "step_retry_scheduled",
                    "run_id": run.id,
                    "flow": run.flow,
                    "step": d.step,
                    "attempt": d.attempt,
                    "delay_seconds": round(
                        (d.next_attempt_at or 0.0) - self.clock.now(), 3
                    ),
                    "error": d.error,
                },
            )
        earliest = min(d.next_attempt_at or 0.0 for d in deferred)
        for callback in self.on_due:
            callback(earliest)
        return _Stop(StepOutcome("queued", next_attempt_at=earliest))

    def _undoable(self, state: _Pass) -> list[models.CallStep]:
        """Completed steps that declare an undo and are not undone yet, latest first."""
        declared = {
            step.id: step
            for step in models.walk_steps(state.flow.steps)
            if isinstance(step, models.CallStep) and step.undo is not None
        }
        return [
            declared[step_id]
            for step_id in reversed(state.completed)
            if step_id in declared and undo_step_id(step_id) not in state.completed
        ]

    async def _begin_compensation(
        self, state: _Pass, deferred: list[_Failure], failed: _Failure
    ) -> _Stop:
        """A step failed for good: journal it and enter the undo phase (a saga)."""
        run = state.run
        for d in deferred:
            status = "dead" if d.next_attempt_at is None else "failed"
            await self._journal_failure(state, d, status=status)
        cause = {
            "step": failed.step,
            "attempt": failed.attempt,
            "input": failed.input,
            "error": failed.error,
            "retryable": failed.retryable,
        }
        await self._record_step(state, COMPENSATION_STEP, cause, time.time())
        log.warning(
            "Step failed for good; undoing the completed steps",
            extra={
                "event": "run_compensating",
                "run_id": run.id,
                "flow": run.flow,
                "step": failed.step,
                "undo": [s.id for s in self._undoable(state)],
                "error": failed.error,
            },
        )
        return await self._compensate(state)

    async def _compensate(self, state: _Pass) -> _Stop:
        """Undo the completed steps in reverse order, each journaled and retried
        like any step; then the run goes to the dead letter queue for its cause."""
        run = state.run
        state.compensating = True
        for step in self._undoable(state):
            assert step.undo is not None
            # Built from validated parts; its id is outside the step id pattern
            # on purpose, so it never meets a step of the flow.
            undo = models.CallStep.model_construct(
                id=undo_step_id(step.id),
                call=step.undo.call,
                with_=step.undo.with_,
                retry=step.undo.retry or step.retry,
                timeout_seconds=step.timeout_seconds,
                undo=None,
            )
            try:
                await self._run_step(state, undo)
            except _Stop as stop:
                return stop
        cause = state.completed[COMPENSATION_STEP]
        undone = [
            step_id[len("undo.") :]
            for step_id in state.completed
            if step_id.startswith("undo.")
        ]
        error = f"{cause['error']} (undone: {', '.join(undone) or 'nothing'})"
        letter = await self.store.record_dead_letter(
            run_id=run.id,
            flow=run.flow,
            step=cause["step"],
            attempt=cause["attempt"],
            input=cause["input"],
            error=error,
            retryable=cause["retryable"],
            started_at=time.time(),
        )
        log.warning(
            "Run compensated and moved to the dead letter queue",
            extra={
                "event": "run_compensated",
                "run_id": run.id,
                "flow": run.flow,
                "step": cause["step"],
                "undone": undone,
                "dead_letter": letter,
            },
        )
        return _Stop(StepOutcome("failed"))

    async def _run_subflow_step(self, state: _Pass, step: models.SubflowStep) -> Any:
        """Start the child run once, park until it ends, then take its result."""
        started_at = time.time()
        child_input = await self._step_value(
            state, step, step.subflow.input, started_at
        )
        [child] = await self._children(
            state, step, flow=step.subflow.flow, inputs=[child_input], concurrency=1
        )
        if child.status == "failed":
            failure = errors.RunError(
                f"step {step.id!r}: subflow {step.subflow.flow!r} run {child.id} failed: {child.error}"
            )
            raise await self._fail(
                state,
                step,
                failure,
                attempt=1,
                step_input={"run_id": child.id},
                started_at=started_at,
            )
        output = {"run_id": child.id, "result": _result_of(child)}
        return await self._record_step(state, step.id, output, started_at)

    async def _run_foreach_step(self, state: _Pass, step: models.ForeachStep) -> Any:
        """A child run per item or batch, at most `concurrency` at once; failures
        stay with their child (in the dead letter queue), the others complete."""
        spec = step.foreach
        started_at = time.time()
        items = await self._step_value(state, step, spec.items, started_at)
        if not isinstance(items, list):
            failure = errors.StepInputError(
                f"step {step.id!r}: items must render to a list, got {type(items).__name__}"
            )
            raise await self._fail(
                state, step, failure, attempt=1, step_input=None, started_at=started_at
            )
        size = spec.batch_size
        inputs = (
            items
            if size == 1
            else [items[i : i + size] for i in range(0, len(items), size)]
        )
        children = await self._children(
            state, step, flow=spec.flow, inputs=inputs, concurrency=spec.concurrency
        )
        results = [
            {
                "run_id": c.id,
                "status": c.status,
                "result": _result_of(c),
                "error": c.error,
            }
            for c in children
        ]
        failed = sum(1 for c in children if c.status == "failed")
        output = {
            "results": results,
            "succeeded": len(children) - failed,
            "failed": failed,
        }
        return await self._record_step(state, step.id, output, started_at)

    async def _step_value(
        self, state: _Pass, step: Any, value: Any, started_at: float
    ) -> Any:
        try:
            return self._render(step, value, state.context)
        except errors.LobflowsError as exc:
            raise await self._fail(
                state, step, exc, attempt=1, step_input=None, started_at=started_at
            ) from None

    async def _children(
        self, state: _Pass, step: Any, *, flow: str, inputs: list[Any], concurrency: int
    ) -> list[RunRecord]:
        """Child runs of a step, one per input, started as room allows; parks the
        run until every one has ended, then returns them in input order."""
        run = state.run
        prefix = f"{step_kind(step)}:{run.id}:{step.id}:"
        existing = {
            c.dedupe_key: c
            for c in await self.store.children(run.id, key_prefix=prefix)
        }
        ended = sum(1 for c in existing.values() if c.is_terminal)
        in_flight = len(existing) - ended
        for index, child_input in enumerate(inputs):
            key = f"{prefix}{index}"
            if key in existing:
                continue
            if in_flight >= concurrency:
                break
            try:
                child, _ = await self.start_run(
                    flow,
                    input=child_input,
                    trigger=step_kind(step),
                    dedupe_key=key,
                    parent_run_id=run.id,
                )
            except errors.LobflowsError as exc:
                started_at = time.time()
                raise await self._fail(
                    state, step, exc, attempt=1, step_input=None, started_at=started_at
                ) from None
            existing[key] = child
            in_flight += 1
            self.notify_due()
        if len(existing) == len(inputs) and in_flight == 0:
            return [existing[f"{prefix}{i}"] for i in range(len(inputs))]
        await self.store.record_wait(
            run_id=run.id,
            step=step.id,
            until=FAR_FUTURE,
            children=(prefix, ended),
            first=run.current_step != step.id,
        )
        log.info(
            "Run waiting for child runs",
            extra={
                "event": "run_waiting",
                "run_id": run.id,
                "flow": run.flow,
                "step": step.id,
                "children_ended": ended,
                "children": len(inputs),
            },
        )
        raise _Stop(StepOutcome("waiting"))

    async def _record_step(
        self, state: _Pass, step_id: str, output: Any, started_at: float
    ) -> Any:
        """Journal the success of a step that waited (sleep, wait, task, subflow,
        foreach), a parallel step, or the start of the undo phase."""
        run = state.run
        await self.store.record_success(
            run_id=run.id,
            step=step_id,
            attempt=1,
            input=None,
            output=redactor.redact_data(output),
            started_at=started_at,
        )
        state.completed[step_id] = output
        state.context["steps"][step_id] = output
        log.info(
            "Step succeeded",
            extra={
                "event": "step_succeeded",
                "run_id": run.id,
                "flow": run.flow,
                "step": step_id,
                "attempt": 1,
            },
        )
        return output

    def _wait_until(self, state: _Pass, step: Any, now: float) -> float | None:
        if isinstance(step, models.WaitStep):
            timeout = step.wait.timeout_seconds
            return None if timeout is None else now + timeout
        if step.sleep.seconds is not None:
            return now + step.sleep.seconds
        text = self._render(step, step.sleep.until, state.context)
        try:
            moment = datetime.datetime.fromisoformat(str(text))
        except ValueError:
            raise errors.StepInputError(
                f"step {step.id!r}: sleep until {text!r} is not an ISO 8601 time"
            ) from None
        if moment.tzinfo is None:
            raise errors.StepInputError(
                f"step {step.id!r}: sleep until {text!r} has no UTC offset; give one, e.g. +01:00"
            )
        return moment.timestamp()

    async def _wait_timed_out(
        self, state: _Pass, step: Any, started_at: float
    ) -> dict[str, Any]:
        wait = step.wait
        if wait.event is not None:
            await self.store.end_event_wait(state.run.id, step.id)
        if wait.on_timeout == "continue":
            if wait.event is not None:
                return {"event": wait.event, "timed_out": True}
            return {"signal": wait.signal, "timed_out": True}
        awaited = (
            f"signal {wait.signal!r}" if wait.event is None else f"event {wait.event!r}"
        )
        failure = errors.RunError(
            f"step {step.id!r}: no {awaited} came within {wait.timeout_seconds:g} s"
        )
        raise await self._fail(
            state, step, failure, attempt=1, step_input=None, started_at=started_at
        )

    @staticmethod
    def _chosen_block(step: Any, output: Any) -> list[Any]:
        if not isinstance(output, dict):
            return []
        if isinstance(step, models.TaskStep):
            return step.escalate if output.get("outcome") == "timed_out" else []
        if not isinstance(step, models.IfStep | models.SwitchStep):
            return []
        blocks = dict(models.child_blocks(step))
        return blocks.get(output.get("branch"), [])

    async def _run_step(self, state: _Pass, step: Any) -> Any:
        run = state.run
        attempt = state.failures.get(step.id, 0) + 1
        started_at = time.time()
        step_input: Any = None
        ids = {"run_id": run.id, "flow": run.flow, "step": step.id, "attempt": attempt}
        try:
            step_input = self._step_input(state, step)
            output = await self._perform(state, step, step_input, attempt)
        except errors.LobflowsError as exc:
            raise await self._fail(
                state,
                step,
                _explain_cut_outputs(exc, state.completed),
                attempt=attempt,
                step_input=step_input,
                started_at=started_at,
            ) from None
        except Exception as exc:
            # A defect in a connector or a custom step, not in the data: it is
            # logged with its traceback once and parks the run for a person.
            log.exception(
                "Step raised an unexpected error",
                extra={"event": "step_crashed", **ids},
            )
            failure = errors.RunError(
                f"step {step.id!r} raised {type(exc).__name__}: {exc}"
            )
            raise await self._fail(
                state,
                step,
                failure,
                attempt=attempt,
                step_input=step_input,
                started_at=started_at,
            ) from None
        response = output if isinstance(step, models.RespondStep) else None
        # Only calls and emits reach outside the run; other steps are pure and
        # are simply repeated if a crash comes before their record commits.
        has_effect = isinstance(step, models.CallStep | models.EmitStep)
        await self.store.record_success(
            run_id=run.id,
            step=step.id,
            attempt=attempt,
            input=redactor.redact_data(step_input),
            output=redactor.redact_data(output),
            started_at=started_at,
            response=response,
            wait=has_effect,
            trace=state.traces.pop(step.id, None),
        )
        if response is not None:
            self._answer(run.id, response)
        state.completed[step.id] = output
        state.context["steps"][step.id] = output
        log.info(
            "Step succeeded",
            extra={
                "event": "step_succeeded",
                **ids,
                "seconds": round(time.time() - started_at, 4),
            },
        )
        return output

    def _step_input(self, state: _Pass, step: Any) -> Any:
        overrides = state.run.overrides or {}
        if step.id in overrides:
            return overrides[step.id]
        if isinstance(step, models.CallStep):
            return self._render(step, step.with_, state.context)
        if isinstance(step, models.RespondStep):
            return self._render(step, step.respond.model_dump(), state.context)
        if isinstance(step, models.EmitStep):
            return self._render(step, step.emit.data, state.context)
        return None

    def _render(self, step: Any, value: Any, context: dict[str, Any]) -> Any:
        try:
            return templates.render_value(value, context)
        except errors.TemplateError as exc:
            raise errors.StepInputError(
                f"step {step.id!r}: {exc}", step=step.id
            ) from None

    async def _perform(
        self, state: _Pass, step: Any, step_input: Any, attempt: int
    ) -> Any:
        if isinstance(step, models.MapStep):
            trace: list[dict[str, str]] = []
            try:
                output = mapping.apply_mapping(step.map, state.context, trace)
            except errors.StepInputError as exc:
                raise errors.StepInputError(
                    f"step {step.id!r}: {exc}", step=step.id
                ) from None
            state.traces[step.id] = trace
            return output
        if isinstance(step, models.TransformStep):
            return self._transform(state, step)
        if isinstance(step, models.ValidateStep):
            return self._validate(state, step)
        if isinstance(step, models.CallStep):
            return await self._call(state, step, step_input, attempt)
        if isinstance(step, models.IfStep):
            holds = self._condition(step, step.if_, state.context)
            return {"branch": "then" if holds else "else"}
        if isinstance(step, models.SwitchStep):
            value = self._value(step, step.switch, state.context)
            key = f"case:{value}"
            return {
                "branch": key if str(value) in step.cases else "default",
                "value": value,
            }
        if isinstance(step, models.RespondStep):
            return _checked_response(step, step_input)
        if isinstance(step, models.EmitStep):
            return await self._emit(state, step, step_input)
        raise errors.DefinitionError(f"step {step.id!r} has an unknown kind")

    def mapper(self, name: str) -> Mapper:
        """The compiled mapping `name` of the project, built once."""
        found = self._mappers.get(name)
        if found is None:
            loaded = self.project.mappings.get(name)
            if loaded is None:
                known = ", ".join(sorted(self.project.mappings)) or "none"
                raise errors.StepInputError(
                    f"no mapping named {name!r}; mappings: {known}"
                )
            found = self._mappers[name] = Mapper(loaded, self.project.mappings)
        return found

    def _transform(self, state: _Pass, step: models.TransformStep) -> Any:
        spec = step.transform
        data = self._render(step, spec.input, state.context)
        try:
            mapper = self.mapper(spec.mapping)
        except errors.StepInputError as exc:
            raise errors.StepInputError(
                f"step {step.id!r}: {exc}", step=step.id
            ) from None
        if not isinstance(data, list):
            try:
                if not mapper.keeps(data):
                    return None
                output, trace = mapper.map(data)
            except RecordRejected as exc:
                raise errors.StepInputError(
                    f"step {step.id!r}: mapping {spec.mapping!r}: {exc}", step=step.id
                ) from None
            state.traces[step.id] = trace
            return output
        result = map_records(mapper, data)
        if result.rejected and spec.on_reject == "fail":
            first = result.rejected[0]
            raise errors.StepInputError(
                f"step {step.id!r}: mapping {spec.mapping!r}: record {first['record']}: "
                f"field {first['field']!r}: {first['reason']}"
                + (
                    f" ({len(result.rejected)} records rejected in all)"
                    if len(result.rejected) > 1
                    else ""
                ),
                step=step.id,
            )
        state.traces[step.id] = result.trace
        return {
            "records": result.records,
            "rejected": result.rejected,
            "dropped": result.dropped,
        }

    def _validate(self, state: _Pass, step: models.ValidateStep) -> Any:
        data = self._render(step, step.validate_.data, state.context)
        sensitive = state.flow.card.data.sensitivity in SENSITIVE
        found = validation.problems(data, step.validate_.schema_, sensitive=sensitive)
        if found:
            raise errors.StepInputError(
                f"step {step.id!r}: the data does not match its schema: "
                + "; ".join(found),
                step=step.id,
            )
        return data

    async def _emit(
        self, state: _Pass, step: models.EmitStep, data: Any
    ) -> dict[str, Any]:
        # The event id is fixed by run and step: an emit repeated after a
        # crash starts no second run anywhere.
        key = (
            None
            if step.emit.key is None
            else str(self._render(step, step.emit.key, state.context))
        )
        event = events.Event(
            topic=step.emit.topic, data=data, id=f"{state.run.id}:{step.id}", key=key
        )
        started = await events.EventRouter(self).deliver(event)
        self.notify_due()
        return {"topic": event.topic, "event_id": event.id, "runs": started}

    def _condition(self, step: Any, source: str, context: dict[str, Any]) -> bool:
        try:
            return templates.evaluate_condition(source, context)
        except errors.TemplateError as exc:
            raise errors.StepInputError(
                f"step {step.id!r}: condition {source!r}: {exc}", step=step.id
            ) from None

    def _value(self, step: Any, source: str, context: dict[str, Any]) -> Any:
        try:
            return templates.compile_condition(source).render(context)
        except errors.TemplateError as exc:
            raise errors.StepInputError(
                f"step {step.id!r}: {exc}", step=step.id
            ) from None

    async def _call(
        self,
        state: _Pass,
        step: models.CallStep,
        params: Any,
        attempt: int,
        *,
        key: str | None = None,
    ) -> Any:
        connection_name, action = step.call.split(".", 1)
        connector = self.connections.get(connection_name)
        if connector is None:
            known = ", ".join(sorted(self.connections)) or "none"
            raise errors.StepInputError(
                f"step {step.id!r}: no connection named {connection_name!r}; declared: {known}",
                step=step.id,
            )
        if not isinstance(params, dict):
            raise errors.StepInputError(
                f"step {step.id!r}: input must be a mapping of parameters", step=step.id
            )
        context = connectors.CallContext(
            run_id=state.run.id,
            flow=state.run.flow,
            step=key or step.id,
            attempt=attempt,
            timeout_seconds=step.timeout_seconds,
        )
        try:
            return await asyncio.wait_for(
                connector.call(action, params, context), timeout=step.timeout_seconds
            )
        except TimeoutError:
            raise errors.TransportError(
                f"step {step.id!r}: {step.call} took longer than {step.timeout_seconds} s"
            ) from None

    async def _fail(
        self,
        state: _Pass,
        step: Any,
        exc: errors.LobflowsError,
        *,
        attempt: int,
        step_input: Any,
        started_at: float,
    ) -> _Stop:
        """Journal a failed attempt: schedule a retry or dead-letter the run.

        Inside parallel branches the failure waits to be settled with its
        siblings' once every branch has stopped.
        """
        failure = self._failure(state, step, exc, attempt, step_input, started_at)
        if state.deferred is None:
            return await self._settle_failures(state, [failure])
        state.deferred.append(failure)
        status = "failed" if failure.next_attempt_at is None else "queued"
        return _Stop(StepOutcome(status, next_attempt_at=failure.next_attempt_at))

    def _failure(
        self,
        state: _Pass,
        step: Any,
        exc: errors.LobflowsError,
        attempt: int,
        step_input: Any,
        started_at: float,
    ) -> _Failure:
        """What a failed attempt was, and when it is tried again (None: never)."""
        policy = (
            step.retry if isinstance(step, models.CallStep) else None
        ) or state.flow.retry
        next_at = None
        if retry_policy.should_retry(policy, attempt=attempt, retryable=exc.retryable):
            delay = retry_policy.delay_seconds(
                policy,
                failed_attempt=attempt,
                retry_after_seconds=exc.retry_after_seconds,
            )
            next_at = self.clock.now() + delay
        return _Failure(
            step=step.id,
            attempt=attempt,
            input=redactor.redact_data(step_input),
            error=redactor.redact(str(exc)),
            retryable=exc.retryable,
            started_at=started_at,
            next_attempt_at=next_at,
        )


def _checked_response(step: Any, response: Any) -> dict[str, Any]:
    """A reply that HTTP can carry: a status from 100 to 599, headers of plain text."""
    try:
        status = int(response.get("status", 200))
    except (TypeError, ValueError):
        status = 0
    if not 100 <= status <= 599:
        raise errors.StepInputError(
            f"step {step.id!r}: status must be an HTTP status from 100 to 599 (got {response.get('status')!r})",
            step=step.id,
        )
    headers = response.get("headers") or {}
    for name, value in headers.items():
        text = str(value)
        if (
            any(c in text for c in "\r\n\0")
            or not text.isascii()
            or not str(name).isascii()
        ):
            raise errors.StepInputError(
                f"step {step.id!r}: header {name!r} must be printable ASCII on one line",
                step=step.id,
            )
    return {
        "status": status,
        "body": response.get("body"),
        "headers": {str(k): str(v) for k, v in headers.items()},
    }


def _explain_cut_outputs(
    exc: errors.LobflowsError, completed: dict[str, Any]
) -> errors.LobflowsError:
    """Name the outputs that were cut at the data budget when input is missing."""
    cut = [step for step, output in completed.items() if records.is_cut(output)]
    if not cut or not isinstance(exc, errors.StepInputError):
        return exc
    names = ", ".join(repr(step) for step in cut)
    return errors.StepInputError(
        f"{exc}; the stored output of step {names} was larger than the step data "
        "budget and was cut, so it cannot be read after a restart: raise "
        "--step-data-budget-bytes"
    )


def branch_step_id(step_id: str, branch: str) -> str:
    """The journal name of a branch that failed for good and was collected."""
    return f"{step_id}.{branch}"


def undo_step_id(step_id: str) -> str:
    """The journal name of the call that undoes a step."""
    return f"undo.{step_id}"


def _uses_links(notify: models.Notify) -> bool:
    return "links" in str(notify.with_)


def _result_of(child: RunRecord) -> Any:
    """What a child run hands back: the body of its respond step, if any."""
    return (child.response or {}).get("body")
