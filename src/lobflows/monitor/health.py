"""Health: what is measured of each flow and connection, and the rules that
turn the figures into healthy, degraded or down, with the reasons in words.

Flow rules (the card's ``expect`` sets the thresholds):

- p95 run duration over the window above ``expect.latency``: degraded.
- error rate over the window above ``expect.error_rate`` (else the
  monitor's ``error_rate``), with at least ``min_runs`` runs: degraded; every
  run in the window failed: down.
- no success for longer than ``expect.every``: degraded; for twice as long:
  down.
- more runs due but not taken than ``expect.backlog``: degraded.
- open dead letters: degraded until they are replayed or discarded.
- a connection the flow calls is degraded or down: the flow is too.
- no run ever and no ``every`` to miss: unknown.

Connection rules:

- scheduled checks failing ``degraded_after_failures`` times in a row (or
  for ``degraded_after``): degraded; ``down_after_failures`` times (or for
  ``down_after``): down.
- the circuit breaker open or half-open in any process: degraded.
- calls failing above the error rate: degraded; every call failed: down.
  Only failures of the system count (timeouts, refused connections, 429,
  5xx: what is retried); a call refused for its data counts against the
  flow, not the connection.
- never checked (no check for its type or none yet) and no calls: unknown.
"""

from __future__ import annotations

import datetime
import math
from dataclasses import dataclass, field
from typing import Any

from lobflows.monitor.config import Checks, MonitorConfig
from lobflows.spec.models import Expectations

ORDER = {"healthy": 0, "unknown": 1, "degraded": 2, "down": 3}


@dataclass(frozen=True)
class Health:
    """The health of one flow or connection, with the figures behind it."""

    subject: str  # "flow" | "connection"
    name: str
    status: str  # "healthy" | "degraded" | "down" | "unknown"
    reasons: list[str] = field(default_factory=list)
    runs_today: int = 0  # runs started today; for a connection, calls
    errors_today: int = 0  # failed attempts today
    error_rate: float | None = None  # over the window, 0..1; None without runs
    p50_seconds: float | None = None
    p95_seconds: float | None = None
    backlog: int = 0  # runs due now that no worker has taken
    last_run_at: float | None = None
    last_success_at: float | None = None
    # Connections only.
    breaker: str | None = None  # closed | open | half-open, worst over processes
    last_check_at: float | None = None
    check_error: str | None = None
    # What the last check said (its answer or its error), or why there is
    # none yet: "not checked yet" or "no check for this type".
    check_result: str | None = None
    # Flows: the status by the flow's own figures, before its connections';
    # alerts use it, so one failing system makes one alert, not one per flow.
    own_status: str | None = None
    connections: list[str] = field(default_factory=list)

    @property
    def is_healthy(self) -> bool:
        return self.status == "healthy"

    @classmethod
    def measured(
        cls, subject: str, name: str, verdict: Verdict, figures: Figures, **own: Any
    ) -> Health:
        """The health a verdict gives, with the figures behind it; `own` holds
        the fields of one subject (a connection's check, a flow's own status)."""
        fields: dict[str, Any] = {
            "subject": subject,
            "name": name,
            "status": verdict.status,
            "reasons": verdict.reasons,
            "runs_today": figures.runs_today,
            "errors_today": figures.errors_today,
            "error_rate": figures.error_rate,
            "p50_seconds": percentile(figures.durations, 0.50),
            "p95_seconds": percentile(figures.durations, 0.95),
            "backlog": figures.backlog,
            "last_run_at": figures.last_run_at,
            "last_success_at": figures.last_success_at,
        }
        return cls(**{**fields, **own})


@dataclass(frozen=True)
class RecentError:
    """A failed step attempt, for the recent errors list."""

    at: float
    flow: str
    run_id: str
    step: str
    error: str  # secrets scrubbed


@dataclass(frozen=True)
class Snapshot:
    """Health of every flow and connection at one moment."""

    at: float
    flows: dict[str, Health]
    connections: dict[str, Health]
    recent_errors: list[RecentError]
    # flow -> (open dead letters, newest one's time, step, error (scrubbed))
    dead_letters: dict[str, tuple[int, float, str, str]] = field(default_factory=dict)

    @property
    def is_down(self) -> bool:
        """Whether any flow or connection is down."""
        return any(h.status == "down" for h in self.all())

    def all(self) -> list[Health]:
        return [*self.flows.values(), *self.connections.values()]


@dataclass
class Figures:
    """What was measured of one flow or connection; the rules read these."""

    runs_today: int = 0
    errors_today: int = 0
    finished: int = 0  # runs (or calls) that ended in the window
    failed: int = 0
    durations: list[float] = field(default_factory=list)
    backlog: int = 0
    last_run_at: float | None = None
    last_success_at: float | None = None
    registered_at: float | None = None

    @property
    def error_rate(self) -> float | None:
        return self.failed / self.finished if self.finished else None


def percentile(values: list[float], share: float) -> float | None:
    """The nearest-rank percentile, or None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(share * len(ordered)))
    return ordered[rank - 1]


def start_of_day(now: float) -> float:
    """Local midnight: "today" is the operator's day."""
    local = datetime.datetime.fromtimestamp(now).astimezone()
    return local.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()


def worst(statuses: list[str]) -> str:
    return max(statuses, key=ORDER.__getitem__, default="healthy")


class Verdict:
    """Collects a status and its reasons while rules are applied."""

    def __init__(self) -> None:
        self.status = "healthy"
        self.reasons: list[str] = []

    def add(self, status: str, reason: str) -> None:
        self.status = worst([self.status, status])
        self.reasons.append(reason)


def judge_flow(
    figures: Figures,
    expect: Expectations | None,
    config: MonitorConfig,
    *,
    now: float,
) -> Verdict:
    """A flow's own status and reasons, from its figures and its card's expectations."""
    expect = expect or Expectations()
    verdict = Verdict()
    _judge_rate(
        verdict, figures, expect.error_rate or config.error_rate, config, "runs"
    )
    p95 = percentile(figures.durations, 0.95)
    if expect.latency is not None and p95 is not None and p95 > expect.latency:
        verdict.add(
            "degraded",
            f"p95 run time {span(p95)} is over the expected {span(expect.latency)}",
        )
    if expect.every is not None:
        _judge_gap(verdict, figures, expect.every, now)
    if expect.backlog is not None and figures.backlog > expect.backlog:
        verdict.add(
            "degraded",
            f"{figures.backlog} runs are due and waiting for a worker "
            f"(expected at most {expect.backlog})",
        )
    if figures.last_run_at is None and expect.every is None and not verdict.reasons:
        verdict.add("unknown", "no runs yet")
    return verdict


def judge_connection(
    figures: Figures,
    check: tuple[int, float | None, str | None] | None,
    breaker: str | None,
    config: MonitorConfig,
    *,
    now: float,
) -> Verdict:
    """A connection's status: its checks (failures in a row, failing since,
    last error), its breaker here, and its calls."""
    verdict = Verdict()
    if check is not None:
        _judge_checks(verdict, check, config.checks, now)
    if breaker in ("open", "half-open"):
        verdict.add("degraded", f"the circuit breaker is {breaker}")
    _judge_rate(verdict, figures, config.error_rate, config, "calls")
    return verdict


def _judge_checks(
    verdict: Verdict,
    check: tuple[int, float | None, str | None],
    rules: Checks,
    now: float,
) -> None:
    failures, failing_since, error = check
    if failures <= 0:
        return
    failing_for = now - failing_since if failing_since is not None else 0.0
    is_down = failures >= rules.down_after_failures or (
        rules.down_after_seconds is not None and failing_for >= rules.down_after_seconds
    )
    is_degraded = failures >= rules.degraded_after_failures or (
        rules.degraded_after_seconds is not None
        and failing_for >= rules.degraded_after_seconds
    )
    if not (is_down or is_degraded):
        return
    in_a_row = (
        "1 check failed" if failures == 1 else f"{failures} checks failed in a row"
    )
    since = f" over {span(failing_for)}" if failing_for >= 1 else ""
    verdict.add(
        "down" if is_down else "degraded", f"{in_a_row}{since}: {error or 'no answer'}"
    )


def _judge_rate(
    verdict: Verdict,
    figures: Figures,
    threshold: float,
    config: MonitorConfig,
    what: str,
) -> None:
    rate = figures.error_rate
    if rate is None or figures.finished < config.min_runs:
        return
    window = span(config.window_seconds)
    if figures.failed == figures.finished:
        verdict.add(
            "down", f"all {figures.finished} {what} in the last {window} failed"
        )
    elif rate > threshold:
        verdict.add(
            "degraded",
            f"{rate:.0%} of {what} failed in the last {window} "
            f"({figures.failed} of {figures.finished}; expected at most {threshold:.0%})",
        )


def _judge_gap(verdict: Verdict, figures: Figures, every: float, now: float) -> None:
    since = figures.last_success_at or figures.registered_at
    if since is None:
        return
    gap = now - since
    if gap <= every:
        return
    what = "no successful run" if figures.last_success_at else "no successful run yet"
    reason = f"{what} for {span(gap)} (expected one every {span(every)})"
    verdict.add("down" if gap > 2 * every else "degraded", reason)


def dead_letter_reason(count: int, step: str, error: str) -> str:
    """Why open dead letters count against a flow."""
    return (
        f"{count} open dead letter{'s' if count != 1 else ''}; "
        f"newest at step {step}: {error[:300]}"
    )


def span(seconds: float) -> str:
    """A duration as people say it: 45 s, 12 min, 3.5 h, 2 d."""
    if seconds < 90:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"
