"""One writer per process, committing the writes of many runs together.

Every write of the run store is a small function of a SQLAlchemy connection.
They queue up for one thread that owns one connection: it takes whatever is
waiting, runs it all in one transaction and commits once, so a single fsync
covers the steps of many concurrent runs (group commit). If any write in a
batch fails, the batch is rolled back and its writes are run again one by one,
each in its own transaction, so one bad write cannot fail its neighbours.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import sqlalchemy as sa

log = logging.getLogger(__name__)
T = TypeVar("T")
Write = Callable[[sa.Connection], Any]
MAX_BATCH = 256


@dataclass
class _Pending:
    write: Write
    future: asyncio.Future[Any] | None
    loop: asyncio.AbstractEventLoop


_STOP = object()


class GroupWriter:
    """Runs queued writes on one connection in a thread, many per commit."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(
            target=self._serve, name="lobflows-store-writer", daemon=True
        )
        self._thread.start()

    async def submit(self, write: Callable[[sa.Connection], T]) -> T:
        """Queue a write and wait until it is committed; returns what it returned."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Pending(write, future, loop))
        return await future

    def submit_nowait(self, write: Write) -> None:
        """Queue a write without waiting for it: it commits with the next batch.

        For writes whose loss in a crash costs nothing but redoing pure work;
        writes are committed in the order they were queued, so any later
        awaited write implies this one is committed too.
        """
        self._queue.put(_Pending(write, None, asyncio.get_running_loop()))

    def close(self) -> None:
        self._queue.put(_STOP)
        self._thread.join(timeout=30)
        self.engine.dispose()

    def _serve(self) -> None:
        with self.engine.connect() as conn:
            while True:
                batch, stopping = self._next_batch()
                if batch:
                    self._run(conn, batch)
                if stopping:
                    return

    def _next_batch(self) -> tuple[list[_Pending], bool]:
        first = self._queue.get()
        if first is _STOP:
            return [], True
        batch = [first]
        while len(batch) < MAX_BATCH:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                return batch, True
            batch.append(item)
        return batch, False

    def _run(self, conn: sa.Connection, batch: list[_Pending]) -> None:
        try:
            with conn.begin():
                outcomes = [(item, item.write(conn), None) for item in batch]
        except Exception as exc:
            if len(batch) == 1:
                outcomes = [(batch[0], None, exc)]
            else:
                outcomes = [self._alone(conn, item) for item in batch]
        _settle(outcomes)

    @staticmethod
    def _alone(
        conn: sa.Connection, item: _Pending
    ) -> tuple[_Pending, Any, BaseException | None]:
        try:
            with conn.begin():
                return item, item.write(conn), None
        except Exception as exc:
            return item, None, exc


def _settle(outcomes: list[tuple[_Pending, Any, BaseException | None]]) -> None:
    by_loop: dict[
        asyncio.AbstractEventLoop, list[tuple[_Pending, Any, BaseException | None]]
    ] = {}
    for outcome in outcomes:
        by_loop.setdefault(outcome[0].loop, []).append(outcome)
    for loop, items in by_loop.items():
        # One wake-up of the event loop per batch, not per write.
        try:
            loop.call_soon_threadsafe(_resolve, items)
        except RuntimeError:
            log.debug(
                "Event loop closed before its writes were settled",
                extra={"event": "writer_loop_closed"},
            )


def _resolve(items: list[tuple[_Pending, Any, BaseException | None]]) -> None:
    for item, result, error in items:
        if item.future is None:
            if error is not None:
                log.error(
                    "A queued store write failed",
                    exc_info=error,
                    extra={"event": "store_write_failed"},
                )
            continue
        if item.future.done():
            continue
        if error is not None:
            item.future.set_exception(error)
        else:
            item.future.set_result(result)
