"""Long-running processes: the server (web and worker), a worker alone, one run by hand."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
import time
from pathlib import Path
from typing import Any

import uvicorn
from rich.console import Console

from lobflows import errors
from lobflows.cli import views
from lobflows.engine.events import Event, EventRouter
from lobflows.runtime import Runtime
from lobflows.secrets import usage as secret_usage
from lobflows.settings import Settings
from lobflows.store import retention
from lobflows.triggers.poll import Poller
from lobflows.triggers.schedule import Scheduler

log = logging.getLogger(__name__)
PRUNE_INTERVAL_SECONDS = 3600.0
CONSUMER_BACKOFF_SECONDS = (1.0, 60.0)  # first and largest delay between reconnects


async def serve(
    settings: Settings,
    flows_dir: Path,
    *,
    host: str,
    port: int,
    with_worker: bool = True,
    started: asyncio.Event | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve HTTP (and execute runs, unless with_worker is false) until stopped.

    `started` is set once the port accepts connections; setting `stop` shuts
    the server down as SIGINT or SIGTERM would.
    """
    from lobflows.web.app import create_app

    runtime = await Runtime.open(settings, flows_dir)
    app = create_app(runtime, has_local_worker=with_worker)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        http="httptools",
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    # Background first: a flow consuming a connection that cannot consume stops here.
    background = _background(runtime) if with_worker else []
    if not with_worker:
        # Webhook signatures need rotations made elsewhere, worker or not.
        background.append(asyncio.create_task(_refresh_secrets(runtime)))
    working = asyncio.create_task(runtime.worker.run()) if with_worker else None
    log.info(
        "Server listening",
        extra={
            "event": "server_started",
            "url": f"http://{host}:{port}",
            "flows": len(runtime.engine.project.flows),
            "worker": with_worker,
        },
    )
    if started is not None or stop is not None:
        background.append(asyncio.create_task(_watch(server, started, stop)))
    try:
        await server.serve()
    finally:
        # The worker is stopped, not cancelled: it lets steps in progress
        # finish and hands its runs back.
        runtime.worker.stop()
        if working is not None:
            await asyncio.gather(working, return_exceptions=True)
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        await runtime.close()


async def _watch(
    server: uvicorn.Server, started: asyncio.Event | None, stop: asyncio.Event | None
) -> None:
    while not server.started:
        await asyncio.sleep(0.02)
    if started is not None:
        started.set()
    if stop is not None:
        await stop.wait()
        server.should_exit = True


def _background(runtime: Runtime) -> list[asyncio.Task[Any]]:
    """What a process with a worker also runs: schedules, polls, queue
    consumers, pruning, and the monitor's checks and alerts."""
    consumers = _consumers(runtime)
    scheduler = Scheduler(runtime.engine, on_started=runtime.worker.wake)
    poller = Poller(runtime.engine, on_started=runtime.worker.wake)
    runtime.monitor.expects_worker = True
    return [
        asyncio.create_task(scheduler.run(runtime.worker.stopping)),
        asyncio.create_task(poller.run(runtime.worker.stopping)),
        asyncio.create_task(runtime.monitor.run(runtime.worker.stopping)),
        asyncio.create_task(_prune_periodically(runtime)),
        asyncio.create_task(_refresh_secrets(runtime)),
        *(asyncio.create_task(consumer) for consumer in consumers),
    ]


class _RepeatedConnectFailures(logging.Filter):
    """Drops aiormq's own error line for each failed connect: the consumer
    logs once per outage, and a broker down for an hour is one line, not 60."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("error when creating transport")


def _consumers(runtime: Runtime) -> list[Any]:
    """One queue consumer per flow whose event trigger names a connection."""
    router = EventRouter(runtime.engine)

    async def deliver(event: Event) -> list[str]:
        started = await router.deliver(event)
        if started:
            runtime.worker.wake()
        return started

    consumers = []
    for flow, loaded in runtime.engine.project.flows.items():
        trigger = loaded.spec.trigger.event
        if trigger is None or trigger.connection is None:
            continue
        connection = runtime.engine.connections.get(trigger.connection)
        if connection is None or not hasattr(connection, "consume"):
            kind = "not declared" if connection is None else connection.kind
            raise errors.ConfigurationError(
                f"flow {flow!r} consumes connection {trigger.connection!r}, which "
                f"cannot be consumed ({kind}); expected a broker connection (rabbitmq, nats, redis_stream)"
            )
        consumers.append(_consume_forever(flow, connection, trigger, deliver))
    aiormq_log = logging.getLogger("aiormq.connection")
    if consumers and not any(
        isinstance(f, _RepeatedConnectFailures) for f in aiormq_log.filters
    ):
        aiormq_log.addFilter(_RepeatedConnectFailures())
    return consumers


async def _consume_forever(
    flow: str, connection: Any, trigger: Any, deliver: Any
) -> None:
    """Consume a flow's queue, reconnecting with backoff; one log line per outage."""
    first, largest = CONSUMER_BACKOFF_SECONDS
    delay, is_down = first, False
    ids = {"flow": flow, "connection": connection.name, "queue": trigger.queue}

    def ready() -> None:
        nonlocal delay, is_down
        delay = first
        event = "consumer_reconnected" if is_down else "consumer_started"
        log.info("Consuming the queue", extra={"event": event, **ids})
        is_down = False

    while True:
        try:
            await connection.consume(
                trigger.queue, deliver, topic=trigger.topic, on_ready=ready
            )
        except Exception as exc:
            if not is_down:
                log.warning(
                    "Queue consumer lost; reconnecting with backoff: %s",
                    exc,
                    extra={"event": "consumer_disconnected", **ids},
                )
                is_down = True
        await asyncio.sleep(delay * random.uniform(0.8, 1.2))
        delay = min(delay * 2, largest)


async def _refresh_secrets(runtime: Runtime) -> None:
    """Reload the vault and record when secrets were last used, every few seconds."""
    await secret_usage.keep_fresh(runtime.secrets, runtime.store)


async def _prune_periodically(runtime: Runtime) -> None:
    while True:
        await asyncio.sleep(PRUNE_INTERVAL_SECONDS)
        try:
            await retention.prune(runtime.store)
        except Exception:
            log.exception("Pruning failed", extra={"event": "prune_failed"})


async def work(settings: Settings, flows_dir: Path) -> None:
    """Run a worker until SIGINT or SIGTERM; its runs are handed back on the way out."""
    runtime = await Runtime.open(settings, flows_dir)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, runtime.worker.stop)
    background = _background(runtime)
    try:
        await runtime.worker.run()
    finally:
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        await runtime.close()


async def run_once(
    settings: Settings,
    flows_dir: Path,
    flow: str,
    data: Any,
    *,
    wait: bool,
    console: Console,
) -> int:
    """Start a run by hand; execute it here unless asked not to. Returns an exit code."""
    runtime = await Runtime.open(settings, flows_dir)
    try:
        run, _ = await runtime.engine.start_run(
            flow, input=data, trigger="manual", claim=wait
        )
        if not wait:
            console.print(
                f"Run {run.id} stored; a worker will execute it.", highlight=False
            )
            return 0
        return await _execute_until_settled(runtime, run.id, console)
    finally:
        await runtime.close()


async def resume(
    settings: Settings, flows_dir: Path, run_id: str, *, console: Console
) -> int:
    """Execute a queued run here (after a replay), waiting out its retries."""
    runtime = await Runtime.open(settings, flows_dir)
    try:
        return await _execute_until_settled(runtime, run_id, console)
    finally:
        await runtime.close()


async def _execute_until_settled(
    runtime: Runtime, run_id: str, console: Console
) -> int:
    store, engine = runtime.store, runtime.engine
    run = await store.get_run(run_id)
    while not run.is_terminal:
        if run.status == "waiting":
            # A wait may last days; it is a row, and any worker takes it on.
            views.print_run(console, run, await store.attempts(run_id), with_data=False)
            console.print(
                f"The run waits at step {run.current_step}; `lobflows serve` or "
                "`lobflows worker` takes it on when its time or signal comes.",
                highlight=False,
            )
            return 0
        delay = run.due_at - time.time()
        if delay > 0:
            console.print(
                f"[dim]waiting {delay:.1f} s for the next attempt of {run.current_step}…[/]",
                highlight=False,
            )
            await asyncio.sleep(delay)
        claimed = await store.claim_run(
            run_id, owner=engine.owner, lease_seconds=engine.lease_seconds
        )
        if claimed is None:
            await asyncio.sleep(0.2)  # another worker holds it
        else:
            await engine.execute(claimed)
            await store.flush()
        run = await store.get_run(run_id)
    views.print_run(console, run, await store.attempts(run_id), with_data=False)
    return 0 if run.status == "succeeded" else 1
