"""Sleep and wait steps: runs that wait hold no worker, only a due time, and
go on when their time or signal comes. The engine's clock is moved by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from lobflows.engine.clock import ManualClock
from lobflows.runtime import Runtime
from lobflows.settings import Settings
from tests.support import pass_once

pytestmark = pytest.mark.integration

FLOW = """flow: approval
card:
  trigger: by hand
  data: {entity: request, sensitivity: internal}
  transform: none
  target: the run store
  on_failure: dead letter
  owner: team@example.com
trigger: {manual: {}}
steps:
  - id: cool_off
    sleep: {seconds: 3600}
  - id: decision
    wait: {signal: approved, timeout_seconds: 86400, on_timeout: ON_TIMEOUT}
  - id: outcome
    map:
      approved_by: {from: steps.decision.payload.by, on_missing: "null"}
      timed_out: {from: steps.decision.timed_out, on_missing: default, default: false}
"""


@pytest.fixture
async def runtime(store_url: str, tmp_path: Path, request: pytest.FixtureRequest):
    on_timeout = getattr(request, "param", "fail")
    (tmp_path / "approval.yaml").write_text(FLOW.replace("ON_TIMEOUT", on_timeout))
    opened = await Runtime.open(Settings(database_url=store_url), tmp_path)
    opened.engine.clock = ManualClock()
    yield opened
    await opened.close()


async def test_a_sleeping_run_waits_for_its_time_without_a_worker(runtime: Runtime):
    run, _ = await runtime.engine.start_run("approval", input={}, trigger="manual")

    assert await pass_once(runtime) == 1
    sleeping = await runtime.store.get_run(run.id)
    assert (sleeping.status, sleeping.current_step) == ("waiting", "cool_off")

    runtime.engine.clock.advance(3599)
    assert await pass_once(runtime) == 0  # not due yet: nothing is claimed
    runtime.engine.clock.advance(2)
    assert await pass_once(runtime) == 1
    waiting = await runtime.store.get_run(run.id)
    assert (waiting.status, waiting.current_step) == ("waiting", "decision")


async def test_a_signal_wakes_the_waiting_run_with_its_payload(runtime: Runtime):
    run, _ = await runtime.engine.start_run("approval", input={}, trigger="manual")
    await pass_once(runtime)
    runtime.engine.clock.advance(3601)
    await pass_once(runtime)

    await runtime.store.send_signal(run.id, "approved", {"by": "m.okafor@example.com"})
    await pass_once(runtime)

    done = await runtime.store.get_run(run.id)
    assert done.status == "succeeded"
    outcome = (await runtime.store.completed_steps(run.id))["outcome"]
    assert outcome == {"approved_by": "m.okafor@example.com", "timed_out": False}


async def test_a_signal_sent_before_the_wait_is_not_lost(runtime: Runtime):
    run, _ = await runtime.engine.start_run("approval", input={}, trigger="manual")
    await pass_once(runtime)  # sleeping
    await runtime.store.send_signal(run.id, "approved", {"by": "early@example.com"})
    runtime.engine.clock.advance(3601)

    await pass_once(runtime)

    assert (await runtime.store.get_run(run.id)).status == "succeeded"


async def test_a_wait_that_times_out_goes_to_the_dead_letter_queue(runtime: Runtime):
    run, _ = await runtime.engine.start_run("approval", input={}, trigger="manual")
    await pass_once(runtime)
    runtime.engine.clock.advance(3601)
    await pass_once(runtime)

    runtime.engine.clock.advance(86401)
    await pass_once(runtime)

    failed = await runtime.store.get_run(run.id)
    assert failed.status == "failed"
    assert "no signal 'approved' came within 86400 s" in failed.error
    [letter] = await runtime.store.dead_letters()
    assert letter.step == "decision"


@pytest.mark.parametrize("runtime", ["continue"], indirect=True)
async def test_a_wait_may_continue_on_timeout_for_an_escalation_path(runtime: Runtime):
    run, _ = await runtime.engine.start_run("approval", input={}, trigger="manual")
    await pass_once(runtime)
    runtime.engine.clock.advance(3601)
    await pass_once(runtime)
    runtime.engine.clock.advance(86401)
    await pass_once(runtime)

    assert (await runtime.store.get_run(run.id)).status == "succeeded"
    assert (await runtime.store.completed_steps(run.id))["outcome"] == {
        "approved_by": None,
        "timed_out": True,
    }
