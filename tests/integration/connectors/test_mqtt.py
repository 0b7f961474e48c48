"""The mqtt connector against the Mosquitto broker on this machine."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from lobflows import errors
from lobflows.connectors import mqtt
from lobflows.runtime import Runtime
from lobflows.secrets import SecretStore
from tests import support
from tests.integration.connectors import brokers

pytestmark = pytest.mark.integration

CONNECTIONS = """connections:
  bus:
    type: mqtt
    host: 127.0.0.1
    session_expiry_seconds: 60
"""


@pytest.fixture
def prefix() -> str:
    """A fresh topic prefix, so tests and sessions never meet."""
    return f"lobflows-test/{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def runtime(
    store_url: str, tmp_path: Path, prefix: str
) -> AsyncIterator[Runtime]:
    async with brokers.open_runtime(
        store_url,
        tmp_path,
        connections=CONNECTIONS,
        intake=brokers.intake_flow(f"{prefix}/#"),
        sender=brokers.sender_flow(topic=f"{prefix}/orders"),
    ) as opened:
        yield opened


async def publish_raw(topic: str, payload: bytes, msg_id: str | None = None) -> None:
    properties = Properties(PacketTypes.PUBLISH)
    if msg_id is not None:
        properties.UserProperty = [("msg_id", msg_id)]
    async with aiomqtt.Client(
        "127.0.0.1", 1883, protocol=aiomqtt.ProtocolVersion.V5
    ) as client:
        await client.publish(topic, payload, qos=1, properties=properties)


async def test_a_published_message_is_consumed_into_one_run(
    runtime: Runtime, prefix: str
):
    async with brokers.consuming(runtime, f"{prefix}/#"):
        sender_id, sent = await brokers.send_order(runtime, "SO-1")
        await brokers.eventually(lambda: brokers.has_runs(runtime, 1))
    await support.drain(runtime)

    [run] = await runtime.store.list_runs(flow="intake")
    assert sent == {"topic": f"{prefix}/orders", "msg_id": f"{sender_id}-send"}
    assert run.status == "succeeded" and run.input == {"order": "SO-1"}
    assert run.trigger == "event"


async def test_the_same_message_twice_starts_one_run(runtime: Runtime, prefix: str):
    async with brokers.consuming(runtime, f"{prefix}/#"):
        # the same msg_id twice, as a retried publish would send it
        for _ in range(2):
            await publish_raw(f"{prefix}/a", b'{"order": "SO-2"}', msg_id="m-2")
        # no msg_id: the same payload on the same topic twice
        for _ in range(2):
            await publish_raw(f"{prefix}/a", b'{"order": "SO-3"}')
        await publish_raw(f"{prefix}/a", b'{"order": "SO-4"}', msg_id="m-4")
        await brokers.eventually(lambda: brokers.has_runs(runtime, 3))
        await asyncio.sleep(0.3)  # room for a wrong fourth run

    runs = await runtime.store.list_runs(flow="intake")
    assert sorted(r.input["order"] for r in runs) == ["SO-2", "SO-3", "SO-4"]


async def test_a_payload_that_is_not_json_is_acknowledged_once_without_a_run(
    runtime: Runtime, prefix: str, caplog: pytest.LogCaptureFixture
):
    queue = f"{prefix}/#"

    async with brokers.consuming(runtime, queue):
        await publish_raw(f"{prefix}/a", b"not json", msg_id="bad-1")
        await publish_raw(f"{prefix}/a", b'{"order": "SO-5"}', msg_id="good-1")
        await brokers.eventually(lambda: brokers.has_runs(runtime, 1))
    # a reconnect: an unacknowledged message would come again now
    async with brokers.consuming(runtime, queue):
        await asyncio.sleep(0.5)

    assert len(brokers.rejections(caplog)) == 1
    assert len(await runtime.store.list_runs(flow="intake")) == 1


async def test_a_failed_delivery_is_redelivered_when_the_session_resumes(
    prefix: str,
):
    # Given a consumer whose delivery fails, leaving the message unacknowledged
    settings = mqtt.MqttSettings(host="127.0.0.1", session_expiry_seconds=60)
    connector = mqtt.MqttConnector("bus", settings, SecretStore())
    queue = f"{prefix}/#"
    seen = brokers.Recorder()
    failed = asyncio.Event()

    async def failing(event: Any) -> None:
        failed.set()
        raise RuntimeError("store is down")

    ready = asyncio.Event()
    task = asyncio.create_task(
        connector.consume(queue, failing, topic=brokers.TOPIC, on_ready=ready.set)
    )
    await asyncio.wait_for(ready.wait(), 10)
    await publish_raw(f"{prefix}/a", b'{"n": 1}', msg_id="m-1")
    await asyncio.wait_for(failed.wait(), 10)
    with pytest.raises(RuntimeError):
        await task

    # When the consumer starts again with the same session
    async with brokers.delivering(connector, queue, seen):
        await brokers.eventually(lambda: _true(bool(seen.ids)))
        await asyncio.sleep(0.3)

    # Then the broker sent the message again, once
    assert seen.ids == ["mqtt-msg:m-1"]


async def test_the_consumer_raises_a_retryable_error_when_the_port_is_closed():
    settings = mqtt.MqttSettings(
        host="127.0.0.1", port=support.free_port(), timeout_seconds=3
    )
    connector = mqtt.MqttConnector("bus", settings, SecretStore())

    with pytest.raises(errors.TransportError) as failed:
        await brokers.consume_nothing(connector, "t/#")
    with pytest.raises(errors.TransportError):
        await brokers.publish_step(
            connector, {"topic": "t", "body": {}}, timeout_seconds=5
        )

    assert failed.value.retryable is True


async def test_a_metadata_host_is_refused_before_connecting():
    settings = mqtt.MqttSettings(host="169.254.169.254")
    connector = mqtt.MqttConnector("bus", settings, SecretStore())

    with pytest.raises(errors.BlockedAddressError):
        await brokers.publish_step(connector, {"topic": "t"}, timeout_seconds=5)


def test_a_message_is_known_by_its_msg_id_else_a_hash_of_topic_and_payload():
    with_id = Properties(PacketTypes.PUBLISH)
    with_id.UserProperty = [("msg_id", "m-1")]
    event_id = mqtt.message_event_id

    assert event_id("a/b", b"{}", with_id) == "mqtt-msg:m-1"
    assert event_id("a/b", b"{}", None) == event_id("a/b", b"{}", None)
    assert event_id("a/b", b"{}", None) != event_id("a/c", b"{}", None)


def test_the_client_id_is_fixed_per_queue_and_topic():
    connector = mqtt.MqttConnector(
        "bus", mqtt.MqttSettings(host="127.0.0.1"), SecretStore()
    )

    assert connector.client_id("a/#", "t") == connector.client_id("a/#", "t")
    assert connector.client_id("a/#", "t") != connector.client_id("b/#", "t")


@pytest.mark.parametrize(
    ("foreign", "retryable"),
    [
        (aiomqtt.MqttError("[Errno 111] Connection refused"), True),
        (aiomqtt.MqttCodeError(0x86, "bad user name or password"), False),
        (aiomqtt.MqttCodeError(0x87, "not authorized"), False),
        (aiomqtt.MqttCodeError(0x88, "server unavailable"), True),
        (OSError("reset"), True),
        (TimeoutError(), True),
    ],
)
def test_every_mqtt_error_is_translated(foreign: BaseException, retryable: bool):
    translated = mqtt.translate(foreign, connection="bus", doing="x")

    assert isinstance(translated, errors.ConnectorError)
    assert translated.retryable is retryable


async def _true(value: bool) -> bool:
    return value
