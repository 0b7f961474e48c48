"""The connector SDK: what every connector declares and how the engine calls it.

A connector knows one kind of system. A *connection* is a configured
instance of it (base URL, auth secret, limits), declared once in
``connections.yaml`` and referred to by name from ``call`` steps as
``<connection>.<action>``. Connectors register under the
``lobflows.connectors`` entry-point group; built-ins register the same way.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import pydantic

from lobflows import errors
from lobflows.connectors.limits import Limits
from lobflows.secrets import SecretStore
from lobflows.spec.loader import Project, step_locations, subflow_problems

ENTRY_POINT_GROUP = "lobflows.connectors"


@dataclass(frozen=True)
class CallContext:
    """What a connector knows of the step that calls it."""

    run_id: str
    flow: str
    step: str
    attempt: int
    timeout_seconds: float

    @property
    def idempotency_key(self) -> str:
        """Stable across attempts and replays of the same step of the same run."""
        return f"{self.run_id}-{self.step}"


Action = Callable[[dict[str, Any], CallContext], Awaitable[Any]]


def check_context(timeout_seconds: float) -> CallContext:
    """The context of a connection check: no run, the connection's own timeout."""
    return CallContext(
        run_id="check",
        flow="check",
        step="check",
        attempt=1,
        timeout_seconds=timeout_seconds,
    )


class Settings(pydantic.BaseModel):
    """Base of every connector's connection settings."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")


class NetworkSettings(Settings):
    """Base of the settings of a connection that reaches a server: how long
    to wait for it, and which private networks the address guard lets
    through."""

    timeout_seconds: float = pydantic.Field(
        default=30.0,
        gt=0,
        description="Limit for connecting and each call, in seconds.",
    )
    allow_networks: list[str] = pydantic.Field(
        default_factory=list, description="CIDRs exempt from the address guard."
    )


class Connector:
    """Base class: subclasses set `kind`, `settings_model` and `actions`."""

    kind: ClassVar[str]
    settings_model: ClassVar[type[Settings]]
    # action name -> one-line description; each is implemented as `action_<name>`.
    actions: ClassVar[dict[str, str]]

    def __init__(self, name: str, settings: Settings, secrets: SecretStore) -> None:
        self.name = name
        self.settings = settings
        self.secrets = secrets
        # Concurrency, rate and breaker settings (connections.yaml `limits`).
        self.limits = Limits()

    async def call(
        self, action: str, params: dict[str, Any], context: CallContext
    ) -> Any:
        if action not in self.actions:
            known = ", ".join(sorted(self.actions))
            raise errors.StepInputError(
                f"connection {self.name!r} ({self.kind}) has no action {action!r}; known: {known}"
            )
        method: Action = getattr(self, f"action_{action}")
        return await method(params, context)

    async def check(self) -> str:
        """Reach the system and prove the settings work; raises a ConnectorError
        saying what is wrong. The default says the type has no check."""
        return "no check for this type"

    async def close(self) -> None:
        """Release pooled connections."""


class Translated:
    """A block whose foreign exceptions become ours through `translate`
    (which returns None for what is not the other system's), chained with from."""

    def __init__(
        self,
        translate: Callable[..., errors.ConnectorError | None],
        connection: str,
        doing: str,
    ) -> None:
        self.translate = translate
        self.connection = connection
        self.doing = doing

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is None or isinstance(exc, errors.LobflowsError):
            return
        translated = self.translate(exc, connection=self.connection, doing=self.doing)
        if translated is not None:
            raise translated from exc


def raise_if_cancelled() -> None:
    """Stop the current task if it was cancelled and the cancel got lost.

    On Python 3.11 ``asyncio.wait_for`` returns its result and drops the
    cancel when the awaited call finishes at the same moment; client
    libraries (redis, nats) call it on every command. A consume loop that
    runs until cancelled calls this once per turn so that it still stops.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def parse_params(
    model: type[pydantic.BaseModel], params: dict[str, Any], *, action: str
) -> Any:
    """Validate an action's parameters, naming the field on failure."""
    try:
        return model.model_validate(params)
    except pydantic.ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(input)'}: {e['msg'].lower()}"
            for e in exc.errors()
        )
        raise errors.StepInputError(
            f"action {action} got invalid input: {problems}"
        ) from None


def connector_classes() -> dict[str, type[Connector]]:
    """Every registered connector class, by kind."""
    found: dict[str, type[Connector]] = {}
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        found[entry.name] = entry.load()
    return found


def build_connections(
    declared: dict[str, dict[str, Any]],
    secrets: SecretStore,
    *,
    source: str = "connections.yaml",
) -> dict[str, Connector]:
    """Create a connector per declared connection, validating every setting up front."""
    validated, problems = _validate_settings(declared, source)
    if problems:
        raise errors.FlowFileError(source, problems)
    connections = {}
    for name, (cls, settings) in validated.items():
        connection = cls(name, settings, secrets)
        connection.limits = Limits.model_validate(
            (declared[name] or {}).get("limits") or {}
        )
        connections[name] = connection
    return connections


def check_project(project: Project, *, source: str) -> list[errors.Problem]:
    """Problems a project would meet at run time: bad connection settings, unknown connections or actions."""
    validated, problems = _validate_settings(project.connections, source)
    problems.extend(subflow_problems(project))
    classes = connector_classes()
    for flow in project.flows.values():
        poll = (flow.document.get("trigger") or {}).get("poll")
        calls = [(("trigger", "poll"), poll)] if isinstance(poll, dict) else []
        steps = step_locations(flow.document)
        problems.extend(_role_problems(flow, steps, project.roles))
        for location, task in _task_specs(steps):
            if isinstance(task.get("notify"), dict):
                calls.append(((*location, "task", "notify"), task["notify"]))
        for location, step in steps:
            if isinstance(step.get("undo"), dict):
                calls.append(((*location, "undo"), step["undo"]))
            transform = step.get("transform")
            enrich = transform.get("enrich") if isinstance(transform, dict) else None
            for i, lookup in enumerate(enrich if isinstance(enrich, list) else []):
                if isinstance(lookup, dict):
                    calls.append(((*location, "transform", "enrich", i), lookup))
        for location, step in [*calls, *steps]:
            if not isinstance(step.get("call"), str) or "." not in step["call"]:
                continue
            name, action = step["call"].split(".", 1)
            message = _call_problem(
                name, action, project.connections, classes, validated
            )
            if message:
                line = flow.lines.get((*location, "call"))
                problems.append(
                    errors.Problem(
                        path=flow.path,
                        line=line,
                        field=f"{_dotted_steps(location)}.call",
                        message=message,
                    )
                )
    return problems


def _task_specs(steps: list[Any]) -> list[tuple[Any, dict[str, Any]]]:
    return [
        (location, step["task"])
        for location, step in steps
        if isinstance(step.get("task"), dict)
    ]


def _role_problems(
    flow: Any, steps: list[Any], roles: dict[str, list[str]]
) -> list[errors.Problem]:
    """Task assignees naming a role (not a template) that roles.yaml lacks."""
    problems = []
    for location, task in _task_specs(steps):
        for i, assignee in enumerate(task.get("assignees") or []):
            role = assignee.get("role") if isinstance(assignee, dict) else None
            if not isinstance(role, str) or "{" in role or role in roles:
                continue
            known = ", ".join(sorted(roles)) or "none (no roles.yaml beside the flow)"
            where = (*location, "task", "assignees", i, "role")
            problems.append(
                errors.Problem(
                    path=flow.path,
                    line=flow.lines.get(where),
                    field=_dotted_steps(where),
                    message=f"no role named {role!r}; roles: {known}",
                )
            )
    return problems


def _call_problem(
    name: str,
    action: str,
    declared: dict[str, Any],
    classes: dict[str, type[Connector]],
    validated: dict[str, Any],
) -> str | None:
    if name not in declared:
        known = (
            ", ".join(sorted(declared)) or "none (no connections.yaml beside the flow)"
        )
        return f"no connection named {name!r}; declared: {known}"
    cls = classes.get(str((declared[name] or {}).get("type")))
    if cls is not None and action not in cls.actions:
        return f"connection {name!r} ({cls.kind}) has no action {action!r}; known: {', '.join(sorted(cls.actions))}"
    return None


def _dotted_steps(location: tuple[Any, ...]) -> str:
    return "".join(
        f"[{p}]" if isinstance(p, int) else (f".{p}" if i else str(p))
        for i, p in enumerate(location)
    )


def _validate_settings(
    declared: dict[str, dict[str, Any]], source: str
) -> tuple[dict[str, tuple[type[Connector], Settings]], list[errors.Problem]]:
    classes = connector_classes()
    problems: list[errors.Problem] = []
    validated: dict[str, tuple[type[Connector], Settings]] = {}
    for name, raw in declared.items():
        settings = dict(raw or {})
        kind = settings.pop("type", None)
        try:
            Limits.model_validate(settings.pop("limits", None) or {})
        except pydantic.ValidationError as exc:
            for e in exc.errors():
                field = ".".join(
                    str(p) for p in ("connections", name, "limits", *e["loc"])
                )
                problems.append(
                    errors.Problem(
                        path=source, line=None, field=field, message=e["msg"].lower()
                    )
                )
        cls = classes.get(str(kind))
        if cls is None:
            known = ", ".join(sorted(classes))
            problems.append(
                errors.Problem(
                    path=source,
                    line=None,
                    field=f"connections.{name}.type",
                    message=f"expected one of {known} (got {kind!r})",
                )
            )
            continue
        try:
            validated[name] = (cls, cls.settings_model.model_validate(settings))
        except pydantic.ValidationError as exc:
            for e in exc.errors():
                field = ".".join(str(p) for p in ("connections", name, *e["loc"]))
                problems.append(
                    errors.Problem(
                        path=source, line=None, field=field, message=e["msg"].lower()
                    )
                )
    return validated, problems
