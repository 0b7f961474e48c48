"""`lobflows serve` consuming a RabbitMQ queue, killed while a message is unacked."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aio_pika
import psycopg
import pytest

from lobflows.secrets import env_name
from lobflows.store import RunStore
from tests import support

pytestmark = pytest.mark.acceptance

BROKER_URL = "amqp://guest:guest@127.0.0.1:5672/"
CARD = """card:
  trigger: see below
  data: {entity: order, sensitivity: internal}
  transform: none
  target: the run store
  on_failure: dead letter
  owner: team@example.com
"""
CONNECTIONS = """connections:
  mq:
    type: rabbitmq
    url: amqp://guest@127.0.0.1:5672/
    password_secret: rabbitmq-password
"""


def flows(folder: Path, queue: str) -> Path:
    """Two flows on one topic: the first consumes the queue, the second only
    listens. Files load in name order, so delivery stores intake's run first."""
    folder.mkdir()
    (folder / "connections.yaml").write_text(CONNECTIONS)
    (folder / "a-intake.yaml").write_text(
        "flow: a-intake\n"
        + CARD
        + "trigger:\n"
        + f"  event: {{topic: orders.received, connection: mq, queue: {queue}}}\n"
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
async def broker() -> AsyncIterator[aio_pika.abc.AbstractConnection]:
    try:
        connection = await aio_pika.connect(BROKER_URL, timeout=5)
    except (OSError, aio_pika.exceptions.AMQPError) as exc:
        pytest.fail(f"RabbitMQ is not reachable at 127.0.0.1:5672: {exc!r}")
    yield connection
    await connection.close()


@pytest.fixture
async def queue(broker: aio_pika.abc.AbstractConnection) -> AsyncIterator[str]:
    name = f"lobflows-acceptance-{uuid.uuid4().hex[:10]}"
    channel = await broker.channel()
    await channel.declare_queue(name, durable=True)
    yield name
    await channel.queue_delete(name)
    await channel.close()


async def ready_count(broker: aio_pika.abc.AbstractConnection, queue: str) -> int:
    channel = await broker.channel()
    declared = await channel.declare_queue(queue, passive=True)
    await channel.close()
    return int(declared.declaration_result.message_count or 0)


async def wait_until(check, timeout: float = 20) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_a_consumer_killed_before_acking_gets_the_message_again_and_runs_once(
    store_url: str,
    store: RunStore,
    broker: aio_pika.abc.AbstractConnection,
    queue: str,
    tmp_path: Path,
):
    env = support.base_env(
        store_url,
        **{env_name("rabbitmq-password"): "guest", "LOBFLOWS_LEASE_SECONDS": "3"},
    )
    folder = flows(tmp_path / "flows", queue)
    first = support.ServerProcess(env, folder, tmp_path / "first.log").start()
    await support.wait_for_log(first, "event='consumer_started'")

    # Given b-audit's flow version row is locked, storing its run (whose
    # foreign key must lock that row too) waits: the message is delivered,
    # a-intake's run is stored, and the message is not yet acknowledged.
    with psycopg.connect(store_url) as blocker:
        blocker.execute(
            "SELECT id FROM flow_versions WHERE flow = 'b-audit' FOR UPDATE"
        )
        channel = await broker.channel()
        await channel.default_exchange.publish(
            aio_pika.Message(b'{"order": "SO-1"}', message_id="order-1"), queue
        )
        await channel.close()
        await wait_until(lambda: _runs(store, "a-intake", 1))
        assert await ready_count(broker, queue) == 0  # out with the consumer

        # When the server dies before acknowledging it
        first.kill()
        blocker.rollback()

    # Then the broker holds the message again, and a restarted server takes it
    await wait_until(lambda: _ready_is(broker, queue, 1))
    second = support.ServerProcess(env, folder, tmp_path / "second.log").start()
    try:
        await wait_until(lambda: _runs(store, "b-audit", 1))
        await wait_until(lambda: _ready_is(broker, queue, 0))
        [intake] = await store.list_runs(flow="a-intake")
        await support.wait_for_run(store, intake.id)
    finally:
        second.stop()

    [intake] = await store.list_runs(flow="a-intake")
    [audit] = await store.list_runs(flow="b-audit")
    assert intake.status == "succeeded" and intake.input == {"order": "SO-1"}
    assert (await support.wait_for_run(store, audit.id)).status == "succeeded"
    assert "event='run_deduplicated'" in second.log()  # a-intake's, redelivered
    assert await ready_count(broker, queue) == 0  # acknowledged, not requeued


async def test_the_server_logs_one_line_per_outage_when_the_broker_is_down(
    store_url: str, tmp_path: Path
):
    folder = flows(tmp_path / "flows", "lobflows-never")
    port = support.free_port()  # nothing listens here
    (folder / "connections.yaml").write_text(
        CONNECTIONS.replace("127.0.0.1:5672", f"127.0.0.1:{port}")
    )
    env = support.base_env(store_url, **{env_name("rabbitmq-password"): "guest"})
    server = support.ServerProcess(env, folder, tmp_path / "down.log").start()
    try:
        await support.wait_for_log(server, "event='consumer_disconnected'")
        await asyncio.sleep(3.5)  # a few reconnects with backoff
    finally:
        server.stop()

    assert server.log().count("event='consumer_disconnected'") == 1
    assert "level='error'" not in server.log()


async def _runs(store: RunStore, flow: str, count: int) -> bool:
    return len(await store.list_runs(flow=flow)) >= count


async def _ready_is(
    broker: aio_pika.abc.AbstractConnection, queue: str, count: int
) -> bool:
    return await ready_count(broker, queue) == count
