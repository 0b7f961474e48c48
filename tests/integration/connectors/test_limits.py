"""Connection limits shared through the store, and the circuit breaker, with a
local service of the tests' own that counts what reaches it."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from lobflows.engine.clock import ManualClock
from lobflows.runtime import Runtime
from lobflows.settings import Settings
from lobflows.testing.servers import ServerThread
from lobflows.web.app import create_app
from tests.support import Service, pass_once

pytestmark = pytest.mark.integration

FLOW = """flow: sync
card:
  trigger: by hand
  data: {entity: record, sensitivity: internal}
  transform: none
  target: a local service
  on_failure: retry, then dead letter
  owner: team@example.com
trigger: {manual: {}}
retry: {max_attempts: 10, initial_delay_seconds: 1, max_delay_seconds: 1}
steps:
  - id: push
    call: svc.request
    with: {method: POST, path: /records}
"""


class SlowService:
    """Answers after a pause and remembers the most calls it had at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.most = 0
        self.calls = 0

    def app(self) -> Starlette:
        async def handle(request: Request) -> JSONResponse:
            with self.lock:
                self.now += 1
                self.calls += 1
                self.most = max(self.most, self.now)
            await asyncio.sleep(0.15)
            with self.lock:
                self.now -= 1
            return JSONResponse({"ok": True})

        return Starlette(routes=[Route("/records", handle, methods=["POST"])])


def project(folder: Path, url: str, limits: str) -> Path:
    (folder / "sync.yaml").write_text(FLOW)
    (folder / "connections.yaml").write_text(
        f"connections:\n  svc:\n    type: http\n    base_url: '{url}'\n    limits: {limits}\n"
    )
    return folder


async def test_a_concurrency_limit_holds_across_workers(store_url: str, tmp_path: Path):
    service = SlowService()
    with ServerThread(service.app()) as server:
        folder = project(tmp_path, server.url, "{concurrency: 2}")
        workers = [
            await Runtime.open(Settings(database_url=store_url), folder)
            for _ in range(2)
        ]
        try:
            for _ in range(6):
                await workers[0].engine.start_run("sync", input={}, trigger="manual")

            async def work(runtime: Runtime) -> None:
                claimed = await runtime.store.claim_runs(
                    owner=runtime.engine.owner, limit=3, lease_seconds=30
                )
                await asyncio.gather(*(runtime.engine.execute(r) for r in claimed))
                await runtime.store.flush()

            await asyncio.gather(*(work(w) for w in workers))
            runs = await workers[0].store.list_runs(flow="sync")
        finally:
            for runtime in workers:
                await runtime.close()

    assert [r.status for r in runs] == ["succeeded"] * 6
    assert service.calls == 6
    assert service.most == 2


async def test_the_rate_limit_is_a_token_bucket_shared_in_the_store(store):
    took = [await store.take_token("crm", rate=2, burst=2, now=100.0) for _ in range(3)]
    later = await store.take_token("crm", rate=2, burst=2, now=100.5)

    assert took[:2] == [0.0, 0.0]  # the burst
    assert took[2] == pytest.approx(0.5)  # then one token per half second
    assert later == 0.0


async def test_a_breaker_opens_fails_fast_and_closes_after_a_good_probe(
    store_url: str, tmp_path: Path
):
    service = Service()
    service.failures["/records"] = [503, 503, 503]
    with ServerThread(service.app()) as server:
        folder = project(
            tmp_path, server.url, "{failures_to_open: 2, cool_down_seconds: 30}"
        )
        runtime = await Runtime.open(Settings(database_url=store_url), folder)
        runtime.engine.clock = clock = ManualClock(start=time.time() + 3600)
        try:
            run, _ = await runtime.engine.start_run("sync", input={}, trigger="manual")
            await pass_once(runtime)  # 503
            clock.advance(2)
            await pass_once(runtime)  # 503: two in a row open the breaker
            assert runtime.engine.limiter.breakers["svc"].state == "open"
            health = await healthz(runtime)
            assert health == {"status": "degraded", "connections": {"svc": "open"}}
            clock.advance(2)
            await pass_once(runtime)  # failed fast: nothing reached the service
            assert service.calls["/records"] == 2
            clock.advance(2)
            assert await pass_once(runtime) == 0  # the retry waits out the cool-down
            clock.advance(30)
            await pass_once(runtime)  # the probe: 503 again, open again
            assert service.calls["/records"] == 3
            clock.advance(31)
            await pass_once(runtime)  # the probe succeeds and closes it
            done = await runtime.store.get_run(run.id)
            journal = [a.status for a in await runtime.store.attempts(run.id)]
            breaker = runtime.engine.limiter.breakers["svc"].state
            assert (await healthz(runtime))["status"] == "ok"
        finally:
            await runtime.close()

    assert done.status == "succeeded"
    assert breaker == "closed"
    assert service.calls["/records"] == 4
    # The call the open breaker stopped is journaled, but spends no attempt.
    assert journal == ["failed", "failed", "paused", "failed", "succeeded"]


async def test_a_breaker_open_in_a_worker_shows_in_every_other_process(
    store_url: str, tmp_path: Path
):
    service = Service()
    service.failures["/records"] = [503, 503]
    with ServerThread(service.app()) as server:
        folder = project(
            tmp_path, server.url, "{failures_to_open: 2, cool_down_seconds: 30}"
        )
        worker = await Runtime.open(Settings(database_url=store_url), folder)
        front = await Runtime.open(Settings(database_url=store_url), folder)
        worker.engine.clock = clock = ManualClock(start=time.time() + 3600)
        try:
            await worker.engine.start_run("sync", input={}, trigger="manual")
            await pass_once(worker)
            clock.advance(2)
            await pass_once(worker)  # two 503s in a row open the worker's breaker
            opened = (await front.monitor.snapshot()).connections["svc"]
            clock.advance(31)
            await pass_once(worker)  # the probe succeeds and closes it
            closed = (await front.monitor.snapshot()).connections["svc"]
            local = front.engine.limiter.breakers
        finally:
            await worker.close()
            await front.close()

    assert opened.breaker == "open"
    assert opened.status == "degraded"
    assert "the circuit breaker is open" in opened.reasons
    assert closed.breaker == "closed"
    assert local == {}  # the front made no call: what it showed came from the store


async def test_breaker_records_say_open_half_open_or_are_left_behind(store):
    now = time.time()
    await store.save_breaker(
        "crm", holder="a", state="half-open", failures=5, open_until=now - 10
    )
    await store.save_breaker(
        "crm", holder="b", state="open", failures=5, open_until=now + 20
    )
    await store.save_breaker(
        "erp", holder="a", state="open", failures=5, open_until=now - 5
    )
    await store.save_breaker(
        "old",
        holder="gone",
        state="open",
        failures=5,
        open_until=now - 3600,
        now=now - 3630,
    )
    both = await store.breaker_states(now)
    await store.save_breaker(
        "crm", holder="b", state="closed", failures=0, open_until=now
    )
    one_closed = await store.breaker_states(now)

    # erp's cool-down is over: its next call probes. old's process is gone.
    assert both == {"crm": "open", "erp": "half-open"}
    assert one_closed == {"crm": "half-open", "erp": "half-open"}


def test_bad_limits_are_named_at_load(tmp_path: Path):
    from lobflows.connectors import base
    from lobflows.spec import loader

    folder = project(tmp_path, "http://127.0.0.1:9", "{concurrency: 0, speed: 3}")
    problems = base.check_project(
        loader.load_project(folder), source="connections.yaml"
    )

    fields = {p.field for p in problems}
    assert "connections.svc.limits.concurrency" in fields
    assert "connections.svc.limits.speed" in fields


async def healthz(runtime: Runtime) -> dict:
    app = create_app(runtime, has_local_worker=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        return (await client.get("/healthz")).json()
