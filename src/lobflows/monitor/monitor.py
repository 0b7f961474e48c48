"""The monitor: health of every flow and connection from the run store, and the
background loop that checks connections and sends alerts."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from lobflows.connectors.limits import Limiter
from lobflows.monitor import alerts, checks, health
from lobflows.monitor.config import MonitorConfig
from lobflows.secrets import inventory, redactor
from lobflows.spec import loader
from lobflows.store.limits import worse_breaker

log = logging.getLogger(__name__)
RECENT_ERRORS_SECONDS = 86_400.0


@dataclass(frozen=True)
class Usage:
    """Which connections each flow calls, and which steps make the calls."""

    # (flow, step id) -> connections the step's attempts call
    steps: dict[tuple[str, str], set[str]]
    # flow -> every connection it uses, triggers included
    flows: dict[str, list[str]]

    @classmethod
    def of(cls, project: loader.Project) -> Usage:
        steps: dict[tuple[str, str], set[str]] = {}
        flows: dict[str, list[str]] = {}
        for name, flow in project.flows.items():
            used: set[str] = set()
            for _, step in loader.step_locations(flow.document):
                step_id = str(step.get("id"))
                for key, connection in _step_calls(step):
                    steps.setdefault((name, key or step_id), set()).add(connection)
                    used.add(connection)
            used |= _trigger_connections(flow.document.get("trigger"))
            flows[name] = sorted(c for c in used if c in project.connections)
        return cls(steps=steps, flows=flows)


def _step_calls(step: dict[str, Any]) -> list[tuple[str | None, str]]:
    """(attempt step id or None for the step's own, connection) of every call a step makes."""
    found: list[tuple[str | None, str]] = []

    def add(key: str | None, call: Any) -> None:
        if isinstance(call, str) and "." in call:
            found.append((key, call.split(".", 1)[0]))

    add(None, step.get("call"))
    undo = step.get("undo")
    if isinstance(undo, dict):
        add(f"undo.{step.get('id')}", undo.get("call"))
    transform = step.get("transform")
    enrich = transform.get("enrich") if isinstance(transform, dict) else None
    for lookup in enrich if isinstance(enrich, list) else []:
        if isinstance(lookup, dict):
            add(None, lookup.get("call"))
    task = step.get("task")
    notify = task.get("notify") if isinstance(task, dict) else None
    if isinstance(notify, dict):
        add(None, notify.get("call"))
    return found


def _trigger_connections(trigger: Any) -> set[str]:
    if not isinstance(trigger, dict):
        return set()
    found = set()
    poll, event = trigger.get("poll"), trigger.get("event")
    if isinstance(poll, dict) and isinstance(poll.get("call"), str):
        found.add(poll["call"].split(".", 1)[0])
    if isinstance(event, dict) and isinstance(event.get("connection"), str):
        found.add(event["connection"])
    return found


SecretInventory = Callable[[], Awaitable[list[Any]]]


def _secret_inventory(runtime: Any) -> SecretInventory:
    """The secret inventory of this installation, for rotation alerts."""

    async def listed() -> list[Any]:
        return list(await inventory.secret_inventory(runtime))

    return listed


class Monitor:
    """Health snapshots read from the store, and the loop that checks and alerts."""

    def __init__(
        self,
        *,
        store: Any,
        project: loader.Project,
        connections: dict[str, Any],
        config: MonitorConfig,
        owner: str,
        limiter: Limiter | None = None,
        secret_inventory: SecretInventory | None = None,
    ) -> None:
        self.store = store
        self.project = project
        self.connections = connections
        self.config = config
        self.owner = owner
        self.usage = Usage.of(project)
        # The engine's limits and breakers, which alerts go through too.
        self.limiter = limiter
        self.secret_inventory = secret_inventory
        # Whether this process runs a worker, for /readyz.
        self.expects_worker = False
        self.checker = checks.Checker(self)
        self.alerter = alerts.Alerter(self)

    @classmethod
    def for_runtime(cls, runtime: Any, config: MonitorConfig) -> Monitor:
        """The monitor of a running installation: its store, flows and connections."""
        engine = runtime.engine
        return cls(
            store=runtime.store,
            project=engine.project,
            connections=engine.connections,
            config=config,
            owner=engine.owner,
            limiter=engine.limiter,
            secret_inventory=_secret_inventory(runtime),
        )

    def _local_breakers(self) -> dict[str, str]:
        if self.limiter is None:
            return {}
        return {name: b.state for name, b in self.limiter.breakers.items()}

    # -- snapshot ------------------------------------------------------

    async def snapshot(self) -> health.Snapshot:
        """Health of every flow and connection, computed from the store now."""
        now = time.time()
        day_start = health.start_of_day(now)
        window_start = now - self.config.window_seconds
        flows = {name: health.Figures() for name in self.project.flows}
        calls = {name: health.Figures() for name in self.connections}
        await self._count_today(flows, calls, day_start)
        await self._measure_window(flows, calls, window_start)
        await self._count_backlog(flows, calls, now)
        await self._flow_times(flows)
        check_records = await self.store.check_records()
        letters = {
            flow: (count, at, step, redactor.redact(error))
            for flow, (count, at, step, error) in (
                await self.store.open_dead_letters()
            ).items()
        }
        breakers = _worst_breakers(
            await self.store.breaker_states(now), self._local_breakers()
        )
        connection_health = {
            name: self._connection_health(
                name, calls[name], check_records.get(name), breakers, now
            )
            for name in sorted(self.connections)
        }
        flow_health = {
            name: self._flow_health(
                name, flows[name], connection_health, letters.get(name), now
            )
            for name in sorted(self.project.flows)
        }
        errors = await self.store.recent_errors(now - RECENT_ERRORS_SECONDS)
        recent = [
            health.RecentError(e.at, e.flow, e.run_id, e.step, redactor.redact(e.error))
            for e in errors
        ]
        return health.Snapshot(
            at=now,
            flows=flow_health,
            connections=connection_health,
            recent_errors=recent,
            dead_letters=letters,
        )

    async def _count_today(
        self,
        flows: dict[str, health.Figures],
        calls: dict[str, health.Figures],
        day_start: float,
    ) -> None:
        for flow, _status, count in await self.store.run_counts_since(day_start):
            if flow in flows:
                flows[flow].runs_today += count
        for flow, step, status, count in await self.store.attempt_counts_since(
            day_start
        ):
            if status == "paused":
                continue
            is_error = status in ("failed", "dead")
            if flow in flows and is_error:
                flows[flow].errors_today += count
            for connection in self._called(flow, step, calls):
                calls[connection].runs_today += count
                calls[connection].errors_today += count if is_error else 0

    async def _measure_window(
        self,
        flows: dict[str, health.Figures],
        calls: dict[str, health.Figures],
        window_start: float,
    ) -> None:
        for flow, status, duration, _ in await self.store.finished_runs_since(
            window_start
        ):
            if flow not in flows:
                continue
            figures = flows[flow]
            figures.finished += 1
            figures.failed += status == "failed"
            if status == "succeeded" and duration is not None:
                figures.durations.append(max(0.0, duration))
        steps = {step for _, step in self.usage.steps}
        for (
            flow,
            step,
            status,
            duration,
            finished_at,
            retryable,
        ) in await self.store.attempts_since(window_start, steps=steps):
            if status == "paused":
                continue
            # A call the system refused for its data (a permanent error such
            # as 422) speaks of the data, not of the system's health.
            is_system_failure = status in ("failed", "dead") and retryable is not False
            for connection in self._called(flow, step, calls):
                figures = calls[connection]
                figures.finished += 1
                figures.failed += is_system_failure
                if status == "succeeded":
                    figures.durations.append(max(0.0, duration or 0.0))
                    figures.last_success_at = max(
                        figures.last_success_at or 0.0, finished_at
                    )
                figures.last_run_at = max(figures.last_run_at or 0.0, finished_at)

    async def _count_backlog(
        self,
        flows: dict[str, health.Figures],
        calls: dict[str, health.Figures],
        now: float,
    ) -> None:
        for flow, step, count in await self.store.backlog(now):
            if flow in flows:
                flows[flow].backlog += count
            for connection in self._called(flow, step or "", calls):
                calls[connection].backlog += count

    async def _flow_times(self, flows: dict[str, health.Figures]) -> None:
        times = await self.store.flow_times(sorted(flows))
        registered = await self.store.first_registered()
        for name, figures in flows.items():
            figures.last_run_at, figures.last_success_at = times.get(name, (None, None))
            figures.registered_at = registered.get(name)

    def _called(
        self, flow: str, step: str, calls: dict[str, health.Figures]
    ) -> set[str]:
        return {c for c in self.usage.steps.get((flow, step), ()) if c in calls}

    def _connection_health(
        self,
        name: str,
        figures: health.Figures,
        record: Any,
        breakers: dict[str, str],
        now: float,
    ) -> health.Health:
        checked = record is not None and record.checked_at is not None
        check = (
            (record.failures, record.failing_since, record.message) if checked else None
        )
        breaker = breakers.get(name, "closed")
        verdict = health.judge_connection(figures, check, breaker, self.config, now=now)
        if checked:
            check_result = record.message or ("passed" if record.ok else "failed")
        elif checks.has_check(self.connections[name]):
            check_result = "not checked yet"
        else:
            check_result = "no check for this type"
        if not checked and figures.finished == 0 and not verdict.reasons:
            verdict.add("unknown", f"{check_result} and no calls in the window")
        last_success = figures.last_success_at
        if checked and record.last_ok_at is not None:
            last_success = max(last_success or 0.0, record.last_ok_at)
        return health.Health.measured(
            "connection",
            name,
            verdict,
            figures,
            last_success_at=last_success,
            breaker=breaker,
            last_check_at=record.checked_at if checked else None,
            check_error=None if not checked or record.ok else record.message,
            check_result=check_result,
        )

    def _flow_health(
        self,
        name: str,
        figures: health.Figures,
        connections: dict[str, health.Health],
        letters: tuple[int, float, str, str] | None,
        now: float,
    ) -> health.Health:
        expect = self.project.flows[name].spec.card.expect
        verdict = health.judge_flow(figures, expect, self.config, now=now)
        # Dead letters alert under a subject of their own; the flow's own
        # status leaves them out, so one failure is one alert.
        own_status = verdict.status
        if letters is not None:
            count, _, step, error = letters
            verdict.add("degraded", health.dead_letter_reason(count, step, error))
        used = self.usage.flows.get(name, [])
        for connection in used:
            found = connections.get(connection)
            if found is not None and found.status in ("degraded", "down"):
                verdict.add(found.status, f"connection {connection} is {found.status}")
        return health.Health.measured(
            "flow", name, verdict, figures, own_status=own_status, connections=used
        )

    # -- the loop ------------------------------------------------------

    async def tick(self) -> None:
        """One round: run the checks that are due, then evaluate the alert rules."""
        await self.checker.run_due()
        await self.alerter.evaluate()

    async def run(self, stopping: asyncio.Event) -> None:
        """Check and alert every tick until `stopping` is set; a failing round
        is logged and the next one comes."""
        log.info(
            "Monitor started",
            extra={
                "event": "monitor_started",
                "connections": len(self.connections),
                "interval_seconds": self.config.checks.interval_seconds,
            },
        )
        while not stopping.is_set():
            try:
                await self.tick()
            except Exception:
                log.exception("Monitor round failed", extra={"event": "monitor_failed"})
            try:
                await asyncio.wait_for(stopping.wait(), self.config.tick_seconds)
            except TimeoutError:
                pass


def _worst_breakers(*views: dict[str, str]) -> dict[str, str]:
    """Each connection's worst breaker state among the views given: the ones
    every process recorded, and this process's own."""
    worst: dict[str, str] = {}
    for view in views:
        for connection, state in view.items():
            worst[connection] = worse_breaker(state, worst.get(connection, "closed"))
    return worst
