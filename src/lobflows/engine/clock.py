"""Time as the engine sees it: the system clock, or one that tests move by hand.

Due times, timers, waits and retry delays all read the engine's clock, so a
test can move a run three days forward without sleeping.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch."""
        ...


class SystemClock:
    """The real time."""

    def now(self) -> float:
        return time.time()


class ManualClock:
    """A clock that stands still until moved."""

    def __init__(self, start: float | None = None) -> None:
        self.current = time.time() if start is None else start

    def now(self) -> float:
        return self.current

    def advance(self, seconds: float) -> None:
        self.current += seconds
