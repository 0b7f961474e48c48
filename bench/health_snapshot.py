"""What one health snapshot costs as the run store fills.

The dashboard's overview and its live updates, `/metrics` and the alert
rules all read `Monitor.snapshot()`: every flow's and connection's runs
today, error rate and latency over the window, backlog, last success and
open dead letters. This script fills a fresh store with runs of one flow
(one in ten dead-lettered, all within the monitor's window), then times the
snapshot against a baseline in the same run: reading the newest 50 runs,
which is what `lobflows runs list` does.

    python bench/health_snapshot.py [--store sqlite|postgresql]
        [--runs 2000,20000] [--repeat 20]

Needs LoB Flows installed; for postgresql, a server on 127.0.0.1:5432 where
``postgres`` may create databases.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from store_ops import open_store

from lobflows.connectors.base import build_connections
from lobflows.monitor import Monitor, config
from lobflows.secrets import SecretStore
from lobflows.spec import loader
from lobflows.store import RunStore

FLOW = """flow: orders
card:
  trigger: by hand
  data: {entity: order, sensitivity: internal}
  transform: none
  target: erp
  on_failure: dead letter
  owner: ops@example.com
  expect: {latency: 30s, every: 1h, error_rate: 5%}
trigger: {manual: {}}
steps:
  - id: push
    call: erp.request
    with: {path: /orders}
"""
CONNECTIONS = {"erp": {"type": "http", "base_url": "http://127.0.0.1:9/api"}}
FAILED_EVERY = 10


@contextlib.asynccontextmanager
async def fresh_store(kind: str) -> AsyncIterator[RunStore]:
    """A migrated store on a fresh database, in a folder of its own."""
    with tempfile.TemporaryDirectory() as folder:
        async with open_store(kind, Path(folder)) as store:
            yield store


async def fill(store: RunStore, version_id: int, count: int, start: int) -> None:
    """`count` finished runs of the flow, one in ten dead-lettered."""
    for n in range(start, start + count):
        run, _ = await store.create_run(
            flow="orders", flow_version_id=version_id, input={}, trigger="manual"
        )
        started = time.time() - 0.5
        if n % FAILED_EVERY == 0:
            await store.record_dead_letter(
                run_id=run.id,
                flow="orders",
                step="push",
                attempt=1,
                input={},
                error="erp answered 503",
                retryable=True,
                started_at=started,
            )
        else:
            await store.record_success(
                run_id=run.id,
                step="push",
                attempt=1,
                input={},
                output={},
                started_at=started,
            )
            await store.finish_run(run.id)


async def timed(call: Callable[[], Awaitable[Any]], repeat: int) -> list[float]:
    await call()  # warm caches and prepared statements
    seconds = []
    for _ in range(repeat):
        started = time.perf_counter()
        await call()
        seconds.append(time.perf_counter() - started)
    return seconds


def summary(seconds: list[float]) -> str:
    ordered = sorted(seconds)
    p95 = ordered[max(0, int(0.95 * len(ordered)) - 1)]
    return (
        f"median {1000 * statistics.median(ordered):8.2f} ms, p95 {1000 * p95:8.2f} ms"
    )


async def main(kind: str, sizes: list[int], repeat: int) -> None:
    flow = loader.load_flow_text(FLOW, "orders.yaml")
    project = loader.Project(flows={"orders": flow}, connections=CONNECTIONS)
    connections = build_connections(CONNECTIONS, SecretStore())
    print(f"Health snapshot on {kind}: one flow, one connection, 1 in 10 runs failed")
    print(f"{'runs':>8}  {'snapshot':<36}  {'newest 50 runs (baseline)':<36}  ratio")
    async with fresh_store(kind) as store:
        monitor = Monitor(
            store=store,
            project=project,
            connections=connections,
            config=config.parse("", "monitor.yaml"),
            owner="bench",
        )
        version_id, _ = await store.register_flow_version(
            flow="orders", digest="bench", definition={}
        )
        filled = 0
        for size in sizes:
            await fill(store, version_id, size - filled, filled)
            filled = size
            await store.flush()
            snapshot = await timed(monitor.snapshot, repeat)
            baseline = await timed(lambda: store.list_runs(limit=50), repeat)
            ratio = statistics.median(snapshot) / statistics.median(baseline)
            print(
                f"{size:>8,}  {summary(snapshot):<36}  {summary(baseline):<36}  "
                f"{ratio:5.1f}×"
            )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--runs", default="2000,20000", help="store sizes, ascending")
    parser.add_argument("--repeat", type=int, default=20, help="timings per size")
    return parser.parse_args()


if __name__ == "__main__":
    args = parse_args()
    sizes = sorted(int(n) for n in args.runs.split(","))
    asyncio.run(main(args.store, sizes, args.repeat))
