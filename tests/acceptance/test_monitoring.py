"""Killing a target server turns its connection, and the flow that calls it,
degraded then down, and sends exactly one alert; bringing it back sends one
resolved message. A server and a second worker process share the store."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from lobflows.runtime import Runtime
from lobflows.settings import Settings
from lobflows.testing.chat_webhooks import create_mattermost_app
from lobflows.testing.servers import ServerThread
from tests import support

HOOK_KEY = "monitorhookkey0000000000"
DEADLINE_SECONDS = 60.0

FLOW = """flow: order-sync
card:
  trigger: by hand
  data: {entity: order, sensitivity: internal}
  transform: none
  target: the order system
  on_failure: dead letter
  owner: ops@example.com
  expect: {latency: 30s, error_rate: 5%}
trigger: {manual: {}}
steps:
  - call: orders.request
    with: {path: /orders}
"""

MONITOR = """checks:
  interval: 0.3s
  timeout: 2s
  degraded_after_failures: 1
  down_after_failures: 6
window: 1h
alerts:
  throttle: 1h
  rules:
    - when: {status: down}
      send:
        connection: ops-chat
        action: post
        with: {text: "{{ alert.summary }}"}
"""


def _target_app() -> Starlette:
    async def index(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    return Starlette(routes=[Route("/api", index), Route("/api/orders", index)])


@pytest.fixture
def target() -> Iterator[ServerThread]:
    server = ServerThread(_target_app())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def chat() -> Iterator[tuple[ServerThread, Starlette]]:
    app = create_mattermost_app(hook_key=HOOK_KEY)
    with ServerThread(app) as server:
        yield server, app


def _flows_dir(tmp_path: Path, target_url: str) -> Path:
    folder = tmp_path / "flows"
    folder.mkdir()
    (folder / "order-sync.yaml").write_text(FLOW)
    (folder / "monitor.yaml").write_text(MONITOR)
    (folder / "connections.yaml").write_text(
        f"""connections:
  orders: {{type: http, base_url: "{target_url}/api"}}
  ops-chat: {{type: mattermost_webhook, url_secret: ops-chat-webhook}}
"""
    )
    return folder


async def _wait_for(runtime: Runtime, wanted: str, seen: list[str]) -> None:
    """Poll the health of connection orders until it is `wanted`, noting each status."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    while True:
        snapshot = await runtime.monitor.snapshot()
        status = snapshot.connections["orders"].status
        flow_status = snapshot.flows["order-sync"].status
        if not seen or seen[-1] != f"{status}/{flow_status}":
            seen.append(f"{status}/{flow_status}")
        if status == wanted:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"connection orders never became {wanted}: {seen}")
        await asyncio.sleep(0.05)


async def _wait_for_messages(app: Starlette, count: int) -> list[str]:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while len(app.state.chat.messages) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{count} chat messages never came")
        await asyncio.sleep(0.05)
    return [m.payload["text"] for m in app.state.chat.messages]


async def _wait_for_more_checks(runtime: Runtime, rounds: int) -> None:
    """Let the monitor loops run several more rounds (checks keep being recorded)."""
    first = (await runtime.store.check_records())["orders"].checked_at or 0.0
    deadline = time.monotonic() + DEADLINE_SECONDS
    seen = 0
    last = first
    while seen < rounds:
        record = (await runtime.store.check_records())["orders"]
        if record.checked_at and record.checked_at > last:
            seen, last = seen + 1, record.checked_at
        if time.monotonic() > deadline:
            raise TimeoutError("the monitor stopped checking")
        await asyncio.sleep(0.05)


async def test_killing_the_target_sends_one_alert_and_restoring_it_one_resolved(
    tmp_path: Path, target: ServerThread, chat: tuple[ServerThread, Starlette]
):
    # Given a server and a second worker watching a flow whose connection reaches the target
    chat_server, chat_app = chat
    flows = _flows_dir(tmp_path, target.url)
    store_url = f"sqlite:///{tmp_path / 'runs.db'}"
    env = support.base_env(
        store_url,
        LOBFLOWS_SECRET_OPS_CHAT_WEBHOOK=f"{chat_server.url}/hooks/{HOOK_KEY}",
    )
    server = support.ServerProcess(env, flows, tmp_path / "server.log").start()
    worker = support.ServerProcess(
        env, flows, tmp_path / "worker.log", command="worker"
    ).start()
    runtime = await Runtime.open(Settings(database_url=store_url), flows)
    seen: list[str] = []
    try:
        await _wait_for(runtime, "healthy", seen)
        ready = httpx.get(server.url + "/readyz", timeout=10)
        anonymous = httpx.get(server.url + "/metrics", timeout=10)
        assert (ready.status_code, ready.json()) == (200, {"status": "ready"})
        assert anonymous.status_code == 401  # metrics need a user or a token

        # When the target dies
        target.stop()

        # Then the connection turns degraded, then down, and so does the flow
        await _wait_for(runtime, "down", seen)
        assert seen.index("degraded/degraded") < seen.index("down/down"), seen
        snapshot = await runtime.monitor.snapshot()
        assert any(
            "checks failed in a row" in r
            for r in snapshot.connections["orders"].reasons
        )
        assert snapshot.flows["order-sync"].reasons == [
            "no runs yet",
            "connection orders is down",
        ]

        # and exactly one alert is sent, however many rounds both processes run
        texts = await _wait_for_messages(chat_app, 1)
        await _wait_for_more_checks(runtime, 5)
        texts = [m.payload["text"] for m in chat_app.state.chat.messages]
        assert len(texts) == 1, texts
        assert texts[0].startswith("[DOWN] connection orders:")
        assert "failed" in texts[0]

        # and `lobflows health` in yet another process says so, exiting 1
        shown = support.cli(env, "health", str(flows))
        assert shown.returncode == 1, shown.stderr
        assert "orders" in shown.stdout and "down" in shown.stdout
        assert "down: order-sync, orders" in shown.stderr

        # When the target comes back on its address
        target.start()

        # Then the connection is healthy again and one resolved message is sent
        await _wait_for(runtime, "healthy", seen)
        texts = await _wait_for_messages(chat_app, 2)
        await _wait_for_more_checks(runtime, 5)
        texts = [m.payload["text"] for m in chat_app.state.chat.messages]
        assert len(texts) == 2, texts
        assert texts[1].startswith("[RESOLVED] connection orders: healthy again")

        listed = json.loads(support.cli(env, "health", str(flows), "--json").stdout)
        assert listed["connections"]["orders"]["status"] == "healthy"
        for process in (server, worker):
            assert "monitor_failed" not in process.log()
            assert "alert_failed" not in process.log()
    finally:
        await runtime.close()
        worker.stop()
        server.stop()
