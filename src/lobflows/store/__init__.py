"""The run store: runs, step attempts, timers and dead letters, on SQLite or PostgreSQL."""

from __future__ import annotations

from lobflows.store.runs import (
    Attempt,
    DeadLetter,
    RunRecord,
    RunStore,
)

__all__ = ["Attempt", "DeadLetter", "RunRecord", "RunStore"]
