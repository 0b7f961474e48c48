"""Poll triggers: every interval, call an action and start one run per new item.

The watermark (a cursor, a last-modified time or an id) is kept in the run
store and handed to the call as ``watermark``; each item's id is its run's
dedupe key, so an item seen twice, across restarts or by two processes,
starts one run.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from lobflows import errors
from lobflows.connectors import base as connectors
from lobflows.engine import Engine
from lobflows.spec import models
from lobflows.transform import templates

log = logging.getLogger(__name__)
IDLE_SECONDS = 30.0


class Poller:
    """Polls every flow of an engine that has a poll trigger, each at its interval."""

    def __init__(
        self,
        engine: Engine,
        *,
        now: Callable[[], float] = time.time,
        on_started: Callable[[], None] = lambda: None,
    ) -> None:
        self.engine = engine
        self.now = now
        self.on_started = on_started
        self.polls = {
            name: loaded.spec.trigger.poll
            for name, loaded in engine.project.flows.items()
            if loaded.spec.trigger.poll is not None
        }

    async def tick(self) -> list[str]:
        """Poll the flows that are due; return the ids of the runs started."""
        started: list[str] = []
        for flow, spec in self.polls.items():
            state = await self.engine.store.poll_state(flow)
            if state is not None and self.now() - state[1] < spec.every_seconds:
                continue
            try:
                started.extend(await self._poll(flow, spec, state))
            except errors.LobflowsError as exc:
                log.warning(
                    "Poll failed; it is tried again next interval",
                    extra={"event": "poll_failed", "flow": flow, "error": str(exc)},
                )
        if started:
            self.on_started()
        return started

    async def _poll(
        self, flow: str, spec: models.PollTrigger, state: tuple[Any, float] | None
    ) -> list[str]:
        watermark = spec.start if state is None else state[0]
        result = await self._call(flow, spec, watermark)
        items = templates.compile_template(spec.items).render({"result": result})
        if not isinstance(items, list):
            raise errors.StepInputError(
                f"poll of {flow!r}: items {spec.items!r} gave {type(items).__name__}, not a list"
            )
        started = []
        for item in items:
            key = templates.compile_key_template(spec.id).render({"item": item})
            run, created = await self.engine.start_run(
                flow,
                input=item,
                trigger="poll",
                trigger_data={"watermark": watermark},
                dedupe_key=f"poll:{key}",
            )
            if created:
                started.append(run.id)
            watermark = self._newer(spec, item, watermark)
        # Stored after the runs: a crash in between polls the same items
        # again, and their dedupe keys start nothing twice.
        await self.engine.store.record_poll(
            flow, watermark=watermark, polled_at=self.now()
        )
        return started

    async def _call(self, flow: str, spec: models.PollTrigger, watermark: Any) -> Any:
        connection, action = spec.call.split(".", 1)
        connector = self.engine.connections.get(connection)
        if connector is None:
            raise errors.StepInputError(
                f"poll of {flow!r}: no connection named {connection!r}"
            )
        params = templates.render_value(spec.with_, {"watermark": watermark})
        context = connectors.CallContext(
            run_id=f"poll-{flow}",
            flow=flow,
            step="poll",
            attempt=1,
            timeout_seconds=30.0,
        )
        return await connector.call(action, params, context)

    @staticmethod
    def _newer(spec: models.PollTrigger, item: Any, watermark: Any) -> Any:
        if spec.watermark is None:
            return watermark
        candidate = templates.compile_template(spec.watermark).render({"item": item})
        if watermark is None:
            return candidate
        try:
            return max(watermark, candidate)
        except TypeError:
            return max(str(watermark), str(candidate))

    async def run(self, stopping: asyncio.Event) -> None:
        """Poll until `stopping` is set."""
        if not self.polls:
            return
        interval = min(
            [spec.every_seconds for spec in self.polls.values()] + [IDLE_SECONDS]
        )
        while not stopping.is_set():
            try:
                await self.tick()
            except Exception:
                log.exception("Poll tick failed", extra={"event": "poll_failed"})
            try:
                await asyncio.wait_for(stopping.wait(), timeout=interval)
            except TimeoutError:
                pass
