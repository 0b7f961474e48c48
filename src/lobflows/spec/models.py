"""The models of a flow file: card, trigger, steps and their policies.

A flow reads top to bottom: its card (the answers to "what, from where, to
where, what if it fails, who owns it"), the trigger that starts it, and the
steps it runs. Everything is parsed once, at load, into frozen models.
"""

from __future__ import annotations

import datetime
import math
import re
import zoneinfo
from typing import Annotated, Any, Literal

import cronsim
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]*$"
STEP_KINDS = (
    "map",
    "call",
    "if",
    "switch",
    "respond",
    "sleep",
    "wait",
    "subflow",
    "emit",
    "foreach",
    "parallel",
    "task",
    "transform",
    "validate",
)
# Steps that may run inside parallel branches: ones that finish in one pass.
BRANCH_STEP_KINDS = ("map", "call", "if", "switch", "emit", "transform", "validate")
# The journal entry that starts a run's undo phase; undo calls are "undo.<step>".
COMPENSATION_STEP = "compensation"
# First path segments the server keeps for itself (REST API, task pages).
RESERVED_PATHS = ("api", "tasks")
TRIGGER_KINDS = ("webhook", "schedule", "event", "poll", "manual")


class Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class CardData(Model):
    """What data the flow moves."""

    entity: str = Field(
        min_length=1, description="What the records are, e.g. employee."
    )
    sensitivity: Literal["public", "internal", "confidential", "pii", "secret"] = Field(
        description="How sensitive the data is; pii and secret data is masked in views."
    )
    volume: str | None = Field(
        default=None, description="Expected volume, e.g. ~20/day."
    )


class Card(Model):
    """The answers every integration must give before it may run."""

    trigger: str = Field(min_length=1, description="What starts a run, in words.")
    data: CardData
    transform: str = Field(
        min_length=1, description="How the data is changed on the way."
    )
    target: str = Field(min_length=1, description="Which systems receive the data.")
    on_failure: str = Field(
        min_length=1, description="Retry, dead letter and alert policy."
    )
    owner: str = Field(
        min_length=1, description="Who maintains the flow (a team address)."
    )
    expect: Expectations | None = Field(
        default=None,
        description="What healthy looks like: latency, every, error_rate, backlog.",
    )


# The longest latency or gap between successes a card may expect: a year.
MAX_EXPECT_SECONDS = 366 * 86_400.0


class Expectations(Model):
    """What a healthy flow does; the monitor compares its runs against it."""

    latency: float | None = Field(
        default=None,
        description="Longest p95 run duration, e.g. 30s; slower is degraded.",
    )
    every: float | None = Field(
        default=None,
        description="Largest gap between successful runs, e.g. 1d; "
        "past it the flow is degraded, past twice it down.",
    )
    error_rate: float | None = Field(
        default=None,
        description="Highest share of failed runs over the monitor's window, "
        "e.g. 5%; above it the flow is degraded.",
    )
    backlog: int | None = Field(
        default=None,
        ge=0,
        description="Most runs due but not yet taken by a worker; more is degraded.",
    )

    @field_validator("latency", "every", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float | None:
        if value is None:
            return None
        return parse_duration(value, maximum_seconds=MAX_EXPECT_SECONDS)

    @field_validator("error_rate", mode="before")
    @classmethod
    def _rate(cls, value: Any) -> float | None:
        return None if value is None else parse_rate(value)


class Signature(Model):
    """HMAC-SHA256 signature check of a webhook body."""

    secret: str = Field(description="Name of the secret holding the shared key.")
    header: str = Field(
        default="X-Signature-256", description="Header carrying the signature."
    )
    prefix: str = Field(default="sha256=", description="Text before the digest.")
    encoding: Literal["hex", "base64"] = Field(
        default="hex",
        description="How the digest is written: hex, or base64 (ERPNext webhooks).",
    )


class WebhookTrigger(Model):
    """An HTTP POST to a path starts a run."""

    path: str = Field(
        pattern=r"^/[A-Za-z0-9/_.-]*$", description="URL path, e.g. /hooks/hire."
    )
    signature: Signature | None = None
    dedupe: str | None = Field(
        default=None,
        description="Template over `body` and `headers`; one run per distinct value.",
    )
    max_body_bytes: int = Field(
        default=1_048_576, gt=0, description="Larger bodies get 413."
    )
    mode: Literal["async", "sync"] = Field(
        default="async",
        description="async answers 202 once stored; sync waits for the respond step.",
    )
    sync_timeout_seconds: float = Field(default=10.0, gt=0, le=300)

    @field_validator("path")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        clean = value.rstrip("/") or "/"
        if clean == "/healthz" or clean.split("/")[1] in RESERVED_PATHS:
            raise ValueError(
                f"{value!r} is served by LoB Flows itself; choose a path outside "
                "/api, /tasks and /healthz, e.g. /hooks/..."
            )
        return value


class ScheduleTrigger(Model):
    """A calendar starts runs: a cron expression read in an IANA time zone.

    A local time that does not exist (the hour skipped in spring) runs once,
    at the first minute after the gap; a local time that occurs twice (the
    hour repeated in autumn) runs once, at its first occurrence. Expressions
    with a wildcard hour follow elapsed time instead, like cron.
    """

    cron: str = Field(
        description="Five fields: minute hour day-of-month month day-of-week."
    )
    timezone: str = Field(default="UTC", description="IANA zone, e.g. Europe/Berlin.")
    missed: Literal["skip", "catch_up"] = Field(
        default="skip",
        description="Runs due while no worker was up: skip them, or start them late.",
    )
    max_catch_up: int = Field(
        default=10, ge=1, le=1000, description="At most this many late runs."
    )
    input: dict[str, Any] = Field(
        default_factory=dict, description="Input of every run."
    )

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        try:
            cronsim.CronSim(value, datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC))
        except cronsim.CronSimError as exc:
            raise ValueError(
                f"{value!r} is not a valid cron expression: {exc}"
            ) from None
        if len(value.split()) != 5:
            raise ValueError(
                f"{value!r}: expected five fields (minute hour day month weekday)"
            )
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"{value!r} is not an IANA time zone, e.g. Europe/Berlin"
            ) from None
        return value


class EventTrigger(Model):
    """An event on a topic starts a run: from an emit step, or from a queue of
    a broker connection, each message of which becomes an event on the topic."""

    topic: str = Field(
        pattern=r"^[A-Za-z0-9_.*-]+$",
        description="Topic, or a pattern with * for one dot-separated part, e.g. hr.*.created.",
    )
    connection: str | None = Field(
        default=None,
        pattern=NAME_PATTERN,
        description="Broker connection whose queue this flow consumes; none by default.",
    )
    queue: str | None = Field(
        default=None,
        min_length=1,
        description="Queue to consume; required with connection.",
    )

    @model_validator(mode="after")
    def _queue_with_connection(self) -> EventTrigger:
        if self.connection is None and self.queue is not None:
            raise ValueError(
                "queue needs connection: the broker connection to read it from"
            )
        if self.connection is None:
            return self
        if self.queue is None:
            raise ValueError(
                f"connection {self.connection!r} needs queue: the queue to consume"
            )
        if "*" in self.topic:
            raise ValueError(
                f"a consumed queue needs a plain topic to name its events (got {self.topic!r})"
            )
        return self


class PollTrigger(Model):
    """Every interval, call an action and start one run per new item.

    The call's parameters may use ``watermark`` (the last one stored, or
    ``start`` the first time); each item's ``id`` is its run's dedupe key, so
    an item never starts two runs, across restarts too.
    """

    every_seconds: float = Field(ge=1, description="Seconds between polls.")
    call: str = Field(
        pattern=r"^[a-z0-9_-]+\.[a-z0-9_]+$", description="connection.action"
    )
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    items: str = Field(description="Template over `result` giving the list of items.")
    id: str = Field(description="Template over `item` giving its identity.")
    watermark: str | None = Field(
        default=None,
        description="Template over `item`; the largest becomes the next watermark.",
    )
    start: Any = Field(default=None, description="Watermark of the first poll.")


class Trigger(Model):
    """What starts a run. Every flow can also be started by hand."""

    webhook: WebhookTrigger | None = None
    schedule: ScheduleTrigger | None = None
    event: EventTrigger | None = None
    poll: PollTrigger | None = None
    manual: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Trigger:
        kinds = [k for k in TRIGGER_KINDS if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError("expected exactly one of: " + ", ".join(TRIGGER_KINDS))
        return self


class RetryPolicy(Model):
    """How often and how patiently a failing step is tried again."""

    max_attempts: int = Field(
        default=5, ge=1, le=100, description="Tries in all, the first included."
    )
    initial_delay_seconds: float = Field(
        default=1.0, ge=0, description="Delay cap of the first retry."
    )
    max_delay_seconds: float = Field(
        default=300.0, ge=0, description="No delay is longer."
    )
    multiplier: float = Field(
        default=2.0, ge=1, description="Growth of the delay cap per retry."
    )


class FieldRule(Model):
    """One target field of a mapping: where it comes from and how gaps are handled."""

    value: str | None = Field(default=None, description="Template producing the value.")
    from_: str | None = Field(
        default=None, alias="from", description="Dotted path into the run data."
    )
    on_missing: Literal["error", "skip", "null", "default"] = Field(
        default="error", description="When the source is absent."
    )
    on_null: Literal["keep", "null", "error", "skip", "default"] = Field(
        default="keep", description="When the source is present but null or empty."
    )
    default: Any = Field(default=None, description="Used by the default policies.")
    convert: list[str | dict[str, Any]] = Field(
        default_factory=list,
        description="Converters applied in order, e.g. [trim, {date: {format: '%d/%m/%Y'}}].",
    )

    @field_validator("on_missing", "on_null", mode="before")
    @classmethod
    def _yaml_null(cls, value: Any) -> Any:
        # `on_missing: null` in YAML arrives as None; it means the policy "null".
        return "null" if value is None else value

    @field_validator("convert")
    @classmethod
    def _converters(cls, value: list[Any]) -> list[Any]:
        from lobflows.transform import converters

        converters.parse_chain(value)
        return value

    @model_validator(mode="after")
    def _one_source(self) -> FieldRule:
        if (self.value is None) == (self.from_ is None):
            raise ValueError("expected exactly one of: value, from")
        return self


class StepBase(Model):
    id: str | None = Field(
        default=None, pattern=NAME_PATTERN, description="Unique step name."
    )
    description: str | None = None


class MapStep(StepBase):
    """Builds a new record, field by field."""

    # A field is a template, a rule, or a constant (number, true/false, null).
    map: dict[str, str | FieldRule | bool | int | float | None] = Field(min_length=1)


class Undo(Model):
    """The call that undoes a step's effect, e.g. cancelling what it created.

    Its templates see the run data, the undone step's output included.
    """

    call: str = Field(
        pattern=r"^[a-z0-9_-]+\.[a-z0-9_]+$", description="connection.action"
    )
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    retry: RetryPolicy | None = None


class CallStep(StepBase):
    """Calls an action of a connection."""

    call: str = Field(
        pattern=r"^[a-z0-9_-]+\.[a-z0-9_]+$", description="connection.action"
    )
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    retry: RetryPolicy | None = None
    timeout_seconds: float = Field(default=30.0, gt=0, le=3600)
    undo: Undo | None = Field(
        default=None,
        description="Undoes this call when a later step fails for good (a saga).",
    )


class IfStep(StepBase):
    """Runs `then` when a condition holds, else `else`."""

    if_: str = Field(alias="if", description="Condition, e.g. input.manager is defined")
    then: list[Step] = Field(default_factory=list)
    else_: list[Step] = Field(default_factory=list, alias="else")


class SwitchStep(StepBase):
    """Runs the steps of the case whose key equals the value."""

    switch: str = Field(description="Expression whose value picks the case.")
    cases: dict[str, list[Step]] = Field(min_length=1)
    default: list[Step] = Field(default_factory=list)


class Response(Model):
    status: int | str = Field(
        default=200, description="HTTP status, or a template giving one."
    )
    body: Any = None
    headers: dict[str, str] = Field(default_factory=dict)


class RespondStep(StepBase):
    """Sets the reply a synchronous webhook caller receives."""

    respond: Response


class Sleep(Model):
    seconds: float | None = Field(default=None, ge=0, description="How long to sleep.")
    until: str | None = Field(
        default=None, description="Template giving an ISO 8601 time with offset."
    )

    @model_validator(mode="after")
    def _one(self) -> Sleep:
        if (self.seconds is None) == (self.until is None):
            raise ValueError("expected exactly one of: seconds, until")
        return self


class SleepStep(StepBase):
    """Pauses the run; it holds no worker while it sleeps, only a stored due time."""

    sleep: Sleep


class Wait(Model):
    signal: str | None = Field(
        default=None,
        pattern=NAME_PATTERN,
        description="Name of the signal to wait for.",
    )
    event: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="Topic of the event to wait for; `key` picks this run's.",
    )
    key: str | None = Field(
        default=None,
        description="Template giving the correlation key, e.g. {{ steps.order.name }}.",
    )
    timeout_seconds: float | None = Field(
        default=None, gt=0, description="Give up after this long."
    )
    on_timeout: Literal["fail", "continue"] = Field(
        default="fail",
        description="fail: dead letter; continue: go on with timed_out set in the output.",
    )

    @model_validator(mode="after")
    def _one(self) -> Wait:
        if (self.signal is None) == (self.event is None):
            raise ValueError("expected exactly one of: signal, event")
        if (self.event is None) != (self.key is None):
            raise ValueError(
                "an event wait needs a key, and only an event wait has one"
            )
        return self

    @property
    def signal_name(self) -> str:
        """The signal that ends the wait: named, or the event's."""
        return self.signal if self.signal is not None else f"event:{self.event}"


class WaitStep(StepBase):
    """Waits for a named signal sent to the run (REST API or ``lobflows signal``),
    or for an event whose key matches (from an emit step or a broker)."""

    wait: Wait


class Subflow(Model):
    flow: str = Field(pattern=NAME_PATTERN, description="The flow to run.")
    input: Any = Field(default=None, description="Its input; templates are rendered.")


class SubflowStep(StepBase):
    """Runs another flow and waits for its result (its respond body)."""

    subflow: Subflow


class Foreach(Model):
    items: str = Field(description="Template giving the list, e.g. {{ input.lines }}.")
    flow: str = Field(
        pattern=NAME_PATTERN, description="Flow each item (or batch) runs."
    )
    batch_size: int = Field(
        default=1, ge=1, le=10_000, description="Items per child run."
    )
    concurrency: int = Field(
        default=10, ge=1, le=1000, description="Child runs in flight."
    )


class ForeachStep(StepBase):
    """Runs a flow per item (or batch): each a child run, failures parked one by one."""

    foreach: Foreach


class ParallelStep(StepBase):
    """Runs its branches at the same time and goes on when the join is met.

    ``join`` is ``all`` (every branch), ``any`` (the first to finish) or a
    number N (the first N); branches still running then are stopped. A branch
    that fails for good fails the run (``on_branch_failure: fail``), or is
    noted in the step's output and the others go on (``collect``).
    """

    parallel: dict[str, list[Step]] = Field(
        min_length=2, description="Branch name to steps."
    )
    join: Literal["all", "any"] | Annotated[int, Field(ge=1)] = Field(
        default="all", description="all, any, or the number of branches to wait for."
    )
    on_branch_failure: Literal["fail", "collect"] = Field(
        default="fail",
        description="fail: the run fails; collect: noted in the output, the others go on.",
    )

    @model_validator(mode="after")
    def _join_fits(self) -> ParallelStep:
        if isinstance(self.join, int) and self.join > len(self.parallel):
            raise ValueError(
                f"join {self.join} is more than the {len(self.parallel)} branches"
            )
        return self

    def needed(self) -> int:
        """How many branches must succeed before the run goes on."""
        if self.join == "all":
            return len(self.parallel)
        return 1 if self.join == "any" else int(self.join)

    @field_validator("parallel")
    @classmethod
    def _branch_steps(cls, branches: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for name, steps in branches.items():
            for step in walk_steps(steps):
                kind = step_kind(step)
                if kind not in BRANCH_STEP_KINDS:
                    allowed = ", ".join(BRANCH_STEP_KINDS)
                    raise ValueError(
                        f"branch {name!r}: a {kind} step cannot run in a parallel branch yet; allowed: {allowed}"
                    )
        return branches


DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
DURATION_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")


def parse_duration(value: Any, *, maximum_seconds: float | None = None) -> float:
    """Seconds of a duration: a number of seconds, or text such as 90s, 30m, 4h, 3d, 1w.

    Raises ValueError when it is not a duration, not above zero, not finite,
    or longer than `maximum_seconds` (when given).
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, int | float):
        # An int too large for a float is as absurd as infinity.
        seconds = float(value) if abs(value) < 1e300 else math.inf
    else:
        match = DURATION_PATTERN.match(str(value))
        if match is None:
            raise ValueError(
                f"{value!r} is not a duration; expected seconds or a number with s, m, h, d or w, e.g. 3d"
            )
        seconds = float(match[1]) * DURATION_UNITS[match[2] or "s"]
    if seconds <= 0:
        raise ValueError(f"{value!r}: a duration must be longer than zero")
    shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
    if maximum_seconds is not None and seconds > maximum_seconds:
        most = duration_text(maximum_seconds)
        raise ValueError(f"{shown} is too long; expected at most {most}")
    if math.isinf(seconds):
        raise ValueError(f"{shown} is too long to be a duration")
    return seconds


def duration_text(seconds: float) -> str:
    """A duration in its largest whole unit, as written in files: 30d, 10m, 45s."""
    for unit in ("w", "d", "h", "m"):
        size = DURATION_UNITS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def parse_rate(value: Any) -> float:
    """A share between 0 and 1: a fraction such as 0.05, or a percentage such as 5%."""
    text = str(value).strip()
    is_percent = text.endswith("%")
    try:
        if isinstance(value, bool):
            raise ValueError
        number = float(text[:-1] if is_percent else text)
    except ValueError:
        raise ValueError(
            f"{value!r} is not a rate; expected a percentage such as 5% or a fraction such as 0.05"
        ) from None
    rate = number / 100 if is_percent else number
    if not 0 <= rate <= 1:
        raise ValueError(f"{value!r} is out of range; expected 0% to 100% (or 0 to 1)")
    return rate


def _duration_or_template(value: Any) -> Any:
    if value is None or (isinstance(value, str) and "{" in value):
        return value
    parse_duration(value)
    return value


class Assignee(Model):
    """Who may act on a task: a user, or the members of a role."""

    user: str | None = Field(
        default=None,
        description="A user id (an email address), or a template giving one, e.g. {{ input.manager }}.",
    )
    role: str | None = Field(
        default=None,
        description="A role of roles.yaml, or a template giving its name.",
    )
    pick: Literal["all", "round_robin"] = Field(
        default="all",
        description="all: every member; round_robin: one member, in turn across runs.",
    )

    @model_validator(mode="after")
    def _one(self) -> Assignee:
        if (self.user is None) == (self.role is None):
            raise ValueError("expected exactly one of: user, role")
        if self.user is not None and self.pick != "all":
            raise ValueError("pick applies to a role, not to a user")
        return self


class FormField(Model):
    """A field the person deciding a task fills in."""

    name: str = Field(pattern=NAME_PATTERN)
    label: str | None = None
    type: Literal["text", "number", "boolean", "date", "choice"] = "text"
    required: bool = False
    choices: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _choices(self) -> FormField:
        if (self.type == "choice") != bool(self.choices):
            raise ValueError("choices are given exactly when the type is choice")
        return self


class Notify(Model):
    """The call that tells each assignee of a task, and reminds them.

    Its `with` templates see the run data and ``task``: id, title, assignee,
    due_at, reminder (true on reminders) and links (open, approve, reject:
    signed one-click links for that assignee).
    """

    call: str = Field(
        pattern=r"^[a-z0-9_-]+\.[a-z0-9_]+$", description="connection.action"
    )
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")


class Task(Model):
    kind: Literal["approval", "review"] = Field(
        default="approval",
        description="approval: approve or reject; review: complete the form.",
    )
    title: str = Field(min_length=1, description="Template; what is asked.")
    description: str | None = Field(default=None, description="Template.")
    assignees: list[Assignee] = Field(min_length=1)
    required: int = Field(
        default=1, ge=1, le=100, description="Approvals needed (N of the M assignees)."
    )
    requester: str | None = Field(
        default=None,
        description="Template giving who asked; they may not approve their own request.",
    )
    form: list[FormField] = Field(default_factory=list)
    due_in: float | str | None = Field(
        default=None,
        description="Deadline after creation: seconds, 3d, 4h, or a template giving one.",
    )
    remind_before: list[float | str] = Field(
        default_factory=list,
        description="Remind the assignees this long before the deadline, e.g. [1d].",
    )
    notify: Notify | None = None

    @field_validator("due_in")
    @classmethod
    def _due_in(cls, value: Any) -> Any:
        return _duration_or_template(value)

    @field_validator("remind_before")
    @classmethod
    def _reminders(cls, values: list[Any]) -> list[Any]:
        for value in values:
            parse_duration(value)
        return values

    @model_validator(mode="after")
    def _consistent(self) -> Task:
        if self.remind_before and self.due_in is None:
            raise ValueError("remind_before needs a due_in deadline")
        if self.kind == "review" and self.required != 1:
            raise ValueError(
                "a review is completed by one person; required applies to approvals"
            )
        return self


class TaskStep(StepBase):
    """Waits for people: an approval (N of M) or a review form, with a deadline.

    The run parks as a row until the task is decided. Its output has
    ``outcome`` (approved, rejected, completed or timed_out), ``decisions``
    and ``data`` (the form). When the deadline passes, the task closes as
    timed_out and the ``escalate`` steps run.
    """

    task: Task
    escalate: list[Step] = Field(
        default_factory=list, description="Steps run when the deadline passes."
    )


class Enrich(Model):
    """A field added to each mapped record from a connector's answer, cached."""

    field: str = Field(pattern=NAME_PATTERN, description="The field to add.")
    call: str = Field(
        pattern=r"^[a-z0-9_-]+\.[a-z0-9_]+$", description="connection.action"
    )
    with_: dict[str, Any] = Field(
        default_factory=dict,
        alias="with",
        description="Parameters; templates see `record`, the mapped record.",
    )
    value: str = Field(
        default="{{ result }}",
        description="Template over `result` (the answer) and `record` giving the value.",
    )
    cache_seconds: float = Field(
        default=300, ge=0, description="Answers are reused for this long; 0: never."
    )


class Transform(Model):
    mapping: str = Field(
        pattern=NAME_PATTERN,
        description="A mapping of mappings/*.yaml beside the flows.",
    )
    input: Any = Field(
        default="{{ input }}",
        description="Template giving the record, or a list of records.",
    )
    on_reject: Literal["fail", "skip"] = Field(
        default="fail",
        description="A list with records that cannot be mapped: fail the step, or skip them and list them.",
    )
    enrich: list[Enrich] = Field(
        default_factory=list,
        description="Fields looked up through a connector for each mapped record.",
    )


class TransformStep(StepBase):
    """Maps a record (or a list of records) with a named mapping.

    The output is the mapped record, or for a list ``{records, rejected,
    dropped}``. Which rule made each field is kept in the run's journal
    (``lobflows runs show --mapping``).
    """

    transform: Transform


class Validate(Model):
    data: Any = Field(description="Template giving the data to check.")
    schema_: dict[str, Any] = Field(
        alias="schema", description="A JSON Schema (2020-12) the data must satisfy."
    )

    @field_validator("schema_")
    @classmethod
    def _valid_schema(cls, value: dict[str, Any]) -> dict[str, Any]:
        from lobflows.transform import validation

        message = validation.schema_problem(value)
        if message:
            raise ValueError(message)
        return value


class ValidateStep(StepBase):
    """Checks data against a JSON Schema before it leaves; every problem is named.

    Values are masked in the error when the flow's card says the data is pii,
    secret or confidential. The output is the data, unchanged.
    """

    validate_: Validate = Field(alias="validate")


class Emit(Model):
    topic: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="Topic of the event.")
    data: Any = Field(
        default=None, description="The event's data; templates are rendered."
    )
    key: str | None = Field(
        default=None,
        description="Template giving the correlation key: runs waiting for this topic and key go on.",
    )


class EmitStep(StepBase):
    """Publishes an event: every flow whose event trigger matches starts a run."""

    emit: Emit


def _step_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        for kind in STEP_KINDS:
            if kind in value:
                return kind
        return None
    if isinstance(value, StepBase):
        return _KIND_OF_CLASS[type(value)]
    return None


Step = Annotated[
    Annotated[MapStep, Tag("map")]
    | Annotated[CallStep, Tag("call")]
    | Annotated[IfStep, Tag("if")]
    | Annotated[SwitchStep, Tag("switch")]
    | Annotated[RespondStep, Tag("respond")]
    | Annotated[SleepStep, Tag("sleep")]
    | Annotated[WaitStep, Tag("wait")]
    | Annotated[SubflowStep, Tag("subflow")]
    | Annotated[EmitStep, Tag("emit")]
    | Annotated[ForeachStep, Tag("foreach")]
    | Annotated[ParallelStep, Tag("parallel")]
    | Annotated[TaskStep, Tag("task")]
    | Annotated[TransformStep, Tag("transform")]
    | Annotated[ValidateStep, Tag("validate")],
    Discriminator(
        _step_kind,
        custom_error_type="step_kind",
        custom_error_message="expected a step with one of: " + ", ".join(STEP_KINDS),
    ),
]

_KIND_OF_CLASS: dict[type, str] = {
    MapStep: "map",
    CallStep: "call",
    IfStep: "if",
    SwitchStep: "switch",
    RespondStep: "respond",
    SleepStep: "sleep",
    WaitStep: "wait",
    SubflowStep: "subflow",
    EmitStep: "emit",
    ForeachStep: "foreach",
    ParallelStep: "parallel",
    TaskStep: "task",
    TransformStep: "transform",
    ValidateStep: "validate",
}


class Flow(Model):
    """A named flow: card, trigger and steps."""

    flow: str = Field(pattern=NAME_PATTERN, description="The flow's name.")
    version: int | None = Field(
        default=None, ge=1, description="Author's version label."
    )
    description: str | None = None
    card: Card
    trigger: Trigger
    steps: list[Step] = Field(min_length=1)
    retry: RetryPolicy = Field(
        default_factory=RetryPolicy, description="Default for call steps."
    )
    retention_days: float = Field(
        default=30, gt=0, description="Finished runs are pruned after."
    )

    @field_validator("steps")
    @classmethod
    def _unique_ids(cls, steps: list[Any]) -> list[Any]:
        seen: set[str] = set()
        for step in walk_steps(steps):
            if step.id is None:
                continue
            if step.id in seen:
                raise ValueError(f"step id {step.id!r} is used twice")
            if step.id == COMPENSATION_STEP:
                raise ValueError(
                    f"step id {COMPENSATION_STEP!r} is kept for the run's undo phase"
                )
            seen.add(step.id)
        return steps


def step_kind(step: StepBase) -> str:
    """The kind of a step, e.g. map, call or task."""
    return _KIND_OF_CLASS[type(step)]


def child_blocks(step: StepBase) -> list[tuple[str, list[Any]]]:
    """The nested step lists of a branching step, named by branch."""
    if isinstance(step, IfStep):
        return [("then", step.then), ("else", step.else_)]
    if isinstance(step, SwitchStep):
        blocks = [(f"case:{key}", steps) for key, steps in step.cases.items()]
        return [*blocks, ("default", step.default)]
    if isinstance(step, ParallelStep):
        return [(f"branch:{name}", steps) for name, steps in step.parallel.items()]
    if isinstance(step, TaskStep):
        return [("escalate", step.escalate)]
    return []


def walk_steps(steps: list[Any]) -> list[Any]:
    """Every step, nested ones included, in document order."""
    found: list[Any] = []
    for step in steps:
        found.append(step)
        for _, block in child_blocks(step):
            found.extend(walk_steps(block))
    return found


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


Card.model_rebuild()
IfStep.model_rebuild()
ParallelStep.model_rebuild()
TaskStep.model_rebuild()
SwitchStep.model_rebuild()
Flow.model_rebuild()
