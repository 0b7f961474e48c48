"""Parallel branches: journaled and retried one by one, settled together."""

from __future__ import annotations

from pathlib import Path

import pytest

from lobflows import errors
from lobflows.engine.clock import ManualClock
from lobflows.runtime import Runtime
from lobflows.settings import Settings
from lobflows.spec import loader
from lobflows.testing.servers import ServerThread
from tests.support import Service, pass_once

pytestmark = pytest.mark.integration

FLOW = """flow: provision
card:
  trigger: by hand
  data: {entity: employee, sensitivity: internal}
  transform: none
  target: a local service
  on_failure: retry, then dead letter
  owner: it@example.com
trigger: {manual: {}}
retry: {max_attempts: 3, initial_delay_seconds: 10}
steps:
  - id: provision
    parallel:
      mail:
        - id: mailbox
          call: svc.request
          with: {method: POST, path: /mailbox}
      badge:
        - id: badge
          call: svc.request
          with: {method: POST, path: /badge}
        - id: badge_done
          map: {status: "{{ steps.badge.status }}"}
  - id: done
    map: {ok: true}
"""


@pytest.fixture
async def setup(store_url: str, tmp_path: Path):
    service = Service()
    with ServerThread(service.app()) as server:
        (tmp_path / "provision.yaml").write_text(FLOW)
        (tmp_path / "connections.yaml").write_text(
            f"connections:\n  svc: {{type: http, base_url: '{server.url}'}}\n"
        )
        runtime = await Runtime.open(Settings(database_url=store_url), tmp_path)
        runtime.engine.clock = ManualClock()
        yield runtime, service
        await runtime.close()


async def test_branches_all_finish_before_the_run_goes_on(setup):
    runtime, service = setup
    run, _ = await runtime.engine.start_run("provision", input={}, trigger="manual")

    await pass_once(runtime)

    assert (await runtime.store.get_run(run.id)).status == "succeeded"
    steps = await runtime.store.completed_steps(run.id)
    provision = steps["provision"]
    assert provision["branches"] == ["mail", "badge"]
    assert (sorted(provision["succeeded"]), provision["failed"]) == (
        ["badge", "mail"],
        {},
    )
    assert service.calls == {"/mailbox": 1, "/badge": 1}


async def test_a_failing_branch_is_retried_alone(setup):
    runtime, service = setup
    service.failures["/badge"] = [503]
    run, _ = await runtime.engine.start_run("provision", input={}, trigger="manual")

    await pass_once(runtime)
    queued = await runtime.store.get_run(run.id)
    runtime.engine.clock.advance(11)
    await pass_once(runtime)

    assert queued.status == "queued"
    assert (await runtime.store.get_run(run.id)).status == "succeeded"
    assert service.calls == {
        "/mailbox": 1,
        "/badge": 2,
    }  # the mailbox was not called again


async def test_branches_failing_together_each_keep_their_attempt_count(setup):
    runtime, service = setup
    service.failures["/badge"] = [503, 503]
    service.failures["/mailbox"] = [503]
    run, _ = await runtime.engine.start_run("provision", input={}, trigger="manual")

    for _ in range(3):
        await pass_once(runtime)
        runtime.engine.clock.advance(25)

    assert (await runtime.store.get_run(run.id)).status == "succeeded"
    tries = [
        (a.step, a.attempt, a.status)
        for a in await runtime.store.attempts(run.id)
        if a.step in ("badge", "mailbox")
    ]
    assert sorted(tries) == [
        ("badge", 1, "failed"),
        ("badge", 2, "failed"),
        ("badge", 3, "succeeded"),
        ("mailbox", 1, "failed"),
        ("mailbox", 2, "succeeded"),
    ]


async def test_a_branch_that_cannot_go_on_dead_letters_the_run_after_the_others_stop(
    setup,
):
    runtime, service = setup
    service.failures["/badge"] = [422]
    run, _ = await runtime.engine.start_run("provision", input={}, trigger="manual")

    await pass_once(runtime)

    failed = await runtime.store.get_run(run.id)
    assert failed.status == "failed" and "422" in failed.error
    [letter] = await runtime.store.dead_letters()
    assert letter.step == "badge"
    assert "mailbox" in await runtime.store.completed_steps(run.id)

    await runtime.store.replay_dead_letter(letter.id)
    runtime.engine.clock.advance(60)  # the replay is due by the wall clock
    await pass_once(runtime)

    assert (await runtime.store.get_run(run.id)).status == "succeeded"
    assert service.calls == {"/mailbox": 1, "/badge": 2}


def test_a_wait_inside_a_branch_is_refused_at_load():
    text = FLOW.replace(
        '        - id: badge_done\n          map: {status: "{{ steps.badge.status }}"}',
        "        - id: badge_done\n          wait: {signal: go}",
    )

    with pytest.raises(
        errors.FlowFileError, match="a wait step cannot run in a parallel branch yet"
    ):
        loader.load_flow_text(text, "provision.yaml")


RACE = """flow: race
card:
  trigger: by hand
  data: {entity: quote, sensitivity: internal}
  transform: none
  target: a local service
  on_failure: collect, then decide
  owner: buying@example.com
trigger: {manual: {}}
retry: {max_attempts: 2, initial_delay_seconds: 10}
steps:
  - id: quotes
    parallel:
      alpha:
        - id: ask_alpha
          call: svc.request
          with: {method: POST, path: /alpha}
      beta:
        - id: ask_beta
          call: svc.request
          with: {method: POST, path: /beta}
      gamma:
        - id: ask_gamma
          call: svc.request
          with: {method: POST, path: /gamma}
    join: JOIN
    on_branch_failure: collect
"""


@pytest.fixture
async def race(store_url: str, tmp_path: Path, request: pytest.FixtureRequest):
    service = Service()
    with ServerThread(service.app()) as server:
        (tmp_path / "race.yaml").write_text(RACE.replace("JOIN", str(request.param)))
        (tmp_path / "connections.yaml").write_text(
            f"connections:\n  svc: {{type: http, base_url: '{server.url}'}}\n"
        )
        runtime = await Runtime.open(Settings(database_url=store_url), tmp_path)
        runtime.engine.clock = ManualClock()
        yield runtime, service
        await runtime.close()


@pytest.mark.parametrize("race", [2], indirect=True)
async def test_a_join_of_two_goes_on_without_the_retrying_branch(race):
    runtime, service = race
    service.failures["/gamma"] = [503]
    run, _ = await runtime.engine.start_run("race", input={}, trigger="manual")

    await pass_once(runtime)

    assert (await runtime.store.get_run(run.id)).status == "succeeded"
    quotes = (await runtime.store.completed_steps(run.id))["quotes"]
    assert sorted(quotes["succeeded"]) == ["alpha", "beta"]
    runtime.engine.clock.advance(3600)
    assert await pass_once(runtime) == 0
    assert service.calls["/gamma"] == 1  # its retry was dropped with the join met


@pytest.mark.parametrize("race", ["all"], indirect=True)
async def test_collected_branch_failures_are_noted_and_the_others_complete(race):
    runtime, service = race
    service.failures["/beta"] = [422]
    service.failures["/gamma"] = [503]
    run, _ = await runtime.engine.start_run("race", input={}, trigger="manual")

    await pass_once(runtime)  # beta failed for good, gamma waits for its retry
    assert (await runtime.store.get_run(run.id)).status == "queued"
    runtime.engine.clock.advance(11)
    await pass_once(runtime)

    assert (await runtime.store.get_run(run.id)).status == "succeeded"
    quotes = (await runtime.store.completed_steps(run.id))["quotes"]
    assert sorted(quotes["succeeded"]) == ["alpha", "gamma"]
    assert quotes["failed"]["beta"]["step"] == "ask_beta"
    assert "422" in quotes["failed"]["beta"]["error"]
    assert service.calls == {"/alpha": 1, "/beta": 1, "/gamma": 2}
    assert await runtime.store.dead_letters() == []


@pytest.mark.parametrize("race", ["any"], indirect=True)
async def test_a_join_of_any_with_every_branch_failing_still_ends_the_step(race):
    runtime, service = race
    for path in ("/alpha", "/beta", "/gamma"):
        service.failures[path] = [400]
    run, _ = await runtime.engine.start_run("race", input={}, trigger="manual")

    await pass_once(runtime)

    quotes = (await runtime.store.completed_steps(run.id))["quotes"]
    assert quotes["succeeded"] == []
    assert sorted(quotes["failed"]) == ["alpha", "beta", "gamma"]


def test_a_join_larger_than_the_branches_is_refused_at_load(tmp_path: Path):
    path = tmp_path / "race.yaml"
    path.write_text(RACE.replace("JOIN", "4"))
    with pytest.raises(errors.FlowFileError) as refused:
        loader.load_flow_file(path)
    assert "join 4 is more than the 3 branches" in str(refused.value.problems[0])
