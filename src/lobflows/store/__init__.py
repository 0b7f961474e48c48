"""The run store: runs, step attempts, timers and dead letters, on SQLite or PostgreSQL."""

from __future__ import annotations

from lobflows.store.records import Attempt, DeadLetter, RunRecord
from lobflows.store.runs import RunStore

__all__ = ["Attempt", "DeadLetter", "RunRecord", "RunStore"]
