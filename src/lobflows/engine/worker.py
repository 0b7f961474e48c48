"""Workers claim due runs from the store and execute them, many at a time.

Runs arrive two ways: a trigger in the same process hands over a run it has
already claimed (no polling delay), and the store is polled for runs that
are due (retries, runs started elsewhere, runs whose worker died). A
heartbeat renews the leases of runs in progress; it never sits on the path
that completes a run.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

from lobflows.connectors.base import raise_if_cancelled
from lobflows.engine.runs import Engine
from lobflows.store import RunRecord

log = logging.getLogger(__name__)


def new_owner_id() -> str:
    return f"worker-{uuid.uuid4().hex[:12]}"


class Worker:
    """Executes runs with at most `concurrency` in progress."""

    def __init__(
        self,
        engine: Engine,
        *,
        concurrency: int = 64,
        poll_interval_seconds: float = 0.5,
        drain_seconds: float = 60.0,
    ) -> None:
        self.engine = engine
        self.concurrency = concurrency
        self.poll_interval_seconds = poll_interval_seconds
        self.drain_seconds = drain_seconds
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self.stopping = asyncio.Event()
        engine.on_due.append(self._wake_at)

    def submit(self, run: RunRecord, *, fresh: bool = False) -> None:
        """Execute a run this worker has already claimed (`fresh`: created just now)."""
        task = asyncio.create_task(self._execute(run, fresh=fresh))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _wake_at(self, when: float) -> None:
        loop = asyncio.get_running_loop()
        loop.call_later(max(0.0, when - time.time()), self._wake.set)

    async def run(self) -> None:
        """Poll and execute until `stop` is called."""
        heartbeat = asyncio.create_task(self._heartbeat())
        log.info(
            "Worker started",
            extra={
                "event": "worker_started",
                "worker": self.engine.owner,
                "concurrency": self.concurrency,
            },
        )
        try:
            while not self.stopping.is_set():
                claimed = await self._claim()
                if claimed == 0:
                    await self._sleep()
        finally:
            heartbeat.cancel()
            await self._drain()
            await self.engine.store.release_leases(owner=self.engine.owner)
            log.info(
                "Worker stopped",
                extra={"event": "worker_stopped", "worker": self.engine.owner},
            )

    def wake(self) -> None:
        """Look for due runs now instead of at the next poll."""
        self._wake.set()

    def stop(self) -> None:
        """Start no new step; runs in progress finish the step they are in."""
        self.engine.is_stopping = True
        self.stopping.set()
        self._wake.set()

    async def _claim(self) -> int:
        free = self.concurrency - len(self._tasks)
        if free <= 0:
            return 0
        runs = await self.engine.store.claim_runs(
            now=self.engine.clock.now(),
            owner=self.engine.owner,
            limit=min(free, 32),
            lease_seconds=self.engine.lease_seconds,
        )
        for run in runs:
            self.submit(run)
        return len(runs)

    async def _sleep(self) -> None:
        self._wake.clear()
        try:
            await asyncio.wait_for(
                self._wake.wait(), timeout=self.poll_interval_seconds
            )
        except TimeoutError:
            pass

    async def _execute(self, run: RunRecord, *, fresh: bool) -> None:
        async with self._slots:
            try:
                await self.engine.execute(run, fresh=fresh)
            except Exception:
                # The store or the flow definition failed, not a step: the lease
                # runs out and another pass (or worker) takes the run up again.
                log.exception(
                    "Run execution crashed",
                    extra={"event": "run_crashed", "run_id": run.id, "flow": run.flow},
                )

    async def _heartbeat(self) -> None:
        interval = self.engine.lease_seconds / 3
        while True:
            await asyncio.sleep(interval)
            try:
                await self.engine.store.renew_leases(
                    owner=self.engine.owner, lease_seconds=self.engine.lease_seconds
                )
            except Exception:
                log.exception(
                    "Lease renewal failed", extra={"event": "lease_renewal_failed"}
                )
            raise_if_cancelled()

    async def _drain(self) -> None:
        if not self._tasks:
            return
        log.info(
            "Waiting for steps in progress",
            extra={"event": "worker_draining", "runs": len(self._tasks)},
        )
        # A step in flight is waited for up to its own timeout, so that what
        # it did reaches the journal instead of being done twice.
        _, pending = await asyncio.wait(self._tasks, timeout=self.drain_seconds)
        for task in pending:
            task.cancel()
