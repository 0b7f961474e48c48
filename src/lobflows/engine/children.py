"""Subflow and foreach steps: child runs started once, the parent parked until they end."""

from __future__ import annotations

import logging
import time
from typing import Any

from lobflows import errors
from lobflows.engine.state import (
    FAR_FUTURE,
    Pass,
    StepOutcome,
    Stop,
    result_of,
)
from lobflows.spec import models
from lobflows.spec.models import step_kind
from lobflows.store import RunRecord

log = logging.getLogger(__name__)


class ChildRuns:
    """Subflow and foreach steps of the engine. A part of `Engine`, which provides the store, the
    journal and the failure handling its methods use."""

    async def _run_subflow_step(self, state: Pass, step: models.SubflowStep) -> Any:
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
        output = {"run_id": child.id, "result": result_of(child)}
        return await self._record_step(state, step.id, output, started_at)

    async def _run_foreach_step(self, state: Pass, step: models.ForeachStep) -> Any:
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
                "result": result_of(c),
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
        self, state: Pass, step: Any, value: Any, started_at: float
    ) -> Any:
        try:
            return self._render(step, value, state.context)
        except errors.LobflowsError as exc:
            raise await self._fail(
                state, step, exc, attempt=1, step_input=None, started_at=started_at
            ) from None

    async def _children(
        self, state: Pass, step: Any, *, flow: str, inputs: list[Any], concurrency: int
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
        raise Stop(StepOutcome("waiting"))
