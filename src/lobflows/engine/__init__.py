"""Runs, step execution, retry policy and workers."""

from __future__ import annotations

from lobflows.engine.runs import Engine, StepOutcome
from lobflows.engine.worker import Worker, new_owner_id

__all__ = ["Engine", "StepOutcome", "Worker", "new_owner_id"]
