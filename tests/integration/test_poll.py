"""Poll triggers against a local HTTP source: one run per new item, never twice."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from lobflows.runtime import Runtime
from lobflows.settings import Settings
from lobflows.testing.servers import ServerThread
from lobflows.triggers.poll import Poller

pytestmark = pytest.mark.integration

FLOW = """flow: new-tickets
card:
  trigger: poll the helpdesk every minute for tickets changed since the watermark
  data: {entity: ticket, sensitivity: internal}
  transform: none
  target: the run store
  on_failure: poll again next interval
  owner: support@example.com
trigger:
  poll:
    every_seconds: 60
    call: helpdesk.request
    with: {path: /tickets, params: {since: "{{ watermark }}"}}
    items: "{{ result.body.tickets }}"
    id: "{{ item.id }}"
    watermark: "{{ item.modified }}"
    start: 0
steps:
  - id: seen
    map: {subject: "{{ input.subject }}"}
"""


class Helpdesk:
    """Tickets with a modified counter; GET /tickets?since=N lists newer ones."""

    def __init__(self) -> None:
        self.tickets: list[dict] = []
        self.asked_since: list[str] = []

    def app(self) -> Starlette:
        async def tickets(request: Request) -> JSONResponse:
            since = request.query_params.get("since", "0")
            self.asked_since.append(since)
            newer = [t for t in self.tickets if t["modified"] > int(since)]
            return JSONResponse({"tickets": newer})

        return Starlette(routes=[Route("/tickets", tickets)])


class Clock:
    def __init__(self) -> None:
        self.current = 1_000_000.0

    def __call__(self) -> float:
        return self.current


@pytest.fixture
def helpdesk():
    desk = Helpdesk()
    with ServerThread(desk.app()) as server:
        yield desk, server.url


async def open_runtime(store_url: str, folder: Path, url: str) -> Runtime:
    (folder / "tickets.yaml").write_text(FLOW)
    (folder / "connections.yaml").write_text(
        f"connections:\n  helpdesk: {{type: http, base_url: '{url}'}}\n"
    )
    return await Runtime.open(Settings(database_url=store_url), folder)


async def test_a_poll_starts_one_run_per_new_item_and_keeps_its_watermark(
    store_url: str, tmp_path: Path, helpdesk
):
    desk, url = helpdesk
    desk.tickets = [
        {"id": "T-1", "subject": "Printer", "modified": 5},
        {"id": "T-2", "subject": "VPN", "modified": 7},
    ]
    clock = Clock()
    runtime = await open_runtime(store_url, tmp_path, url)
    try:
        poller = Poller(runtime.engine, now=clock)
        first = await poller.tick()
        clock.current += 30
        early = await poller.tick()  # not due yet: no call at all
        clock.current += 31
        desk.tickets.append({"id": "T-3", "subject": "Badge", "modified": 9})
        second = await poller.tick()
    finally:
        await runtime.close()

    assert len(first) == 2 and early == [] and len(second) == 1
    assert desk.asked_since == ["0", "7"]


async def test_a_restart_never_starts_an_item_twice(
    store_url: str, tmp_path: Path, helpdesk
):
    desk, url = helpdesk
    desk.tickets = [{"id": "T-1", "subject": "Printer", "modified": 5}]
    clock = Clock()
    runtime = await open_runtime(store_url, tmp_path, url)
    try:
        await Poller(runtime.engine, now=clock).tick()
    finally:
        await runtime.close()
    # the same ticket shows up again, as a source with an inclusive filter would send it
    desk.tickets[0]["modified"] = 6
    clock.current += 120
    again = await open_runtime(store_url, tmp_path, url)
    try:
        started = await Poller(again.engine, now=clock).tick()
        runs = await again.store.list_runs(flow="new-tickets")
    finally:
        await again.close()

    assert started == []
    assert [run.input["id"] for run in runs] == ["T-1"]
