"""Repeated failed sign-ins, throttled by counting them in the audit log.

After `MAX_FAILURES` failed sign-ins for one user name, or from one client
address, within `WINDOW_SECONDS`, password sign-ins for that name or from
that address are refused without checking the password, until the oldest
of those failures leaves the window. The count lives in the run store, so
every server process sees the same one.

A successful sign-in clears the count of its user name, but not of its
address: one good account must not buy more guesses at the others.
Refusals are audited as ``sign_in_throttled`` and do not count as failures,
so retrying while refused does not push the time to try again further off.

Within one process, sign-ins for the same name or from the same address
take turns (`Turns`), so simultaneous guesses cannot all pass the count
before any of their failures is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

MAX_FAILURES = 5
WINDOW_SECONDS = 15 * 60.0


@dataclass(frozen=True)
class Refusal:
    """Sign-ins refused for a user name or a client address, until when."""

    by: str  # "user" | "client"
    retry_at: float  # seconds since the epoch

    def message(self, now: float) -> str:
        """What the sign-in page says: why, and when to try again."""
        about = "this user name" if self.by == "user" else "your network address"
        minutes = max(1, math.ceil((self.retry_at - now) / 60))
        at = time.strftime("%H:%M UTC", time.gmtime(self.retry_at))
        return (
            f"Too many failed sign-ins for {about}. Try again after {at} "
            f"(in {minutes} minute{'s' if minutes != 1 else ''})."
        )


async def refusal(
    store: Any, *, name: str, client: str | None, now: float
) -> Refusal | None:
    """Why a sign-in as `name` from `client` is refused now, or None."""
    window_start = now - WINDOW_SECONDS
    target = f"user {name}"
    success = await store.latest_audit("sign_in", target)
    since = window_start if success is None else max(window_start, success.at)
    refusals = [
        _refusal("user", await _failures(store, since=since, target=target)),
    ]
    if client:
        by_client = await _failures(store, since=window_start, client=client)
        refusals.append(_refusal("client", by_client))
    found = [r for r in refusals if r is not None]
    return max(found, key=lambda r: r.retry_at) if found else None


async def _failures(store: Any, **where: Any) -> list[float]:
    return await store.failed_sign_in_times(limit=MAX_FAILURES, **where)


def _refusal(by: str, failed_at: list[float]) -> Refusal | None:
    # Newest first: the count drops below the limit once the oldest of the
    # last MAX_FAILURES failures is older than the window.
    if len(failed_at) < MAX_FAILURES:
        return None
    return Refusal(by, failed_at[MAX_FAILURES - 1] + WINDOW_SECONDS)


class Turns:
    """One lock per key, kept only while a sign-in holds or awaits it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def taken(self, *keys: str) -> AsyncIterator[None]:
        """Hold the locks of `keys`, always in the order given."""
        async with contextlib.AsyncExitStack() as stack:
            for key in keys:
                await stack.enter_async_context(self._one(key))
            yield

    @contextlib.asynccontextmanager
    async def _one(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)
