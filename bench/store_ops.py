"""The run store alone: how many runs per second its transactions allow.

Replays the store traffic of one run of the webhook benchmark (create the
run, read completed steps, journal three steps, finish) from N concurrent
tasks for a few seconds, without HTTP or templates, and reports runs per
second and the mean time of each operation. This is the ceiling the store
puts on the engine.

    python bench/store_ops.py [--store sqlite|postgresql] [--levels 1,10,50]
        [--seconds 5]

Needs LoB Flows installed; for postgresql, a server on 127.0.0.1:5432 where
``postgres`` may create databases.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from webhook_throughput import POSTGRES_ADMIN_URL, postgres_database

from lobflows.store import RunStore

CONTACT = {"name": "Ada Lovelace", "email": "ada@example.com"}


class Timings:
    """Seconds spent per operation name, and how often it ran."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    async def time(self, name: str, call: Callable[[], Awaitable[Any]]) -> Any:
        started = time.perf_counter()
        try:
            return await call()
        finally:
            self.seconds[name] += time.perf_counter() - started
            self.calls[name] += 1

    def report(self) -> str:
        return ", ".join(
            f"{name} {1000 * self.seconds[name] / self.calls[name]:.2f} ms"
            for name in self.seconds
        )


async def one_run(store: RunStore, version_id: int, timings: Timings) -> None:
    """The store calls the engine makes for one map-call-respond run."""
    run, _ = await timings.time(
        "create_run",
        lambda: store.create_run(
            flow="bench",
            flow_version_id=version_id,
            input=CONTACT,
            trigger="webhook",
            trigger_data={"path": "/hooks/contact"},
            lease_owner="bench",
        ),
    )
    await timings.time("completed_steps", lambda: store.completed_steps(run.id))
    for step in ("contact", "deliver", "reply"):
        await timings.time(
            "record_success",
            lambda s=step: store.record_success(
                run_id=run.id,
                step=s,
                attempt=1,
                input=CONTACT,
                output=CONTACT,
                started_at=time.time(),
                response=CONTACT if s == "reply" else None,
            ),
        )
    await timings.time("finish_run", lambda: store.finish_run(run.id))


async def drive(
    store: RunStore, version_id: int, tasks: int, seconds: float
) -> tuple[int, Timings]:
    """Run `tasks` loops of one_run until the time is up; count finished runs."""
    timings, done = Timings(), 0
    deadline = time.monotonic() + seconds

    async def loop() -> None:
        nonlocal done
        while time.monotonic() < deadline:
            await one_run(store, version_id, timings)
            done += 1

    await asyncio.gather(*(loop() for _ in range(tasks)))
    return done, timings


@contextlib.asynccontextmanager
async def open_store(kind: str, work_dir: Path) -> AsyncIterator[RunStore]:
    """A migrated run store on a fresh database, closed (and dropped) afterwards."""
    with contextlib.ExitStack() as stack:
        if kind == "sqlite":
            url = f"sqlite:///{work_dir / 'runs.db'}"
        else:
            url = stack.enter_context(postgres_database(POSTGRES_ADMIN_URL))
        store = RunStore(url)
        await store.migrate()
        try:
            yield store
        finally:
            await store.close()


async def main_async(kind: str, levels: list[int], seconds: float) -> None:
    """Register a flow version, then drive each level in turn."""
    with tempfile.TemporaryDirectory(prefix="lobflows-store-") as work_dir:
        async with open_store(kind, Path(work_dir)) as store:
            version_id, _ = await store.register_flow_version(
                flow="bench", digest="0" * 64, definition={"flow": "bench"}
            )
            for tasks in levels:
                done, timings = await drive(store, version_id, tasks, seconds)
                print(
                    f"{kind} c={tasks}: {done / seconds:,.1f} runs/s; {timings.report()}"
                )


def main() -> None:
    """Measure the store at each concurrency level."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--levels", default="1,10,50")
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    asyncio.run(main_async(args.store, levels, args.seconds))


if __name__ == "__main__":
    main()
