"""Executing runs: one step after another, each journaled before the next begins.

A run's progress lives in the journal (the step attempts in the run store),
not in memory. Executing a run replays the journal: steps that succeeded
contribute their stored output and are not called again; the first step
without a success is executed. So a run resumed after a crash, a retry or a
replay from the dead letter queue continues where it stopped.

This module holds the core: starting runs, walking the steps, calling
connectors and settling failures. Each family of steps that waits, branches
or starts other runs has a module of its own (waiting, human, branches,
children, saga, data), mixed into `Engine`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from lobflows import errors, secrets
from lobflows.connectors import base as connectors
from lobflows.connectors.limits import Limiter
from lobflows.engine import retry as retry_policy
from lobflows.engine import tasks
from lobflows.engine.branches import BranchSteps
from lobflows.engine.children import ChildRuns
from lobflows.engine.clock import Clock, SystemClock
from lobflows.engine.data import DataSteps
from lobflows.engine.human import TaskSteps
from lobflows.engine.saga import Compensation
from lobflows.engine.state import Failure, Pass, StepOutcome, Stop
from lobflows.engine.waiting import WaitingSteps
from lobflows.secrets import redactor
from lobflows.spec import models
from lobflows.spec.loader import LoadedFlow, Project
from lobflows.spec.models import COMPENSATION_STEP
from lobflows.store import RunRecord, RunStore, records
from lobflows.transform import mapping, templates
from lobflows.transform.mapper import Mapper

log = logging.getLogger(__name__)


class Engine(WaitingSteps, TaskSteps, BranchSteps, Compensation, ChildRuns, DataSteps):
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
        self.limiter = Limiter(store, lambda: self.clock.now())
        # Answers of enrich lookups: (call, parameters) to (expiry, answer).
        self._enrich_cache: dict[tuple[str, bytes], tuple[float, Any]] = {}
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
        # Secrets rotated after the run started keep their earlier value for
        # it while the rotation's grace period lasts.
        started = secrets.run_started_at.set(run.created_at)
        try:
            return await self._execute_run(run, fresh=fresh)
        finally:
            secrets.run_started_at.reset(started)

    async def _execute_run(self, run: RunRecord, *, fresh: bool) -> StepOutcome:
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
        state = Pass(
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
        except Stop as stop:
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

    async def _run_block(self, state: Pass, steps: list[Any]) -> None:
        for step in steps:
            if step.id in state.completed:
                await self._run_block(
                    state, self._chosen_block(step, state.completed[step.id])
                )
                continue
            if self.is_stopping:
                # Between steps is the one safe place to let go of a run: the
                # journal says exactly where the next worker resumes.
                raise Stop(StepOutcome("released"))
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

    async def _journal_failure(self, state: Pass, d: Failure, *, status: str) -> None:
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

    async def _settle_failures(self, state: Pass, deferred: list[Failure]) -> Stop:
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
            return Stop(StepOutcome("failed"))
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
                status="paused" if d.paused else "failed",
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
        return Stop(StepOutcome("queued", next_attempt_at=earliest))

    async def _record_step(
        self, state: Pass, step_id: str, output: Any, started_at: float
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

    async def _run_step(self, state: Pass, step: Any) -> Any:
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
        has_effect = isinstance(step, models.CallStep | models.EmitStep) or (
            isinstance(step, models.TransformStep) and bool(step.transform.enrich)
        )
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

    def _step_input(self, state: Pass, step: Any) -> Any:
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
        self, state: Pass, step: Any, step_input: Any, attempt: int
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
            return await self._transform(state, step)
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

    async def _call(
        self,
        state: Pass,
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
            async with self.limiter.call(
                connection_name,
                connector.limits,
                timeout_seconds=step.timeout_seconds,
            ):
                return await asyncio.wait_for(
                    connector.call(action, params, context),
                    timeout=step.timeout_seconds,
                )
        except TimeoutError:
            raise errors.TransportError(
                f"step {step.id!r}: {step.call} took longer than {step.timeout_seconds} s"
            ) from None

    async def _fail(
        self,
        state: Pass,
        step: Any,
        exc: errors.LobflowsError,
        *,
        attempt: int,
        step_input: Any,
        started_at: float,
    ) -> Stop:
        """Journal a failed attempt: schedule a retry or dead-letter the run.

        Inside parallel branches the failure waits to be settled with its
        siblings' once every branch has stopped.
        """
        failure = self._failure(state, step, exc, attempt, step_input, started_at)
        if state.deferred is None:
            return await self._settle_failures(state, [failure])
        state.deferred.append(failure)
        status = "failed" if failure.next_attempt_at is None else "queued"
        return Stop(StepOutcome(status, next_attempt_at=failure.next_attempt_at))

    def _failure(
        self,
        state: Pass,
        step: Any,
        exc: errors.LobflowsError,
        attempt: int,
        step_input: Any,
        started_at: float,
    ) -> Failure:
        """What a failed attempt was, and when it is tried again (None: never)."""
        policy = (
            step.retry if isinstance(step, models.CallStep) else None
        ) or state.flow.retry
        next_at = None
        paused = isinstance(exc, errors.CircuitOpenError)
        if paused:
            next_at = self.clock.now() + (exc.retry_after_seconds or 1.0)
        elif retry_policy.should_retry(
            policy, attempt=attempt, retryable=exc.retryable
        ):
            delay = retry_policy.delay_seconds(
                policy,
                failed_attempt=attempt,
                retry_after_seconds=exc.retry_after_seconds,
            )
            next_at = self.clock.now() + delay
        return Failure(
            step=step.id,
            attempt=attempt,
            input=redactor.redact_data(step_input),
            error=redactor.redact(str(exc)),
            retryable=exc.retryable,
            started_at=started_at,
            next_attempt_at=next_at,
            paused=paused,
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
