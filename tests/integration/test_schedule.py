"""Schedule triggers against a real store, with the scheduler's clock driven by the test."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from pathlib import Path

import pytest

from lobflows.runtime import Runtime
from lobflows.settings import Settings
from lobflows.triggers.schedule import Scheduler

pytestmark = pytest.mark.integration
BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")

FLOW = """flow: nightly
card:
  trigger: every night at 02:30 Berlin time
  data: {entity: report, sensitivity: internal}
  transform: none
  target: the run store
  on_failure: dead letter
  owner: team@example.com
trigger:
  schedule: {cron: "CRON", timezone: Europe/Berlin, missed: MISSED, max_catch_up: 2, input: {kind: nightly}}
steps:
  - id: stamp
    map: {when: "{{ input.scheduled_for }}", kind: "{{ input.kind }}"}
"""


class Clock:
    """The scheduler's now, moved by the test."""

    def __init__(self, start: dt.datetime) -> None:
        self.current = start

    def __call__(self) -> dt.datetime:
        return self.current


async def open_runtime(
    store_url: str, folder: Path, *, cron: str = "30 2 * * *", missed: str = "skip"
) -> Runtime:
    (folder / "nightly.yaml").write_text(
        FLOW.replace("CRON", cron).replace("MISSED", missed)
    )
    return await Runtime.open(Settings(database_url=store_url), folder)


async def scheduled_for(runtime: Runtime) -> list[str]:
    runs = await runtime.store.list_runs(flow="nightly", limit=100)
    return sorted(run.input["scheduled_for"] for run in runs)


def local(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=BERLIN)


async def test_a_new_schedule_starts_from_now_and_runs_at_its_time(
    store_url: str, tmp_path: Path
):
    runtime = await open_runtime(store_url, tmp_path)
    clock = Clock(local(2026, 6, 1, 12, 0))
    scheduler = Scheduler(runtime.engine, now=clock)
    try:
        assert await scheduler.tick() == []  # nothing in the past is owed
        clock.current = local(2026, 6, 2, 2, 30, 5)
        [run_id] = await scheduler.tick()
        assert await scheduler.tick() == []  # the same time never fires twice
        run = await runtime.store.get_run(run_id)
    finally:
        await runtime.close()

    assert run.trigger == "schedule"
    assert run.input == {
        "kind": "nightly",
        "scheduled_for": "2026-06-02T02:30:00+02:00",
    }


@pytest.mark.parametrize(
    ("last", "now", "expected"),
    [
        # 2026-03-29 02:30 does not exist in Berlin: the run comes once, at 03:00
        (
            local(2026, 3, 28, 12, 0),
            local(2026, 3, 29, 3, 0, 30),
            ["2026-03-29T03:00:00+02:00"],
        ),
        # 2026-10-25 02:30 happens twice in Berlin: the run comes once, the first time
        (
            local(2026, 10, 24, 12, 0),
            local(2026, 10, 25, 3, 0),
            ["2026-10-25T02:30:00+02:00"],
        ),
    ],
    ids=["spring-gap", "autumn-overlap"],
)
async def test_daylight_saving_changes_run_a_time_once(
    store_url: str, tmp_path: Path, last, now, expected
):
    runtime = await open_runtime(store_url, tmp_path)
    clock = Clock(last)
    scheduler = Scheduler(runtime.engine, now=clock)
    try:
        await scheduler.tick()
        for minutes in range(120, -1, -1):  # tick every minute through the change
            clock.current = now - dt.timedelta(minutes=minutes)
            await scheduler.tick()
        times = await scheduled_for(runtime)
    finally:
        await runtime.close()

    assert times == expected


@pytest.mark.parametrize(
    ("missed", "expected"),
    [
        ("skip", ["2026-06-06T02:30:00+02:00"]),  # only the run due now
        (
            "catch_up",
            [
                "2026-06-04T02:30:00+02:00",
                "2026-06-05T02:30:00+02:00",
                "2026-06-06T02:30:00+02:00",
            ],
        ),
    ],
)
async def test_runs_missed_while_down_follow_the_policy(
    store_url: str, tmp_path: Path, missed: str, expected: list[str]
):
    runtime = await open_runtime(store_url, tmp_path, missed=missed)
    clock = Clock(local(2026, 6, 1, 12, 0))
    scheduler = Scheduler(runtime.engine, now=clock)
    try:
        await scheduler.tick()
        clock.current = local(2026, 6, 6, 2, 30, 10)  # down for five nights
        await scheduler.tick()
        times = await scheduled_for(runtime)
    finally:
        await runtime.close()

    # catch_up keeps the two most recent missed nights (max_catch_up: 2) and tonight
    assert times == expected


async def test_two_schedulers_start_one_run_per_time(store_url: str, tmp_path: Path):
    first = await open_runtime(store_url, tmp_path)
    second = await open_runtime(store_url, tmp_path)
    clock = Clock(local(2026, 6, 1, 12, 0))
    schedulers = [
        Scheduler(first.engine, now=clock),
        Scheduler(second.engine, now=clock),
    ]
    try:
        await schedulers[0].tick()
        clock.current = local(2026, 6, 2, 2, 30, 1)
        for scheduler in schedulers:
            await scheduler.tick()
        times = await scheduled_for(first)
    finally:
        await first.close()
        await second.close()

    assert times == ["2026-06-02T02:30:00+02:00"]
