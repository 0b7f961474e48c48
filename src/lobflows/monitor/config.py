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

import jinja2
import pydantic
from jinja2 import meta, nodes

from lobflows import errors
from lobflows.spec import loader, models
from lobflows.transform import templates

SUBJECTS = ("flow", "connection", "dead_letter", "secret")
STATUSES = ("healthy", "degraded", "down", "unknown")
# Sent when a rule's send has no `with`: chat connections take `text`.
DEFAULT_MESSAGE = {"text": "{{ alert.summary }}"}
# What a message template sees of ``alert`` (alerts.alert_context builds it).
ALERT_FIELDS = (
    "state",
    "subject",
    "name",
    "status",
    "was",
    "reasons",
    "reason",
    "since",
    "summary",
)
# Names a message template may use besides `alert`: the sandbox's globals.
TEMPLATE_GLOBALS = frozenset({"alert", "range", "dict", "namespace"})
DAY_SECONDS = 86_400.0
# The longest each duration may be: a typo such as 7000000d is refused
# instead of silently never judging, checking or reminding.
MAXIMUM_SECONDS = {
    "interval_seconds": DAY_SECONDS,
    "timeout_seconds": 600.0,
    "degraded_after_seconds": 30 * DAY_SECONDS,
    "down_after_seconds": 30 * DAY_SECONDS,
    "window_seconds": 30 * DAY_SECONDS,
    "throttle_seconds": 30 * DAY_SECONDS,
}


def _duration(value: Any, info: pydantic.ValidationInfo) -> Any:
    if value is None:
        return None
    most = MAXIMUM_SECONDS[str(info.field_name)]
    return models.parse_duration(value, maximum_seconds=most)


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
    # The line of every key of the file, for problems found after parsing.
    _lines: dict[loader.Location, int] = pydantic.PrivateAttr(default_factory=dict)

    _durations = pydantic.field_validator("window_seconds", mode="before")(_duration)

    @pydantic.field_validator("error_rate", mode="before")
    @classmethod
    def _rate(cls, value: Any) -> float:
        return models.parse_rate(value)

    @property
    def tick_seconds(self) -> float:
        """How often the monitor loop wakes: checks due, alerts evaluated."""
        return min(self.checks.interval_seconds, 30.0)

    def line_of(self, location: loader.Location) -> int | None:
        """The file's line of a key, or of the nearest enclosing one."""
        for n in range(len(location), 0, -1):
            if location[:n] in self._lines:
                return self._lines[location[:n]]
        return None


def load(folder: Path) -> MonitorConfig:
    """Read ``monitor.yaml`` from a flows folder; the defaults when there is none."""
    path = folder / loader.MONITOR_FILE
    if not path.exists():
        return MonitorConfig()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or "not UTF-8 text"
        problem = errors.Problem(
            path=str(path), line=None, field="", message=f"cannot read: {reason}"
        )
        raise errors.FlowFileError(str(path), [problem]) from None
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
        config = MonitorConfig.model_validate(document)
    except pydantic.ValidationError as exc:
        raise errors.FlowFileError(path, _problems(exc, lines, path)) from None
    config._lines = lines
    problems = template_problems(config, path)
    if problems:
        raise errors.FlowFileError(path, problems)
    return config


def rule_problems(
    config: MonitorConfig, connections: dict[str, Any], path: str
) -> list[errors.Problem]:
    """Alert rules that send through a connection that is not declared or lacks the action.

    `connections` maps each declared name to its connector (or connector
    class); None for a type that is not known, whose actions are not checked.
    """
    problems = []
    for i, rule in enumerate(config.alerts.rules):
        send = rule.send
        where: tuple[str | int, ...] = ("alerts", "rules", i, "send")
        if send.connection not in connections:
            known = ", ".join(sorted(connections)) or "none"
            message = f"no connection named {send.connection!r}; declared: {known}"
            where = (*where, "connection")
        elif (found := connections[send.connection]) is not None and (
            send.action not in found.actions
        ):
            known = ", ".join(sorted(found.actions))
            message = (
                f"connection {send.connection!r} ({found.kind}) has no "
                f"action {send.action!r}; known: {known}"
            )
            where = (*where, "action")
        else:
            continue
        problems.append(
            errors.Problem(
                path=path,
                line=config.line_of(where),
                field=_dotted(where),
                message=message,
            )
        )
    return problems


def template_problems(config: MonitorConfig, path: str) -> list[errors.Problem]:
    """Message templates that would fail at every send: bad syntax, unknown names.

    They are compiled by the same sandbox that renders them when an alert
    goes out, so a template accepted here does not fail for its syntax later.
    """
    problems = []
    for i, rule in enumerate(config.alerts.rules):
        for key in ("with", "resolved_with"):
            where = ("alerts", "rules", i, "send", key)
            value = rule.send.with_ if key == "with" else rule.send.resolved_with
            for location, text in _template_strings(value, where):
                message = _template_problem(text)
                if message is None:
                    continue
                problems.append(
                    errors.Problem(
                        path=path,
                        line=config.line_of(location),
                        field=_dotted(location),
                        message=message,
                    )
                )
    return problems


def _template_strings(
    value: Any, location: loader.Location
) -> list[tuple[loader.Location, str]]:
    if isinstance(value, str):
        return [(location, value)] if templates.is_template(value) else []
    if isinstance(value, dict):
        items: list[tuple[Any, Any]] = list(value.items())
    elif isinstance(value, list):
        items = list(enumerate(value))
    else:
        return []
    return [found for k, v in items for found in _template_strings(v, (*location, k))]


def _template_problem(text: str) -> str | None:
    try:
        templates.compile_template(text)
    except errors.TemplateError as exc:
        return str(exc)
    # Compiled above, so the syntax is sound; only the names are looked at.
    parsed = jinja2.Environment().parse(text)
    unknown = sorted(meta.find_undeclared_variables(parsed) - TEMPLATE_GLOBALS)
    if unknown:
        return (
            f"template {text!r} uses {unknown[0]!r}, which is not defined; "
            "message templates see alert"
        )
    for node in parsed.find_all(nodes.Getattr):
        is_alert = isinstance(node.node, nodes.Name) and node.node.name == "alert"
        if is_alert and node.attr not in ALERT_FIELDS:
            return (
                f"template {text!r}: alert has no field {node.attr!r}; "
                f"known: {', '.join(ALERT_FIELDS)}"
            )
    return None


def _dotted(location: tuple[Any, ...]) -> str:
    return "".join(
        f"[{p}]" if isinstance(p, int) else (f".{p}" if i else str(p))
        for i, p in enumerate(location)
    )


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
        problems.append(
            errors.Problem(
                path=path,
                line=line,
                field=_dotted(location),
                message=loader.validation_message(error),
            )
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
