"""The nats connector against the NATS server (with JetStream) on this machine."""

from __future__ import annotations

import asyncio
import types
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import nats.errors
import nats.js.errors
import pytest

from lobflows import errors
from lobflows.connectors import nats as nats_connector
from lobflows.runtime import Runtime
from lobflows.secrets import SecretStore
from tests import support
from tests.integration.connectors import brokers

pytestmark = pytest.mark.integration

NATS_URL = "nats://127.0.0.1:4222"
CONSUMER = "lobflows"
# Short, so a test can publish one Nats-Msg-Id twice into the stream.
DUPLICATE_WINDOW_SECONDS = 1.0
CONNECTIONS = """connections:
  bus:
    type: nats
    url: nats://127.0.0.1:4222
    fetch_wait_seconds: 0.2
"""


class Stream(types.SimpleNamespace):
    name: str
    subject: str  # the one subject tests publish on

    @property
    def queue(self) -> str:
        """The queue naming this stream and the tests' consumer."""
        return f"{self.name}/{CONSUMER}"


@pytest.fixture
async def server() -> AsyncIterator[Any]:
    try:
        client = await nats.connect(NATS_URL, connect_timeout=5, allow_reconnect=False)
    except (OSError, nats.errors.Error) as exc:
        pytest.fail(f"NATS is not reachable at 127.0.0.1:4222: {exc!r}")
    yield client
    await client.close()


@pytest.fixture
async def stream(server: Any) -> AsyncIterator[Stream]:
    """A fresh JetStream stream on its own subjects, deleted afterwards."""
    suffix = uuid.uuid4().hex[:10]
    name = f"LOBFLOWS_TEST_{suffix}"
    jetstream = server.jetstream()
    await jetstream.add_stream(
        name=name,
        subjects=[f"lobflows.test.{suffix}.>"],
        duplicate_window=DUPLICATE_WINDOW_SECONDS,
    )
    yield Stream(name=name, subject=f"lobflows.test.{suffix}.orders")
    await jetstream.delete_stream(name)


@pytest.fixture
async def runtime(
    store_url: str, tmp_path: Path, stream: Stream
) -> AsyncIterator[Runtime]:
    async with brokers.open_runtime(
        store_url,
        tmp_path,
        connections=CONNECTIONS,
        intake=brokers.intake_flow(stream.queue),
        sender=brokers.sender_flow(subject=stream.subject, headers="{origin: tests}"),
    ) as opened:
        yield opened


async def publish(server: Any, subject: str, body: bytes, msg_id: str | None) -> None:
    headers = {"Nats-Msg-Id": msg_id} if msg_id else None
    await server.jetstream().publish(subject, body, headers=headers)


async def unacked(server: Any, stream: Stream) -> int:
    """Messages the consumer has not had acknowledged, delivered or not."""
    info = await server.jetstream().consumer_info(stream.name, CONSUMER)
    return int(info.num_pending + info.num_ack_pending)


async def test_a_published_message_is_consumed_into_one_run(
    runtime: Runtime, server: Any, stream: Stream
):
    sender_id, sent = await brokers.send_order(runtime, "SO-1")

    async with brokers.consuming(runtime, stream.queue):
        await brokers.eventually(lambda: brokers.has_runs(runtime, 1))
        await brokers.eventually(lambda: _unacked_is(server, stream, 0))
    await support.drain(runtime)

    [run] = await runtime.store.list_runs(flow="intake")
    assert sent["msg_id"] == f"{sender_id}-send"  # the step's idempotency key
    assert sent["stream"] == stream.name and sent["is_duplicate"] is False
    assert run.status == "succeeded" and run.input == {"order": "SO-1"}
    assert run.trigger == "event"


async def test_publishing_the_same_msg_id_twice_is_stored_once(
    runtime: Runtime, stream: Stream
):
    connector = runtime.engine.connections["bus"]
    params = {"subject": stream.subject, "body": {"order": "SO-7"}}

    first = await brokers.publish_step(connector, params)
    again = await brokers.publish_step(connector, params)

    assert first["is_duplicate"] is False and again["is_duplicate"] is True
    assert first["sequence"] == again["sequence"]


async def test_the_same_message_twice_starts_one_run(
    runtime: Runtime, server: Any, stream: Stream
):
    # Given the same Nats-Msg-Id twice, the second past the stream's
    # duplicate window, so the stream holds both
    await publish(server, stream.subject, b'{"order": "SO-2"}', "m-2")
    await asyncio.sleep(DUPLICATE_WINDOW_SECONDS + 0.2)
    await publish(server, stream.subject, b'{"order": "SO-2"}', "m-2")
    await publish(server, stream.subject, b'{"order": "SO-3"}', None)

    async with brokers.consuming(runtime, stream.queue):
        await brokers.eventually(lambda: brokers.has_runs(runtime, 2))
        await brokers.eventually(lambda: _unacked_is(server, stream, 0))

    # Then the consumer started one run for both
    runs = await runtime.store.list_runs(flow="intake")
    assert sorted(r.input["order"] for r in runs) == ["SO-2", "SO-3"]


async def test_a_body_that_is_not_json_is_terminated_once(
    runtime: Runtime, server: Any, stream: Stream, caplog: pytest.LogCaptureFixture
):
    await publish(server, stream.subject, b"not json", "bad-1")
    await publish(server, stream.subject, b'{"order": "SO-4"}', "good-1")

    async with brokers.consuming(runtime, stream.queue):
        await brokers.eventually(lambda: brokers.has_runs(runtime, 1))
        await brokers.eventually(lambda: _unacked_is(server, stream, 0))
        await asyncio.sleep(0.5)

    assert len(brokers.rejections(caplog)) == 1  # no redelivery loop


async def test_a_queue_with_a_subject_creates_a_filtered_consumer(
    runtime: Runtime, server: Any, stream: Stream
):
    await publish(server, stream.subject, b'{"order": "SO-8"}', "m-8")
    await publish(server, stream.subject + ".other", b'{"order": "SO-9"}', "m-9")

    async with brokers.consuming(runtime, f"{stream.queue}/{stream.subject}"):
        await brokers.eventually(lambda: brokers.has_runs(runtime, 1))
        await brokers.eventually(lambda: _unacked_is(server, stream, 0))

    [run] = await runtime.store.list_runs(flow="intake")
    assert run.input == {"order": "SO-8"}


async def test_a_failed_delivery_gives_the_message_back(server: Any, stream: Stream):
    settings = nats_connector.NatsSettings(url=NATS_URL, fetch_wait_seconds=0.2)
    connector = nats_connector.NatsConnector("bus", settings, SecretStore())
    await publish(server, stream.subject, b'{"n": 1}', None)
    seen = brokers.Recorder()

    with pytest.raises(RuntimeError):
        await connector.consume(stream.queue, brokers.deliver_failing, topic="t")

    async with brokers.running(connector.consume(stream.queue, seen, topic="t")):
        await brokers.eventually(lambda: _unacked_is(server, stream, 0))
    assert seen.ids == [f"nats:{stream.name}:1"]  # known by stream and sequence


async def test_publish_fails_without_retry_when_no_stream_takes_the_subject(
    runtime: Runtime,
):
    connector = runtime.engine.connections["bus"]
    params = {"subject": f"lobflows.nowhere.{uuid.uuid4().hex}", "body": {}}

    with pytest.raises(errors.ConnectorError) as failed:
        await brokers.publish_step(connector, params, timeout_seconds=5)

    assert failed.value.retryable is False
    assert "no stream takes the subject" in str(failed.value)


async def test_consuming_a_missing_stream_fails_without_retry():
    settings = nats_connector.NatsSettings(url=NATS_URL)
    connector = nats_connector.NatsConnector("bus", settings, SecretStore())
    queue = f"MISSING_{uuid.uuid4().hex}/c"

    with pytest.raises(errors.ConnectorError) as failed:
        await brokers.consume_nothing(connector, queue)

    assert failed.value.retryable is False


async def test_the_consumer_raises_a_transport_error_when_the_server_is_down():
    url = f"nats://127.0.0.1:{support.free_port()}"
    settings = nats_connector.NatsSettings(url=url, timeout_seconds=2)
    connector = nats_connector.NatsConnector("bus", settings, SecretStore())

    with pytest.raises(errors.TransportError) as failed:
        await brokers.consume_nothing(connector, "S/c")

    assert failed.value.retryable is True


async def test_a_metadata_host_is_refused_before_connecting():
    settings = nats_connector.NatsSettings(url="nats://169.254.169.254:4222")
    connector = nats_connector.NatsConnector("bus", settings, SecretStore())

    with pytest.raises(errors.BlockedAddressError):
        await brokers.publish_step(connector, {"subject": "a.b"}, timeout_seconds=5)


@pytest.mark.parametrize(
    ("queue", "parts"),
    [
        ("ORDERS/lobflows", ("ORDERS", "lobflows", None)),
        # a filter subject, which may hold wildcards
        (
            "ORDERS/lobflows/orders.*.created",
            ("ORDERS", "lobflows", "orders.*.created"),
        ),
    ],
)
def test_a_queue_names_a_stream_and_consumer(
    queue: str, parts: tuple[str, str, str | None]
):
    assert nats_connector.parse_queue(queue) == parts


@pytest.mark.parametrize("queue", ["ORDERS", "ORDERS/", "/lobflows", "A//s"])
def test_a_queue_without_stream_or_consumer_is_refused(queue: str):
    with pytest.raises(errors.ConfigurationError, match="stream/consumer"):
        nats_connector.parse_queue(queue)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"url": "nats://flows:secret@127.0.0.1:4222"}, "must not hold credentials"),
        ({"url": "http://127.0.0.1/"}, "must be nats://"),
        ({"url": NATS_URL, "password_secret": "p"}, "password_secret needs user"),
        (
            {"url": NATS_URL, "user": "u", "token_secret": "t"},
            "either user or token_secret",
        ),
    ],
)
def test_settings_refuse_a_bad_address_or_credential(
    settings: dict[str, Any], message: str
):
    with pytest.raises(ValueError, match=message):
        nats_connector.NatsSettings.model_validate(settings)


@pytest.mark.parametrize(
    ("foreign", "retryable"),
    [
        (nats.errors.NoRespondersError(), False),
        (nats.js.errors.NoStreamResponseError(), False),
        (nats.errors.AuthorizationError(), False),
        (nats.js.errors.NotFoundError(), False),
        (nats.js.errors.BadRequestError(), False),
        (nats.js.errors.ServiceUnavailableError(), True),
        (nats.errors.TimeoutError(), True),
        (nats.errors.ConnectionClosedError(), True),
        (nats.errors.NoServersError(), True),
        (OSError("reset"), True),
    ],
)
def test_every_nats_error_is_translated(foreign: BaseException, retryable: bool):
    translated = nats_connector.translate(foreign, connection="bus", doing="x")

    assert isinstance(translated, errors.ConnectorError)
    assert translated.retryable is retryable


async def _unacked_is(server: Any, stream: Stream, count: int) -> bool:
    return await unacked(server, stream) == count
