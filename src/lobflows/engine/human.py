"""Task steps: open a human task once, tell its assignees, park until it closes."""

from __future__ import annotations

import logging
import time
from typing import Any

from lobflows import errors
from lobflows.engine import tasks
from lobflows.engine.state import (
    FAR_FUTURE,
    Pass,
    StepOutcome,
    Stop,
    uses_links,
)
from lobflows.spec import models
from lobflows.store import RunRecord
from lobflows.store.tasks import NewTask, TaskRecord, signal_name, task_outcome

log = logging.getLogger(__name__)


class TaskSteps:
    """Task steps of the engine. A part of `Engine`, which provides the store, the
    journal and the failure handling its methods use."""

    async def _run_task_step(self, state: Pass, step: models.TaskStep) -> Any:
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
        raise Stop(StepOutcome("waiting", next_attempt_at=until))

    def _new_task(self, state: Pass, step: models.TaskStep) -> NewTask:
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
        self, state: Pass, step: models.TaskStep, task: TaskRecord, now: float
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
        state: Pass,
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
                if self.links.enabled or uses_links(notify)
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
