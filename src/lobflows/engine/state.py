"""What one execution of a run carries, and how it stops; shared by the engine's parts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lobflows.spec import models
from lobflows.store import RunRecord

# Due time of a wait with no timeout: it wakes by signal only.
FAR_FUTURE = 32503680000.0  # 3000-01-01


@dataclass(frozen=True)
class StepOutcome:
    """How a run left the engine: succeeded, queued for a retry, failed
    (dead-lettered), or released to another worker at shutdown."""

    status: str
    next_attempt_at: float | None = None


class Stop(Exception):
    """Internal: the run cannot go on in this pass (retry scheduled or dead letter)."""

    def __init__(self, outcome: StepOutcome) -> None:
        self.outcome = outcome


@dataclass
class Pass:
    """One pass of execution over a run: its record, flow and growing context."""

    run: RunRecord
    flow: models.Flow
    completed: dict[str, Any]
    context: dict[str, Any] = field(default_factory=dict)
    # Failed attempts so far per step (the attempt count of its next try).
    failures: dict[str, int] = field(default_factory=dict)
    # Inside parallel branches: failures wait here to be settled together.
    deferred: list[Failure] | None = None
    # In the undo phase: completed steps are being undone after a failure.
    compensating: bool = False
    # Mapping steps: which rule made each field, journaled with the step.
    traces: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Failure:
    """A failed attempt of a step, and when it is tried again (None: never)."""

    step: str
    attempt: int
    input: Any
    error: str
    retryable: bool
    started_at: float
    next_attempt_at: float | None
    # The call was not made (the breaker was open): journaled as paused, it
    # does not count as an attempt.
    paused: bool = False


def branch_step_id(step_id: str, branch: str) -> str:
    """The journal name of a branch that failed for good and was collected."""
    return f"{step_id}.{branch}"


def undo_step_id(step_id: str) -> str:
    """The journal name of the call that undoes a step."""
    return f"undo.{step_id}"


def uses_links(notify: models.Notify) -> bool:
    return "links" in str(notify.with_)


def result_of(child: RunRecord) -> Any:
    """What a child run hands back: the body of its respond step, if any."""
    return (child.response or {}).get("body")
