"""Parallel steps: branches raced to their join, failures settled or collected."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from lobflows.engine.state import (
    Failure,
    Pass,
    Stop,
    branch_step_id,
)
from lobflows.spec import models

log = logging.getLogger(__name__)


class BranchSteps:
    """Parallel steps of the engine. A part of `Engine`, which provides the store, the
    journal and the failure handling its methods use."""

    async def _run_parallel_step(self, state: Pass, step: models.ParallelStep) -> Any:
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
        self, state: Pass, step: models.ParallelStep, collected: dict[str, Any]
    ) -> tuple[list[str], list[Stop]]:
        """Run branches until enough succeed; stop the rest. Returns the names
        that succeeded, in the order they did, and the branches' stops."""
        pending = {
            asyncio.ensure_future(self._run_block(state, steps)): name
            for name, steps in step.parallel.items()
            if name not in collected
        }
        succeeded: list[str] = []
        stopped: list[Stop] = []
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
                    elif isinstance(error, Stop):
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
        state: Pass,
        step: models.ParallelStep,
        deferred: list[Failure],
        collected: dict[str, Any],
    ) -> list[Failure]:
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
