"""The scale-out shape: an HTTP-only server and separate worker processes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from lobflows.store import RunStore
from tests import support
from tests.conftest import Standins

pytestmark = pytest.mark.acceptance


async def test_runs_taken_by_the_web_front_are_executed_by_separate_workers(
    onboarding_env, store: RunStore, standins: Standins, tmp_path: Path
):
    front = support.ServerProcess(
        {**onboarding_env, "LOBFLOWS_NO_WORKER": "1"},
        support.ONBOARDING / "flows",
        tmp_path / "front.log",
    ).start()
    workers = [
        support.ServerProcess(
            onboarding_env,
            support.ONBOARDING / "flows",
            tmp_path / f"worker-{n}.log",
            command="worker",
        ).start()
        for n in range(2)
    ]
    try:
        run_ids = [
            front.post_hire(support.sample_hire(id=str(5000 + n))).json()["run_id"]
            for n in range(6)
        ]
        runs = [await support.wait_for_run(store, run_id) for run_id in run_ids]
    finally:
        for process in (front, *workers):
            process.stop()

    assert [run.status for run in runs] == ["succeeded"] * 6
    assert len(standins.erpnext.docs["Employee"]) == 6
    assert len(support.welcomes(standins)) == 6
    assert "worker_started" in workers[0].log() and "worker_stopped" in workers[0].log()
    assert "step_succeeded" not in front.log()  # the front only stores and answers


async def test_the_server_logs_one_line_per_state_change_with_ids(
    onboarding_server, store: RunStore
):
    reply = onboarding_server.post_hire(support.sample_hire())
    run = await support.wait_for_run(store, reply.json()["run_id"])
    await support.wait_for_log(onboarding_server, "event='run_succeeded'")

    lines = [line for line in onboarding_server.log().splitlines() if run.id in line]
    events = [line.split("event='")[1].split("'")[0] for line in lines]

    assert events[0] == "run_started" and events[-1] == "run_succeeded"
    succeeded = [a for a in await store.attempts(run.id) if a.status == "succeeded"]
    assert events.count("step_succeeded") == len(succeeded) > 5
    assert all("flow='employee-onboarding'" in line for line in lines)


def test_the_rest_api_needs_its_bearer_token(onboarding_env, tmp_path: Path):
    env = {**onboarding_env, "LOBFLOWS_API_TOKEN": "api-token-for-tests"}
    server = support.ServerProcess(
        env, support.ONBOARDING / "flows", tmp_path / "api.log"
    ).start()
    try:
        run_id = server.post_hire(support.sample_hire()).json()["run_id"]
        url = f"{server.url}/api/runs/{run_id}"
        anonymous = httpx.get(url)
        wrong = httpx.get(url, headers={"Authorization": "Bearer nope"})
        right = httpx.get(url, headers={"Authorization": "Bearer api-token-for-tests"})
        lower = httpx.get(url, headers={"Authorization": "bearer api-token-for-tests"})
        schema = httpx.get(
            f"{server.url}/api/openapi.json",
            headers={"Authorization": "Bearer api-token-for-tests"},
        )
    finally:
        server.stop()

    assert anonymous.status_code == 401 and wrong.status_code == 401
    assert right.status_code == 200 and lower.status_code == 200
    assert schema.status_code == 404
    assert (
        right.json()["id"] == run_id and right.json()["flow"] == "employee-onboarding"
    )


async def test_a_stopped_worker_finishes_its_step_and_starts_no_other(
    onboarding_env, store: RunStore, standins: Standins, tmp_path: Path
):
    # ERPNext holds the create for 3 s: the worker is stopped in the middle of it.
    standins.erpnext.add_fault(count=1, delay=3.0, match="POST /api/resource/Employee")
    front = support.ServerProcess(
        {**onboarding_env, "LOBFLOWS_NO_WORKER": "1"},
        support.ONBOARDING / "flows",
        tmp_path / "front.log",
    ).start()
    flows = support.ONBOARDING / "flows"
    first = support.ServerProcess(
        onboarding_env, flows, tmp_path / "w1.log", command="worker"
    ).start()
    try:
        run_id = front.post_hire(support.sample_hire()).json()["run_id"]
        await support.wait_for_log(first, "event='step_succeeded'")  # the map step
        await asyncio.sleep(0.5)
        first.stop()  # SIGTERM while the create is in flight

        released = await store.get_run(run_id)
        completed = await store.completed_steps(run_id)
        second = support.ServerProcess(
            onboarding_env, flows, tmp_path / "w2.log", command="worker"
        ).start()
        try:
            run = await support.wait_for_run(store, run_id)
        finally:
            second.stop()
    finally:
        front.stop()

    assert released.status == "queued"
    assert set(completed) == {"hire", "create_employee"}  # finished, nothing after
    assert run.status == "succeeded"
    assert standins.erpnext.request_counts["POST /api/resource/Employee"] == 1
    assert len(support.welcomes(standins)) == 1
