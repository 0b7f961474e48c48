"""The dashboard of a real ``lobflows serve``: its live updates arrive as
server-sent events, and a failing run changes its flow's tile."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from lobflows.store import RunStore
from lobflows.web import credentials
from tests import support

pytestmark = pytest.mark.acceptance

FLOW = """flow: push-orders
card:
  trigger: a webhook
  data: {entity: order, sensitivity: internal}
  transform: none
  target: the order service
  on_failure: dead letter
  owner: team@example.com
trigger:
  webhook: {path: /hooks/orders}
retry: {max_attempts: 1, initial_delay_seconds: 1, max_delay_seconds: 1}
steps:
  - id: push
    call: shop.request
    with: {method: POST, path: /orders}
"""
PASSWORD = "correct horse battery staple"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[support.ServerProcess]:
    store_url = f"sqlite:///{tmp_path / 'runs.db'}"
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "push-orders.yaml").write_text(FLOW)
    # Nothing listens on this port: every call fails at once, refused.
    closed = f"http://127.0.0.1:{support.free_port()}"
    (flows / "connections.yaml").write_text(
        f"connections:\n  shop: {{type: http, base_url: '{closed}'}}\n"
    )
    asyncio.run(_add_operator(store_url))
    env = support.base_env(store_url, LOBFLOWS_POLL_INTERVAL="0.1")
    process = support.ServerProcess(env, flows, tmp_path / "server.log")
    process.start()
    yield process
    process.stop()


async def _add_operator(store_url: str) -> None:
    store = RunStore(store_url)
    await store.migrate()
    await store.add_user(
        "olga", roles=["operator"], password_hash=credentials.hash_password(PASSWORD)
    )
    await store.close()


def signed_in(base_url: str) -> httpx.Client:
    client = httpx.Client(base_url=base_url, headers={"Accept": "text/html"})
    page = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token is not None
    reply = client.post(
        "/login",
        data={"name": "olga", "password": PASSWORD, "csrf_token": token.group(1)},
    )
    assert reply.status_code == 303, reply.text
    return client


def snapshots(stream: httpx.Response) -> Iterator[dict[str, Any]]:
    """The data of each ``snapshot`` event of a server-sent event stream."""
    event = ""
    for line in stream.iter_lines():
        if line.startswith("event: "):
            event = line.removeprefix("event: ")
        elif line.startswith("data: ") and event == "snapshot":
            yield json.loads(line.removeprefix("data: "))


def test_the_overview_streams_a_tile_update_when_a_run_fails(
    server: support.ServerProcess,
):
    client = signed_in(server.url)
    overview = client.get("/")
    assert 'src="/static/live.js"' in overview.text
    assert client.get("/static/live.js").status_code == 200
    assert 'data-testid="tile-errors-push-orders">0<' in overview.text

    with client.stream("GET", "/events", timeout=60) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        updates = snapshots(stream)
        first = next(updates)
        assert (
            'data-testid="tile-errors-push-orders">0<' in first["tiles"]["push-orders"]
        )

        hook = httpx.post(server.url + "/hooks/orders", json={"id": 1}, timeout=10)
        assert hook.status_code == 202, hook.text

        deadline = time.monotonic() + 60
        for update in updates:
            tile = update["tiles"]["push-orders"]
            if 'data-testid="tile-errors-push-orders">1<' in tile:
                break
            assert time.monotonic() < deadline, "no tile update arrived"
        assert 'data-testid="recent-error"' in update["errors"]

    anonymous = httpx.get(server.url + "/events", timeout=10)
    assert anonymous.status_code == 401
