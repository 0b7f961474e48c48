"""Sleep and wait steps: a run parks as a row until its time, signal or keyed event comes."""

from __future__ import annotations

import datetime
import logging
import time
from typing import Any

from lobflows import errors
from lobflows.engine.state import (
    FAR_FUTURE,
    Pass,
    StepOutcome,
    Stop,
)
from lobflows.spec import models

log = logging.getLogger(__name__)


class WaitingSteps:
    """Sleep and wait steps of the engine. A part of `Engine`, which provides the store, the
    journal and the failure handling its methods use."""

    async def _run_waiting_step(self, state: Pass, step: Any) -> Any:
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
            raise Stop(StepOutcome("waiting", next_attempt_at=until))
        return await self._record_step(state, step.id, output, started_at)

    async def _take_signal(
        self, state: Pass, step: models.WaitStep, started_at: float
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

    def _wait_until(self, state: Pass, step: Any, now: float) -> float | None:
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
        self, state: Pass, step: Any, started_at: float
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
