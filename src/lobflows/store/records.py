"""What the run store hands out: runs, attempts and dead letters, as frozen records.

Also the step data budget: data larger than the budget is stored as a visible
marker with a preview, never cut silently.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import orjson
import sqlalchemy as sa

DEFAULT_STEP_DATA_BUDGET_BYTES = 65_536
CUT_MARKER = "_lobflows_cut"


@dataclass(frozen=True)
class RunRecord:
    id: str
    flow: str
    flow_version_id: int
    status: str
    trigger: str
    input: Any
    trigger_data: Any
    overrides: dict[str, Any] | None
    response: Any
    error: str | None
    current_step: str | None
    current_attempts: int
    due_at: float
    created_at: float
    updated_at: float
    finished_at: float | None
    dedupe_key: str | None
    parent_run_id: str | None = None

    @property
    def is_terminal(self) -> bool:
        return self.status in ("succeeded", "failed")


@dataclass(frozen=True)
class Attempt:
    id: int
    step: str
    attempt: int
    status: str
    input: Any
    output: Any
    error: str | None
    retryable: bool | None
    started_at: float
    finished_at: float
    next_attempt_at: float | None
    # A mapping step's record of which rule made each field.
    trace: Any = None


@dataclass(frozen=True)
class DeadLetter:
    id: int
    run_id: str
    flow: str
    step: str
    error: str
    step_input: Any
    status: str
    created_at: float
    resolved_at: float | None


def new_run_id() -> str:
    return uuid.uuid4().hex


def cut_to_budget(value: Any, budget_bytes: int) -> Any:
    """Keep step data within the budget; larger data is replaced by a visible marker."""
    if value is None:
        return None
    encoded = orjson.dumps(value, default=str)
    if len(encoded) <= budget_bytes:
        return value
    preview = encoded[:512].decode("utf-8", errors="ignore")
    return {CUT_MARKER: True, "bytes": len(encoded), "preview": preview}


def is_cut(value: Any) -> bool:
    return isinstance(value, dict) and value.get(CUT_MARKER) is True


def run_record(row: sa.Row[Any]) -> RunRecord:
    m = row._mapping
    return RunRecord(**{name: m[name] for name in RunRecord.__dataclass_fields__})


def attempt_record(row: sa.Row[Any]) -> Attempt:
    m = row._mapping
    return Attempt(**{name: m[name] for name in Attempt.__dataclass_fields__})
