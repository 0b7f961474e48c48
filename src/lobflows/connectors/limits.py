"""Being gentle with the systems flows call: limits and a circuit breaker.

Every connection may declare ``limits`` in connections.yaml::

    crm:
      type: http
      base_url: https://crm.example.com/api
      limits:
        concurrency: 8          # calls in flight, across every worker process
        rate_per_second: 20     # calls started per second, across every process
        burst: 5                # calls that may start at once after a quiet spell
        failures_to_open: 5     # failures in a row that open the breaker
        cool_down_seconds: 30   # how long an open breaker fails calls fast

Concurrency and rate are kept in the run store, so all workers on all hosts
share them; a call waits for a slot instead of failing. The breaker acts per
process: after `failures_to_open` failures in a row that say the system is
unwell (timeouts, refused connections, 5xx; not 429, which says when to come
back), calls fail fast without reaching it until the cool-down ends; then
one call probes, and its success closes the breaker again. Each change of a
breaker's state is written to the store, so every process shows it.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pydantic

from lobflows import errors

log = logging.getLogger(__name__)

# How long a slot stays held if its process dies without giving it back.
SLOT_LEASE_SECONDS = 300.0
_WAIT_STEPS = (0.02, 0.05, 0.1, 0.2, 0.5)
# How soon a call turned away by a half-open breaker is tried again.
PROBE_RETRY_SECONDS = 5.0


class Limits(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    concurrency: int | None = pydantic.Field(
        default=None, ge=1, le=10_000, description="Calls in flight across all workers."
    )
    rate_per_second: float | None = pydantic.Field(
        default=None, gt=0, description="Calls started per second across all workers."
    )
    burst: int = pydantic.Field(
        default=1, ge=1, description="Calls that may start at once after a pause."
    )
    failures_to_open: int = pydantic.Field(
        default=5, ge=1, description="Failures in a row that open the breaker."
    )
    cool_down_seconds: float = pydantic.Field(
        default=30.0, gt=0, description="How long an open breaker fails calls fast."
    )


@dataclass
class Breaker:
    """A circuit breaker of one connection in this process."""

    failures_to_open: int
    cool_down_seconds: float
    failures: int = 0
    open_until: float | None = None
    probing: bool = False

    @property
    def state(self) -> str:
        if self.open_until is None:
            return "closed"
        return "half-open" if self.probing else "open"

    def before_call(self, connection: str, now: float) -> None:
        """Let a call through, or fail it fast while the breaker is open."""
        if self.open_until is None:
            return
        if self.probing:
            # Another call is the probe: try again soon, not after a cool-down.
            wait = min(PROBE_RETRY_SECONDS, self.cool_down_seconds)
            raise errors.CircuitOpenError(
                f"{connection}: a probe call is under way after {self.failures} "
                f"failures in a row (circuit breaker half-open; next try in "
                f"{wait:.0f} s)",
                retry_after_seconds=wait,
            )
        if now < self.open_until:
            wait = self.open_until - now
            raise errors.CircuitOpenError(
                f"{connection}: calls are paused after {self.failures} failures in a row "
                f"(circuit breaker open; next try in {wait:.0f} s)",
                retry_after_seconds=wait,
            )
        self.probing = True  # this call is the one probe

    def after_call(self, now: float, *, unwell: bool) -> None:
        if not unwell:
            self.failures, self.open_until, self.probing = 0, None, False
            return
        self.failures += 1
        if self.probing or self.failures >= self.failures_to_open:
            self.open_until = now + self.cool_down_seconds
            self.probing = False


def is_unwell(exc: BaseException) -> bool:
    """Whether a failure says the system is down or failing (not bad input).

    A 429 does not count: the system is well and says when to come back,
    which the retry honours through Retry-After.
    """
    if isinstance(exc, errors.CircuitOpenError):
        return False
    if isinstance(exc, errors.TransportError):
        return True
    status = getattr(exc, "status", None)
    return isinstance(status, int) and status >= 500


class Limiter:
    """Slots and rate shared through the run store; breakers per connection."""

    def __init__(self, store: Any, now: Callable[[], float]) -> None:
        self.store = store
        self.now = now
        self.holder = uuid.uuid4().hex
        self.breakers: dict[str, Breaker] = {}

    def breaker(self, connection: str, limits: Limits) -> Breaker:
        found = self.breakers.get(connection)
        if found is None:
            found = self.breakers[connection] = Breaker(
                limits.failures_to_open, limits.cool_down_seconds
            )
        return found

    @asynccontextmanager
    async def call(
        self, connection: str, limits: Limits, *, timeout_seconds: float
    ) -> AsyncIterator[None]:
        """Wait for the connection's slot and rate, run the call, feed the breaker."""
        breaker = self.breaker(connection, limits)
        was = breaker.state
        breaker.before_call(connection, self.now())
        await self._publish(connection, breaker, was)
        slot = await self._wait_for_capacity(connection, limits, timeout_seconds)
        was = breaker.state
        try:
            yield
        except BaseException as exc:
            breaker.after_call(self.now(), unwell=is_unwell(exc))
            raise
        else:
            breaker.after_call(self.now(), unwell=False)
        finally:
            try:
                if slot is not None:
                    await self.store.release_slot(slot)
            finally:
                await self._publish(connection, breaker, was)

    async def _publish(self, connection: str, breaker: Breaker, was: str) -> None:
        """Write a change of the breaker's state to the store, for every
        process to show; failing to write never fails the call."""
        if breaker.state == was:
            return
        # The breaker runs on the engine's clock; the store keeps wall time.
        remaining = (breaker.open_until or self.now()) - self.now()
        try:
            await self.store.save_breaker(
                connection,
                holder=self.holder,
                state=breaker.state,
                failures=breaker.failures,
                open_until=time.time() + remaining,
            )
        except Exception as exc:
            log.warning(
                "Could not record the circuit breaker's state: %s",
                exc,
                extra={"event": "breaker_not_recorded", "connection": connection},
            )

    async def _wait_for_capacity(
        self, connection: str, limits: Limits, timeout_seconds: float
    ) -> int | None:
        if limits.concurrency is None and limits.rate_per_second is None:
            return None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_seconds
        for attempt in range(1_000_000):
            slot = None
            if limits.concurrency is not None:
                slot = await self.store.acquire_slot(
                    connection,
                    holder=self.holder,
                    limit=limits.concurrency,
                    lease_seconds=SLOT_LEASE_SECONDS,
                )
            if limits.concurrency is None or slot is not None:
                wait = 0.0
                if limits.rate_per_second is not None:
                    wait = await self.store.take_token(
                        connection, rate=limits.rate_per_second, burst=limits.burst
                    )
                if wait == 0.0:
                    return slot
                if slot is not None:
                    await self.store.release_slot(slot)
            else:
                wait = _WAIT_STEPS[min(attempt, len(_WAIT_STEPS) - 1)]
            if loop.time() + wait > deadline:
                raise errors.TransportError(
                    f"{connection}: no free slot within {timeout_seconds:g} s "
                    "(the connection's limits are all in use)"
                )
            await asyncio.sleep(wait)
        raise AssertionError("unreachable")
