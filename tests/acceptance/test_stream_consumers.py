"""`lobflows serve` consuming a Redis stream, killed while an entry is unacked."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis.asyncio
import redis.exceptions

from lobflows.store import RunStore
from tests import support

pytestmark = pytest.mark.acceptance

REDIS_URL = "redis://127.0.0.1:6379/0"
GROUP = "lobflows"
CARD = """card:
  trigger: see below
  data: {entity: order, sensitivity: internal}
  transform: none
  target: the run store
  on_failure: dead letter
  owner: team@example.com
"""
CONNECTIONS = """connections:
  bus:
    type: redis_stream
    url: redis://127.0.0.1:6379/0
    block_ms: 200
    claim_idle_seconds: 1
"""


def flows(folder: Path, stream: str) -> Path:
    """Two flows on one topic: the first consumes the stream, the second only
    listens. Files load in name order, so delivery stores intake's run first."""
    folder.mkdir()
    (folder / "connections.yaml").write_text(CONNECTIONS)
    (folder / "a-intake.yaml").write_text(
        "flow: a-intake\n"
        + CARD
        + "trigger:\n"
        + "  event: {topic: orders.received, connection: bus, "
        + f"queue: {stream}/{GROUP}}}\n"
        + 'steps:\n  - id: seen\n    map: {order: "{{ input.order }}"}\n'
    )
    (folder / "b-audit.yaml").write_text(
        "flow: b-audit\n"
        + CARD
        + "trigger: {event: {topic: orders.received}}\n"
        + 'steps:\n  - id: noted\n    map: {order: "{{ input.order }}"}\n'
    )
    return folder


@pytest.fixture
def store_url() -> Iterator[str]:
    """PostgreSQL only: the kill test pauses a delivery by holding a row lock."""
    with support.fresh_postgres_database() as url:
        yield url


@pytest.fixture
async def server() -> AsyncIterator[Any]:
    client = redis.asyncio.Redis.from_url(REDIS_URL, socket_connect_timeout=5)
    try:
        await client.ping()
    except redis.exceptions.ConnectionError as exc:
        pytest.fail(f"Redis is not reachable at 127.0.0.1:6379: {exc!r}")
    yield client
    await client.aclose()


@pytest.fixture
async def stream(server: Any) -> AsyncIterator[str]:
    name = f"lobflows-acceptance-{uuid.uuid4().hex[:10]}"
    yield name
    await server.delete(name)


async def pending_count(server: Any, stream: str) -> int:
    return int((await server.xpending(stream, GROUP))["pending"])


async def wait_until(check, timeout: float = 20) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_a_consumer_killed_before_acking_leaves_the_entry_to_be_claimed_once(
    store_url: str, store: RunStore, server: Any, stream: str, tmp_path: Path
):
    env = support.base_env(store_url, LOBFLOWS_LEASE_SECONDS="3")
    folder = flows(tmp_path / "flows", stream)
    first = support.ServerProcess(env, folder, tmp_path / "first.log").start()
    await support.wait_for_log(first, "event='consumer_started'")

    # Given b-audit's flow version row is locked, storing its run (whose
    # foreign key must lock that row too) waits: the entry is delivered,
    # a-intake's run is stored, and the entry is not yet acknowledged.
    with psycopg.connect(store_url) as blocker:
        blocker.execute(
            "SELECT id FROM flow_versions WHERE flow = 'b-audit' FOR UPDATE"
        )
        await server.xadd(stream, {"body": '{"order": "SO-1"}'})
        await wait_until(lambda: _runs(store, "a-intake", 1))
        assert await pending_count(server, stream) == 1  # read, not acked

        # When the server dies before acknowledging it
        first.kill()
        blocker.rollback()

    # Then a restarted server, a new consumer of the group, claims the
    # entry once it has been idle long enough, and delivers it again
    second = support.ServerProcess(env, folder, tmp_path / "second.log").start()
    try:
        await wait_until(lambda: _runs(store, "b-audit", 1))
        await wait_until(lambda: _pending_is(server, stream, 0))
        [intake] = await store.list_runs(flow="a-intake")
        await support.wait_for_run(store, intake.id)
    finally:
        second.stop()

    [intake] = await store.list_runs(flow="a-intake")
    [audit] = await store.list_runs(flow="b-audit")
    assert intake.status == "succeeded" and intake.input == {"order": "SO-1"}
    assert (await support.wait_for_run(store, audit.id)).status == "succeeded"
    assert "event='entries_claimed'" in second.log()
    assert "event='run_deduplicated'" in second.log()  # a-intake's, redelivered
    assert await pending_count(server, stream) == 0  # acknowledged


async def _runs(store: RunStore, flow: str, count: int) -> bool:
    return len(await store.list_runs(flow=flow)) >= count


async def _pending_is(server: Any, stream: str, count: int) -> bool:
    return await pending_count(server, stream) == count
