"""Schedule triggers: cron expressions in IANA time zones start runs.

Every worker process runs a scheduler. Each fire time starts at most one run
whichever processes see it, because the run's dedupe key is the fire time.
The last handled fire time is stored per flow, so a restart knows which
times were missed while no worker was up, and the flow's ``missed`` policy
decides: ``skip`` them, or ``catch_up`` with the most recent few.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import zoneinfo
from collections.abc import Callable

import cronsim

from lobflows.engine import Engine
from lobflows.spec import models

log = logging.getLogger(__name__)
# A fire time this close to now is on time, not missed.
ON_TIME_SECONDS = 60.0
# Bounds the walk over a long outage with a frequent expression.
MAX_FIRE_TIMES_WALKED = 100_000
IDLE_SECONDS = 30.0


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def fire_times(
    spec: models.ScheduleTrigger, *, after: dt.datetime, until: dt.datetime
) -> list[dt.datetime]:
    """Fire times later than `after`, up to and including `until`, in the schedule's zone."""
    zone = zoneinfo.ZoneInfo(spec.timezone)
    times: list[dt.datetime] = []
    for when in cronsim.CronSim(spec.cron, after.astimezone(zone)):
        if when > until or len(times) >= MAX_FIRE_TIMES_WALKED:
            break
        times.append(when)
    return times


def next_fire_time(spec: models.ScheduleTrigger, *, after: dt.datetime) -> dt.datetime:
    zone = zoneinfo.ZoneInfo(spec.timezone)
    return next(cronsim.CronSim(spec.cron, after.astimezone(zone)))


def choose(
    spec: models.ScheduleTrigger, due: list[dt.datetime], *, now: dt.datetime
) -> list[dt.datetime]:
    """The fire times to start runs for; the rest are skipped."""
    on_time = [t for t in due if (now - t).total_seconds() <= ON_TIME_SECONDS]
    missed = [t for t in due if t not in on_time]
    if spec.missed == "catch_up":
        missed = missed[-spec.max_catch_up :]
    else:
        missed = []
    return missed + on_time


class Scheduler:
    """Starts the runs of every scheduled flow of an engine as their times come."""

    def __init__(
        self,
        engine: Engine,
        *,
        now: Callable[[], dt.datetime] = utc_now,
        on_started: Callable[[], None] = lambda: None,
    ) -> None:
        self.engine = engine
        self.now = now
        self.on_started = on_started
        self.schedules = {
            name: loaded.spec.trigger.schedule
            for name, loaded in engine.project.flows.items()
            if loaded.spec.trigger.schedule is not None
        }

    async def tick(self) -> list[str]:
        """Start the runs that are due now; return their ids."""
        started: list[str] = []
        for flow, spec in self.schedules.items():
            started.extend(await self._tick_flow(flow, spec))
        return started

    async def _tick_flow(self, flow: str, spec: models.ScheduleTrigger) -> list[str]:
        now = self.now()
        last = await self.engine.store.schedule_last_fire(flow)
        if last is None:
            # A new schedule starts from now; it has missed nothing yet.
            await self.engine.store.record_schedule_fire(flow, now.timestamp())
            return []
        due = fire_times(spec, after=dt.datetime.fromtimestamp(last, dt.UTC), until=now)
        if not due:
            return []
        chosen = choose(spec, due, now=now)
        started = [await self._start(flow, spec, when) for when in chosen]
        await self.engine.store.record_schedule_fire(flow, due[-1].timestamp())
        if started:
            self.on_started()
        skipped = len(due) - len(chosen)
        if skipped:
            log.warning(
                "Scheduled runs missed while no worker was up",
                extra={
                    "event": "schedule_missed",
                    "flow": flow,
                    "skipped": skipped,
                    "policy": spec.missed,
                },
            )
        return started

    async def _start(
        self, flow: str, spec: models.ScheduleTrigger, when: dt.datetime
    ) -> str:
        key = "schedule:" + when.astimezone(dt.UTC).isoformat()
        run, _ = await self.engine.start_run(
            flow,
            input={**spec.input, "scheduled_for": when.isoformat()},
            trigger="schedule",
            trigger_data={
                "cron": spec.cron,
                "timezone": spec.timezone,
                "scheduled_for": when.isoformat(),
            },
            dedupe_key=key,
        )
        return run.id

    async def run(self, stopping: asyncio.Event) -> None:
        """Tick at every fire time until `stopping` is set."""
        if not self.schedules:
            return
        while not stopping.is_set():
            try:
                await self.tick()
            except Exception:
                log.exception(
                    "Scheduler tick failed", extra={"event": "schedule_failed"}
                )
            await self._sleep_until_next(stopping)

    async def _sleep_until_next(self, stopping: asyncio.Event) -> None:
        now = self.now()
        upcoming = [next_fire_time(spec, after=now) for spec in self.schedules.values()]
        seconds = min([(t - now).total_seconds() for t in upcoming] + [IDLE_SECONDS])
        try:
            await asyncio.wait_for(stopping.wait(), timeout=max(seconds, 0.05))
        except TimeoutError:
            pass
