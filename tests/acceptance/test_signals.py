"""Signals reach waiting runs through the CLI and the REST API of a real server."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from lobflows.store import RunStore
from tests import support

pytestmark = pytest.mark.acceptance
TOKEN = "signal-api-token"

FLOW = """flow: expense
card:
  trigger: by hand
  data: {entity: expense claim, sensitivity: internal}
  transform: none
  target: the run store
  on_failure: dead letter
  owner: finance@example.com
trigger: {manual: {}}
steps:
  - id: decision
    wait: {signal: decided}
  - id: outcome
    map: {approved: "{{ steps.decision.payload.approved }}"}
"""


@pytest.fixture
def server(store_url: str, tmp_path: Path):
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "expense.yaml").write_text(FLOW)
    env = support.base_env(
        store_url, LOBFLOWS_API_TOKEN=TOKEN, LOBFLOWS_POLL_INTERVAL="0.1"
    )
    process = support.ServerProcess(env, flows, tmp_path / "server.log").start()
    yield process
    process.stop()


def start(server: support.ServerProcess) -> str:
    queued = support.cli(
        server.env, "run", "expense", "--flows", str(server.flows_dir), "--no-wait"
    )
    assert queued.returncode == 0, queued.stderr
    return queued.stdout.split()[1]


async def test_lobflows_signal_wakes_a_waiting_run(
    server, store: RunStore, tmp_path: Path
):
    run_id = start(server)
    await support.wait_for_run(store, run_id, statuses=("waiting",))
    data = tmp_path / "decision.json"
    data.write_text(json.dumps({"approved": True}))

    sent = support.cli(server.env, "signal", run_id[:8], "decided", "--data", str(data))

    assert sent.returncode == 0, sent.stderr
    run = await support.wait_for_run(store, run_id)
    assert run.status == "succeeded"
    assert (await store.completed_steps(run_id))["outcome"] == {"approved": True}


async def test_the_rest_api_sends_signals_with_its_token(server, store: RunStore):
    run_id = start(server)
    await support.wait_for_run(store, run_id, statuses=("waiting",))
    url = f"{server.url}/api/runs/{run_id}/signals/decided"

    refused = httpx.post(url, json={"approved": False})
    bad_name = httpx.post(
        f"{server.url}/api/runs/{run_id}/signals/Not%20A%20Name",
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    accepted = httpx.post(
        url, json={"approved": False}, headers={"Authorization": f"Bearer {TOKEN}"}
    )

    assert refused.status_code == 401 and bad_name.status_code == 400
    assert accepted.status_code == 202
    await support.wait_for_run(store, run_id)
    assert (await store.completed_steps(run_id))["outcome"] == {"approved": False}


def test_run_by_hand_returns_when_the_run_starts_waiting(
    store_url: str, tmp_path: Path
):
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "expense.yaml").write_text(FLOW)
    env = support.base_env(store_url)

    result = support.cli(env, "run", "expense", "--flows", str(flows), timeout=30)

    assert result.returncode == 0, result.stderr
    assert "waits at step decision" in result.stdout
