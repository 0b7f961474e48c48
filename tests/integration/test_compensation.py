"""Compensation: when a step fails for good, the completed steps that declare
an undo are undone in reverse order, each journaled and retried like a step."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from lobflows import errors
from lobflows.engine.clock import ManualClock
from lobflows.runtime import Runtime
from lobflows.settings import Settings
from lobflows.testing.servers import ServerThread
from tests.support import Service, pass_once

pytestmark = pytest.mark.integration

FLOW = """flow: book-trip
card:
  trigger: by hand
  data: {entity: trip, sensitivity: internal}
  transform: none
  target: a local service
  on_failure: undo the bookings, then dead letter
  owner: travel@example.com
trigger: {manual: {}}
retry: {max_attempts: 2, initial_delay_seconds: 10}
steps:
  - id: flight
    call: svc.request
    with: {method: POST, path: /flights}
    undo:
      call: svc.request
      with: {method: DELETE, path: "/flights/{{ steps.flight.body.ok }}"}
  - id: note
    map: {booked: true}
  - id: hotel
    call: svc.request
    with: {method: POST, path: /hotels}
    undo:
      call: svc.request
      with: {method: DELETE, path: /hotels/1}
  - id: car
    call: svc.request
    with: {method: POST, path: /cars}
"""


@pytest.fixture
async def setup(store_url: str, tmp_path: Path):
    service = Service()
    with ServerThread(service.app()) as server:
        (tmp_path / "book-trip.yaml").write_text(FLOW)
        (tmp_path / "connections.yaml").write_text(
            f"connections:\n  svc: {{type: http, base_url: '{server.url}'}}\n"
        )
        runtime = await Runtime.open(Settings(database_url=store_url), tmp_path)
        # A replay queues the run by the real time; the test clock stays ahead of it.
        runtime.engine.clock = ManualClock(start=time.time() + 3600)
        yield runtime, service
        await runtime.close()


async def test_a_permanent_failure_undoes_the_completed_steps_in_reverse(setup):
    runtime, service = setup
    service.failures["/cars"] = [422]
    run, _ = await runtime.engine.start_run("book-trip", input={}, trigger="manual")

    await pass_once(runtime)

    assert service.log == [
        "POST /flights",
        "POST /hotels",
        "POST /cars",
        "DELETE /hotels/1",
        "DELETE /flights/True",
    ]
    failed = await runtime.store.get_run(run.id)
    assert failed.status == "failed"
    assert "(undone: hotel, flight)" in failed.error
    [letter] = await runtime.store.dead_letters()
    assert letter.step == "car"
    steps = [(a.step, a.status) for a in await runtime.store.attempts(run.id)]
    assert steps[-4:] == [
        ("compensation", "succeeded"),
        ("undo.hotel", "succeeded"),
        ("undo.flight", "succeeded"),
        ("car", "dead"),
    ]
    with pytest.raises(errors.StoreError, match="was compensated"):
        await runtime.store.replay_dead_letter(letter.id)


async def test_a_failing_undo_is_retried_then_the_rest_follows(setup):
    runtime, service = setup
    service.failures["/cars"] = [422]
    service.failures["/hotels/1"] = [503]
    run, _ = await runtime.engine.start_run("book-trip", input={}, trigger="manual")

    await pass_once(runtime)
    queued = await runtime.store.get_run(run.id)
    assert (queued.status, queued.current_step) == ("queued", "undo.hotel")

    runtime.engine.clock.advance(11)
    await pass_once(runtime)

    assert service.log[-3:] == [
        "DELETE /hotels/1",
        "DELETE /hotels/1",
        "DELETE /flights/True",
    ]
    assert service.calls["/cars"] == 1  # the failed step is not tried again
    assert (await runtime.store.get_run(run.id)).status == "failed"


async def test_an_undo_that_cannot_succeed_parks_the_run_where_it_stopped(setup):
    runtime, service = setup
    service.failures["/cars"] = [422]
    service.failures["/hotels/1"] = [400]
    run, _ = await runtime.engine.start_run("book-trip", input={}, trigger="manual")

    await pass_once(runtime)

    [letter] = await runtime.store.dead_letters()
    assert letter.step == "undo.hotel"
    assert "/flights" not in " ".join(service.log[3:])  # the flight is kept for now

    await runtime.store.replay_dead_letter(letter.id)
    await pass_once(runtime)

    assert service.log[-2:] == ["DELETE /hotels/1", "DELETE /flights/True"]
    failed = await runtime.store.get_run(run.id)
    assert failed.status == "failed"
    assert "(undone: hotel, flight)" in failed.error


async def test_a_run_without_failures_undoes_nothing(setup):
    runtime, service = setup
    run, _ = await runtime.engine.start_run("book-trip", input={}, trigger="manual")

    await pass_once(runtime)

    assert (await runtime.store.get_run(run.id)).status == "succeeded"
    assert not any(call.startswith("DELETE") for call in service.log)
