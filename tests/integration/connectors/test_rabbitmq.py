"""The rabbitmq connector against the RabbitMQ broker on this machine."""

from __future__ import annotations

import asyncio
import contextlib
import types
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from lobflows import errors
from lobflows.connectors import rabbitmq
from lobflows.runtime import Runtime
from lobflows.secrets import SecretStore, env_name
from lobflows.spec import loader
from tests import support
from tests.integration.connectors import brokers

pytestmark = pytest.mark.integration

BROKER_URL = "amqp://guest:guest@127.0.0.1:5672/"
PASSWORD_SECRET = "rabbitmq-password"
CONNECTIONS = """connections:
  mq:
    type: rabbitmq
    host: 127.0.0.1
    user: guest
    password_secret: rabbitmq-password
    prefetch: 5
"""


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
    """A fresh queue, deleted afterwards."""
    name = f"lobflows-test-{uuid.uuid4().hex[:10]}"
    channel = await broker.channel()
    await channel.declare_queue(name, durable=True)
    yield name
    await channel.queue_delete(name)
    await channel.close()


@pytest.fixture
async def runtime(
    store_url: str, tmp_path: Path, queue: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Runtime]:
    monkeypatch.setenv(env_name(PASSWORD_SECRET), "guest")
    async with brokers.open_runtime(
        store_url,
        tmp_path,
        connections=CONNECTIONS,
        intake=brokers.intake_flow(queue, connection="mq"),
        sender=brokers.sender_flow(
            connection="mq", routing_key=queue, headers="{origin: tests}"
        ),
    ) as opened:
        yield opened


def consuming(
    runtime: Runtime, queue: str
) -> contextlib.AbstractAsyncContextManager[None]:
    """The connector consuming `queue` into the runtime's event router."""
    return brokers.consuming(runtime, queue, connection="mq")


async def publish(
    broker: aio_pika.abc.AbstractConnection, queue: str, body: bytes, **props: Any
) -> None:
    channel = await broker.channel()
    await channel.default_exchange.publish(aio_pika.Message(body, **props), queue)
    await channel.close()


async def ready_count(broker: aio_pika.abc.AbstractConnection, queue: str) -> int:
    channel = await broker.channel()
    declared = await channel.declare_queue(queue, passive=True)
    await channel.close()
    return int(declared.declaration_result.message_count or 0)


async def test_a_published_message_is_consumed_into_one_run(
    runtime: Runtime, broker: aio_pika.abc.AbstractConnection, queue: str
):
    sender_id, sent = await brokers.send_order(runtime, "SO-1")

    async with consuming(runtime, queue):
        await brokers.eventually(lambda: brokers.has_runs(runtime, 1))
    await support.drain(runtime)

    [run] = await runtime.store.list_runs(flow="intake")
    assert sent["message_id"] == f"{sender_id}-send"  # the step's idempotency key
    assert run.status == "succeeded" and run.input == {"order": "SO-1"}
    assert run.trigger == "event"
    assert await ready_count(broker, queue) == 0


async def test_a_redelivered_message_starts_one_run(
    runtime: Runtime, broker: aio_pika.abc.AbstractConnection, queue: str
):
    # the same message_id twice; aiormq gives the others a random one
    for _ in range(2):
        await publish(broker, queue, b'{"order": "SO-2"}', message_id="m-2")
    await publish(broker, queue, b'{"order": "SO-3"}')

    async with consuming(runtime, queue):
        await brokers.eventually(lambda: brokers.has_runs(runtime, 2))
        await asyncio.sleep(0.3)  # let the duplicates be taken too

    runs = await runtime.store.list_runs(flow="intake")
    assert sorted(r.input["order"] for r in runs) == ["SO-2", "SO-3"]
    assert await ready_count(broker, queue) == 0


async def test_a_body_that_is_not_json_is_rejected_once(
    runtime: Runtime,
    broker: aio_pika.abc.AbstractConnection,
    queue: str,
    caplog: pytest.LogCaptureFixture,
):
    await publish(broker, queue, b"not json", message_id="bad-1")
    await publish(broker, queue, b'{"order": "SO-4"}', message_id="good-1")

    async with consuming(runtime, queue):
        await brokers.eventually(lambda: brokers.has_runs(runtime, 1))
        await asyncio.sleep(0.3)

    assert len(brokers.rejections(caplog)) == 1  # no redelivery loop
    assert await ready_count(broker, queue) == 0  # not requeued either


async def test_a_body_that_is_not_json_goes_to_the_dead_letter_exchange(
    runtime: Runtime, broker: aio_pika.abc.AbstractConnection
):
    channel = await broker.channel()
    suffix = uuid.uuid4().hex[:10]
    dlx = await channel.declare_exchange(f"lobflows-test-dlx-{suffix}", "fanout")
    dead = await channel.declare_queue(f"lobflows-test-dead-{suffix}")
    await dead.bind(dlx)
    source = await channel.declare_queue(
        f"lobflows-test-dl-{suffix}", arguments={"x-dead-letter-exchange": dlx.name}
    )
    try:
        await publish(broker, source.name, b"<xml/>", message_id="bad-2")

        async with consuming(runtime, source.name):
            await brokers.eventually(lambda: _count_is(broker, dead.name, 1))

        assert await ready_count(broker, source.name) == 0
        assert await runtime.store.list_runs(flow="intake") == []
    finally:
        await source.delete(if_unused=False, if_empty=False)
        await dead.delete(if_unused=False, if_empty=False)
        await dlx.delete()
        await channel.close()


async def test_publish_fails_without_retry_when_no_queue_takes_the_message(
    runtime: Runtime,
):
    connector = runtime.engine.connections["mq"]
    params = {"routing_key": f"nowhere-{uuid.uuid4().hex}", "body": {}}

    with pytest.raises(errors.ConnectorError) as failed:
        await brokers.publish_step(connector, params)

    assert failed.value.retryable is False
    assert "no queue took it" in str(failed.value)


async def test_publish_to_a_missing_exchange_fails_without_retry(runtime: Runtime):
    connector = runtime.engine.connections["mq"]
    params = {"exchange": f"missing-{uuid.uuid4().hex}", "routing_key": "x"}

    with pytest.raises(errors.ConnectorError) as failed:
        await brokers.publish_step(connector, params)

    assert failed.value.retryable is False and "not found" in str(failed.value)


async def test_the_consumer_raises_a_transport_error_when_the_broker_is_down():
    settings = rabbitmq.RabbitmqSettings(host="127.0.0.1", port=support.free_port())
    connector = rabbitmq.RabbitmqConnector("mq", settings, SecretStore())

    with pytest.raises(errors.TransportError):
        await brokers.consume_nothing(connector, "q")


async def test_a_metadata_host_is_refused_before_connecting():
    settings = rabbitmq.RabbitmqSettings(host="169.254.169.254")
    connector = rabbitmq.RabbitmqConnector("mq", settings, SecretStore())

    with pytest.raises(errors.BlockedAddressError):
        await brokers.publish_step(connector, {"routing_key": "q"}, timeout_seconds=5)


def test_a_message_without_id_is_known_by_its_body():
    def message(body: bytes, message_id: str | None = None) -> Any:
        return types.SimpleNamespace(body=body, message_id=message_id)

    first = rabbitmq.message_event_id(message(b'{"a": 1}'))

    assert first == rabbitmq.message_event_id(message(b'{"a": 1}'))
    assert first != rabbitmq.message_event_id(message(b'{"a": 2}'))
    assert rabbitmq.message_event_id(message(b"{}", "m-1")) == "amqp:m-1"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"url": "amqp://guest:guest@127.0.0.1/"}, "must not hold a password"),
        ({"url": "http://127.0.0.1/"}, "must be amqp://"),
        ({}, "give either url or host"),
        ({"url": "amqp://127.0.0.1/", "host": "127.0.0.1"}, "give either url or host"),
    ],
)
def test_settings_refuse_a_bad_address(settings: dict[str, Any], message: str):
    with pytest.raises(ValueError, match=message):
        rabbitmq.RabbitmqSettings.model_validate(settings)


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ("{topic: a.b, connection: mq}", "needs queue"),
        ("{topic: a.b, queue: q}", "queue needs connection"),
        ("{topic: a.*, connection: mq, queue: q}", "plain topic"),
    ],
)
def test_an_event_trigger_with_a_connection_is_validated(
    tmp_path: Path, event: str, message: str
):
    path = tmp_path / "intake.yaml"
    path.write_text(
        "flow: intake\n"
        + brokers.CARD
        + f"trigger:\n  event: {event}\nsteps:\n  - id: s\n    map: {{x: 1}}\n"
    )

    with pytest.raises(errors.FlowFileError) as refused:
        loader.load_flow_file(path)

    assert message in str(refused.value.problems[0])


async def _count_is(
    broker: aio_pika.abc.AbstractConnection, queue: str, count: int
) -> bool:
    return await ready_count(broker, queue) == count
