"""The redis_stream connector against the Redis server on this machine."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio
import redis.exceptions

from lobflows import errors
from lobflows.connectors import redis_streams
from lobflows.runtime import Runtime
from lobflows.secrets import SecretStore
from tests import support
from tests.integration.connectors import brokers

pytestmark = pytest.mark.integration

REDIS_URL = "redis://127.0.0.1:6379/0"
GROUP = "lobflows"
CONNECTIONS = """connections:
  bus:
    type: redis_stream
    url: redis://127.0.0.1:6379/0
    block_ms: 100
    claim_idle_seconds: 0.5
"""


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
    """A fresh stream key, deleted afterwards."""
    name = f"lobflows-test-{uuid.uuid4().hex[:10]}"
    yield name
    await server.delete(name)


@pytest.fixture
async def runtime(
    store_url: str, tmp_path: Path, stream: str
) -> AsyncIterator[Runtime]:
    async with brokers.open_runtime(
        store_url,
        tmp_path,
        connections=CONNECTIONS,
        intake=brokers.intake_flow(f"{stream}/{GROUP}"),
        sender=brokers.sender_flow(stream=stream, maxlen="1000"),
    ) as opened:
        yield opened


def consuming(
    runtime: Runtime, stream: str
) -> contextlib.AbstractAsyncContextManager[None]:
    """The connector consuming `stream` into the runtime's event router."""
    return brokers.consuming(runtime, f"{stream}/{GROUP}")


async def pending_count(server: Any, stream: str) -> int:
    summary = await server.xpending(stream, GROUP)
    return int(summary["pending"])


async def test_a_published_entry_is_consumed_into_one_run(
    runtime: Runtime, server: Any, stream: str
):
    sender_id, sent = await brokers.send_order(runtime, "SO-1")

    async with consuming(runtime, stream):
        await brokers.eventually(lambda: brokers.has_runs(runtime, 1))
    await support.drain(runtime)

    [run] = await runtime.store.list_runs(flow="intake")
    assert sent["msg_id"] == f"{sender_id}-send"  # the step's idempotency key
    assert sent["entry_id"] and sent["stream"] == stream
    assert run.status == "succeeded" and run.input == {"order": "SO-1"}
    assert run.trigger == "event"
    assert await pending_count(server, stream) == 0


async def test_the_same_entry_twice_starts_one_run(
    runtime: Runtime, server: Any, stream: str
):
    # the same msg_id twice, as a retried publish would add it
    for _ in range(2):
        await server.xadd(stream, {"body": '{"order": "SO-2"}', "msg_id": "m-2"})
    await server.xadd(stream, {"body": '{"order": "SO-3"}'})

    async with consuming(runtime, stream):
        await brokers.eventually(lambda: brokers.has_runs(runtime, 2))
        await brokers.eventually(lambda: _pending_is(server, stream, 0))

    runs = await runtime.store.list_runs(flow="intake")
    assert sorted(r.input["order"] for r in runs) == ["SO-2", "SO-3"]


async def test_an_entry_without_body_is_delivered_as_its_fields(
    runtime: Runtime, server: Any, stream: str
):
    await server.xadd(stream, {"order": "SO-5"})

    async with consuming(runtime, stream):
        await brokers.eventually(lambda: brokers.has_runs(runtime, 1))

    [run] = await runtime.store.list_runs(flow="intake")
    assert run.input == {"order": "SO-5"}


async def test_a_body_that_is_not_json_is_acknowledged_once_without_a_run(
    runtime: Runtime, server: Any, stream: str, caplog: pytest.LogCaptureFixture
):
    await server.xadd(stream, {"body": "not json", "msg_id": "bad-1"})
    await server.xadd(stream, {"body": '{"order": "SO-4"}', "msg_id": "good-1"})

    async with consuming(runtime, stream):
        await brokers.eventually(lambda: brokers.has_runs(runtime, 1))
        await asyncio.sleep(0.7)  # past a claim of idle entries

    assert len(brokers.rejections(caplog)) == 1  # no redelivery loop
    assert await pending_count(server, stream) == 0


async def test_entries_a_dead_consumer_left_pending_are_claimed_and_delivered(
    runtime: Runtime, server: Any, stream: str
):
    # Given a consumer that read an entry and died before acknowledging it
    await server.xgroup_create(stream, GROUP, id="0", mkstream=True)
    await server.xadd(stream, {"body": '{"order": "SO-6"}', "msg_id": "m-6"})
    await server.xreadgroup(GROUP, "dead-consumer", {stream: ">"}, count=10)
    assert await pending_count(server, stream) == 1

    # When another consumer runs past the claim idle time
    async with consuming(runtime, stream):
        await brokers.eventually(lambda: brokers.has_runs(runtime, 1))
        await brokers.eventually(lambda: _pending_is(server, stream, 0))

    # Then it delivered the entry and acknowledged it
    [run] = await runtime.store.list_runs(flow="intake")
    assert run.input == {"order": "SO-6"}


async def test_a_failed_delivery_leaves_the_entry_pending_for_the_next_start(
    server: Any, stream: str
):
    settings = redis_streams.RedisStreamSettings(url=REDIS_URL, block_ms=50)
    connector = redis_streams.RedisStreamConnector("bus", settings, SecretStore())
    await server.xadd(stream, {"body": '{"n": 1}'})
    queue = f"{stream}/{GROUP}"
    seen = brokers.Recorder()

    with pytest.raises(RuntimeError):
        await connector.consume(queue, brokers.deliver_failing, topic="t")
    assert await pending_count(server, stream) == 1

    async with brokers.running(connector.consume(queue, seen, topic="t")):
        await brokers.eventually(lambda: _pending_is(server, stream, 0))
    assert len(seen.ids) == 1 and seen.ids[0].startswith(f"redis:{stream}:")


class LosesOneCancel:
    """A real client whose next read, once cancelled, returns as if it
    had finished: what ``asyncio.wait_for`` does on Python 3.11 when the
    cancel and the reply arrive together."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.lost = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    async def xreadgroup(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await self.client.xreadgroup(*args, **kwargs)
        except asyncio.CancelledError:
            self.lost += 1
            return []


async def test_a_consumer_stops_on_cancel_even_when_the_client_loses_it(
    server: Any, stream: str
):
    settings = redis_streams.RedisStreamSettings(url=REDIS_URL, block_ms=1000)
    connector = redis_streams.RedisStreamConnector("bus", settings, SecretStore())
    client = LosesOneCancel(await connector._connect())
    await client.xgroup_create(stream, GROUP, id="0", mkstream=True)

    task = asyncio.create_task(
        connector._read_forever(client, brokers.deliver_nothing, stream, GROUP, "t")
    )
    try:
        await asyncio.sleep(0.2)  # inside the blocking read
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=10)
    finally:
        await client.aclose()

    assert client.lost == 1
    assert done == {task} and task.cancelled()


async def test_publish_to_a_key_of_another_type_fails_without_retry(
    runtime: Runtime, server: Any, stream: str
):
    await server.set(stream, "a plain string")
    connector = runtime.engine.connections["bus"]

    with pytest.raises(errors.ConnectorError) as failed:
        await brokers.publish_step(connector, {"stream": stream, "body": {}})

    assert failed.value.retryable is False and "WRONGTYPE" in str(failed.value)


async def test_the_consumer_raises_a_transport_error_when_the_server_is_down():
    url = f"redis://127.0.0.1:{support.free_port()}/0"
    settings = redis_streams.RedisStreamSettings(url=url, timeout_seconds=2)
    connector = redis_streams.RedisStreamConnector("bus", settings, SecretStore())

    with pytest.raises(errors.TransportError) as failed:
        await brokers.consume_nothing(connector, "s/g")

    assert failed.value.retryable is True


async def test_a_metadata_host_is_refused_before_connecting():
    settings = redis_streams.RedisStreamSettings(url="redis://169.254.169.254:6379")
    connector = redis_streams.RedisStreamConnector("bus", settings, SecretStore())

    with pytest.raises(errors.BlockedAddressError):
        await brokers.publish_step(connector, {"stream": "s"}, timeout_seconds=5)


def test_an_entry_is_known_by_its_msg_id_else_its_entry_id():
    event_id = redis_streams.entry_event_id

    assert event_id("s", "1-0", {"msg_id": "m-1"}) == "redis-msg:m-1"
    assert event_id("s", "1-0", {"body": "{}"}) == "redis:s:1-0"


@pytest.mark.parametrize(
    ("queue", "parts"),
    [
        ("orders/lobflows", ("orders", "lobflows")),
        # a stream key with slashes: the group is the last part
        ("erp/orders/lobflows", ("erp/orders", "lobflows")),
    ],
)
def test_a_queue_names_a_stream_and_group(queue: str, parts: tuple[str, str]):
    assert redis_streams.parse_queue(queue) == parts


@pytest.mark.parametrize("queue", ["orders", "orders/", "/lobflows"])
def test_a_queue_without_stream_or_group_is_refused(queue: str):
    with pytest.raises(errors.ConfigurationError, match="stream/group"):
        redis_streams.parse_queue(queue)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://:secret@127.0.0.1/0", "must not hold a password"),
        ("http://127.0.0.1/", "must be redis://"),
        ("redis://127.0.0.1/zero", "database number"),
    ],
)
def test_settings_refuse_a_bad_url(url: str, message: str):
    with pytest.raises(ValueError, match=message):
        redis_streams.RedisStreamSettings(url=url)


@pytest.mark.parametrize(
    ("foreign", "retryable"),
    [
        (redis.exceptions.ConnectionError("refused"), True),
        (redis.exceptions.TimeoutError("slow"), True),
        (redis.exceptions.BusyLoadingError("loading"), True),
        (redis.exceptions.AuthenticationError("bad password"), False),
        (redis.exceptions.NoPermissionError("no"), False),
        (redis.exceptions.ResponseError("WRONGTYPE"), False),
        (OSError("reset"), True),
    ],
)
def test_every_redis_error_is_translated(foreign: BaseException, retryable: bool):
    translated = redis_streams.translate(foreign, connection="bus", doing="x")

    assert isinstance(translated, errors.ConnectorError)
    assert translated.retryable is retryable


async def _pending_is(server: Any, stream: str, count: int) -> bool:
    return await pending_count(server, stream) == count
