"""What the broker connector tests share: the flows, a runtime, consuming, waits."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from lobflows.connectors.base import CallContext
from lobflows.engine.events import EventRouter
from lobflows.runtime import Runtime
from lobflows.settings import Settings
from tests import support

TOPIC = "orders.received"
READY_SECONDS = 10
CARD = """card:
  trigger: see below
  data: {entity: order, sensitivity: internal}
  transform: none
  target: the run store
  on_failure: dead letter
  owner: team@example.com
"""

Deliver = Callable[[Any], Awaitable[object]]


def intake_flow(queue: str, *, connection: str = "bus") -> str:
    """A flow started by each message on `queue`, keeping its order."""
    return (
        "flow: intake\n"
        + CARD
        + f"""trigger:
  event: {{topic: {TOPIC}, connection: {connection}, queue: "{queue}"}}
steps:
  - id: seen
    map: {{order: "{{{{ input.order }}}}"}}
"""
    )


def sender_flow(*, connection: str = "bus", **params: str) -> str:
    """A manual flow that publishes its order with `params` besides the body."""
    lines = "".join(f"      {name}: {value}\n" for name, value in params.items())
    return (
        "flow: sender\n"
        + CARD
        + f"""trigger: {{manual: {{}}}}
steps:
  - id: send
    call: {connection}.publish
    with:
{lines}      body: {{order: "{{{{ input.order }}}}"}}
"""
    )


@contextlib.asynccontextmanager
async def open_runtime(
    store_url: str, flows_dir: Path, *, connections: str, intake: str, sender: str
) -> AsyncIterator[Runtime]:
    """A runtime over `flows_dir`, holding the connections and both flows."""
    (flows_dir / "connections.yaml").write_text(connections)
    (flows_dir / "intake.yaml").write_text(intake)
    (flows_dir / "sender.yaml").write_text(sender)
    runtime = await Runtime.open(Settings(database_url=store_url), flows_dir)
    try:
        yield runtime
    finally:
        await runtime.close()


@contextlib.asynccontextmanager
async def running(work: Coroutine[Any, Any, object]) -> AsyncIterator[None]:
    """`work` as a task until the block ends, then cancelled."""
    task = asyncio.create_task(work)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.asynccontextmanager
async def delivering(
    connector: Any, queue: str, deliver: Deliver
) -> AsyncIterator[None]:
    """`connector` consuming `queue` into `deliver`, from ready to the block's end."""
    ready = asyncio.Event()
    work = connector.consume(queue, deliver, topic=TOPIC, on_ready=ready.set)
    async with running(work):
        await asyncio.wait_for(ready.wait(), READY_SECONDS)
        yield


def consuming(
    runtime: Runtime, queue: str, *, connection: str = "bus"
) -> contextlib.AbstractAsyncContextManager[None]:
    """The runtime's `connection` consuming `queue` into its event router."""
    connector = runtime.engine.connections[connection]
    router = EventRouter(runtime.engine)
    return delivering(connector, queue, router.deliver)


async def send_order(runtime: Runtime, order: str) -> tuple[str, dict[str, Any]]:
    """Run the sender flow for `order`: its run id and what its send step gave."""
    sender, _ = await runtime.engine.start_run(
        "sender", input={"order": order}, trigger="manual"
    )
    await support.drain(runtime)
    steps = await runtime.store.completed_steps(sender.id)
    return sender.id, steps["send"]


async def publish_step(
    connector: Any, params: dict[str, Any], *, timeout_seconds: float = 10
) -> Any:
    """Call `connector`'s publish action as the sender's send step would."""
    context = CallContext(
        run_id="r1",
        flow="sender",
        step="send",
        attempt=1,
        timeout_seconds=timeout_seconds,
    )
    return await connector.call("publish", params, context)


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout_seconds: float = 10
) -> None:
    """Wait until `check` holds, failing the test past the timeout."""
    deadline = time.monotonic() + timeout_seconds
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def has_runs(runtime: Runtime, count: int) -> bool:
    """Whether the intake flow has at least `count` runs."""
    return len(await runtime.store.list_runs(flow="intake")) >= count


def rejections(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """The log records of messages a consumer rejected."""
    return [r for r in caplog.records if r.__dict__.get("event") == "message_rejected"]


class Recorder:
    """A delivery that keeps the id of each event it is given."""

    def __init__(self) -> None:
        self.ids: list[str] = []

    async def __call__(self, event: Any) -> None:
        self.ids.append(event.id)


async def deliver_failing(event: Any) -> None:
    """A delivery that fails, as when the run store is down."""
    raise RuntimeError("store is down")


async def deliver_nothing(event: Any) -> None:
    """A delivery for consumers that must fail before any message arrives."""
    raise AssertionError("nothing to deliver")


async def consume_nothing(connector: Any, queue: str) -> None:
    """Consume `queue` with a delivery that must never be called."""
    await connector.consume(queue, deliver_nothing, topic="t")
