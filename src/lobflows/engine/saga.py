"""Compensation: after a step fails for good, undo the completed steps, latest first."""

from __future__ import annotations

import logging
import time

from lobflows.engine.state import (
    Failure,
    Pass,
    StepOutcome,
    Stop,
    undo_step_id,
)
from lobflows.spec import models
from lobflows.spec.models import COMPENSATION_STEP

log = logging.getLogger(__name__)


class Compensation:
    """The undo phase of the engine. A part of `Engine`, which provides the store, the
    journal and the failure handling its methods use."""

    def _undoable(self, state: Pass) -> list[models.CallStep]:
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
        self, state: Pass, deferred: list[Failure], failed: Failure
    ) -> Stop:
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

    async def _compensate(self, state: Pass) -> Stop:
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
            except Stop as stop:
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
        return Stop(StepOutcome("failed"))
