"""The monitor's settings: ``monitor.yaml`` beside the flows, all optional.

::

    checks:
      interval: 5m                # how often every connection is checked
      timeout: 10s                # one check's own timeout
      degraded_after_failures: 1  # failed checks in a row: degraded
      down_after_failures: 3      # failed checks in a row: down
      down_after: 15m             # or failing this long: down (optional)
    window: 1h                    # error rate and latency look this far back
    error_rate: 10%               # above it: degraded (a card's expect wins)
    min_runs: 3                   # fewer runs in the window judge no rate
    alerts:
      throttle: 1h                # one alert per problem per throttle window
      rules:
        - when: {status: down}
          send:
            connection: ops-chat
            action: post
            with: {text: "{{ alert.summary }}"}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import pydantic

from lobflows import errors
from lobflows.spec import loader, models

SUBJECTS = ("flow", "connection", "dead_letter", "secret")
STATUSES = ("healthy", "degraded", "down", "unknown")
# Sent when a rule's send has no `with`: chat connections take `text`.
DEFAULT_MESSAGE = {"text": "{{ alert.summary }}"}


def _duration(value: Any) -> Any:
    return None if value is None else models.parse_duration(value)


Duration = pydantic.BeforeValidator(_duration)


class Model(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(
        frozen=True, extra="forbid", populate_by_name=True
    )


class Checks(Model):
    """The scheduled check of every connection."""

    interval_seconds: float = pydantic.Field(default=300.0, alias="interval")
    timeout_seconds: float = pydantic.Field(default=10.0, alias="timeout")
    degraded_after_failures: int = pydantic.Field(default=1, ge=1)
    down_after_failures: int = pydantic.Field(default=3, ge=1)
    degraded_after_seconds: float | None = pydantic.Field(
        default=None, alias="degraded_after"
    )
    down_after_seconds: float | None = pydantic.Field(default=None, alias="down_after")

    _durations = pydantic.field_validator(
        "interval_seconds",
        "timeout_seconds",
        "degraded_after_seconds",
        "down_after_seconds",
        mode="before",
    )(_duration)

    @pydantic.model_validator(mode="after")
    def _order(self) -> Checks:
        if self.down_after_failures < self.degraded_after_failures:
            raise ValueError(
                "down_after_failures must be at least degraded_after_failures "
                f"(got {self.down_after_failures} < {self.degraded_after_failures})"
            )
        return self


class When(Model):
    """Which problems a rule sends: by subject, name and status."""

    subject: list[Literal["flow", "connection", "dead_letter", "secret"]] = (
        pydantic.Field(default_factory=lambda: ["flow", "connection"])
    )
    name: list[str] | None = None
    status: list[Literal["degraded", "down", "unknown"]] = pydantic.Field(
        default_factory=lambda: ["down"]
    )

    @pydantic.field_validator("subject", "name", "status", mode="before")
    @classmethod
    def _listed(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    def matches(self, subject: str, name: str, status: str) -> bool:
        # Dead letters and overdue secrets are problems whatever the status.
        by_status = subject in ("dead_letter", "secret") or status in self.status
        by_name = self.name is None or name in self.name
        return subject in self.subject and by_name and by_status


class Send(Model):
    """Where an alert goes: a connection's action with a message template."""

    connection: str = pydantic.Field(min_length=1)
    action: str = pydantic.Field(min_length=1)
    with_: dict[str, Any] = pydantic.Field(
        default_factory=lambda: dict(DEFAULT_MESSAGE), alias="with"
    )
    # For the resolved message; the same template when not given.
    resolved_with: dict[str, Any] | None = pydantic.Field(
        default=None, alias="resolved_with"
    )


class Rule(Model):
    when: When = pydantic.Field(default_factory=When)
    send: Send


class Alerts(Model):
    throttle_seconds: float = pydantic.Field(default=3600.0, alias="throttle")
    rules: list[Rule] = pydantic.Field(default_factory=list)

    _durations = pydantic.field_validator("throttle_seconds", mode="before")(_duration)


class MonitorConfig(Model):
    """Everything ``monitor.yaml`` can say; the defaults hold without the file."""

    checks: Checks = pydantic.Field(default_factory=Checks)
    window_seconds: float = pydantic.Field(default=3600.0, alias="window")
    error_rate: float = 0.10
    min_runs: int = pydantic.Field(default=3, ge=1)
    alerts: Alerts = pydantic.Field(default_factory=Alerts)

    _durations = pydantic.field_validator("window_seconds", mode="before")(_duration)

    @pydantic.field_validator("error_rate", mode="before")
    @classmethod
    def _rate(cls, value: Any) -> float:
        return models.parse_rate(value)

    @property
    def tick_seconds(self) -> float:
        """How often the monitor loop wakes: checks due, alerts evaluated."""
        return min(self.checks.interval_seconds, 30.0)


def load(folder: Path) -> MonitorConfig:
    """Read ``monitor.yaml`` from a flows folder; the defaults when there is none."""
    path = folder / loader.MONITOR_FILE
    if not path.exists():
        return MonitorConfig()
    text = path.read_text(encoding="utf-8")
    return parse(text, str(path))


def parse(text: str, path: str) -> MonitorConfig:
    """Validate monitor settings, naming the file, line and field of each problem."""
    document, lines = loader.parse_yaml(text, path)
    if document is None:
        return MonitorConfig()
    if not isinstance(document, dict):
        problem = errors.Problem(
            path=path,
            line=1,
            field="",
            message="expected a mapping with checks, window, error_rate and alerts",
        )
        raise errors.FlowFileError(path, [problem])
    try:
        return MonitorConfig.model_validate(document)
    except pydantic.ValidationError as exc:
        raise errors.FlowFileError(path, _problems(exc, lines, path)) from None


def rule_problems(
    config: MonitorConfig, connections: dict[str, Any], path: str
) -> list[errors.Problem]:
    """Alert rules that send through a connection that is not declared or lacks the action."""
    problems = []
    for i, rule in enumerate(config.alerts.rules):
        field = f"alerts.rules[{i}].send"
        connection = connections.get(rule.send.connection)
        if connection is None:
            known = ", ".join(sorted(connections)) or "none"
            message = f"no connection named {rule.send.connection!r}; declared: {known}"
        elif rule.send.action not in connection.actions:
            known = ", ".join(sorted(connection.actions))
            message = (
                f"connection {rule.send.connection!r} ({connection.kind}) has no "
                f"action {rule.send.action!r}; known: {known}"
            )
        else:
            continue
        problems.append(
            errors.Problem(path=path, line=None, field=field, message=message)
        )
    return problems


def _problems(
    exc: pydantic.ValidationError, lines: dict[Any, int], path: str
) -> list[errors.Problem]:
    problems = []
    for error in exc.errors():
        location = tuple(_field_name(part) for part in error["loc"])
        line = next(
            (
                lines[location[:n]]
                for n in range(len(location), 0, -1)
                if location[:n] in lines
            ),
            None,
        )
        dotted = "".join(
            f"[{p}]" if isinstance(p, int) else (f".{p}" if i else str(p))
            for i, p in enumerate(location)
        )
        problems.append(
            errors.Problem(path=path, line=line, field=dotted, message=_message(error))
        )
    return problems


def _field_name(part: Any) -> Any:
    return {
        "interval_seconds": "interval",
        "timeout_seconds": "timeout",
        "window_seconds": "window",
        "throttle_seconds": "throttle",
        "degraded_after_seconds": "degraded_after",
        "down_after_seconds": "down_after",
        "with_": "with",
    }.get(part, part)


def _message(error: Any) -> str:
    kind, message = error["type"], error["msg"]
    if kind == "missing":
        return "is required but missing"
    if kind == "extra_forbidden":
        return "is not a known field here"
    if kind == "literal_error":
        return message.replace("Input should be", "expected")
    if message.startswith("Value error, "):
        return message[len("Value error, ") :]
    got = error.get("input")
    shown = "" if isinstance(got, (dict, list)) else f" (got {got!r})"
    return message[:1].lower() + message[1:] + shown
