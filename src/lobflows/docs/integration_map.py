"""The integration map: which systems talk to which, through which flows.

Systems are what a flow is started by (a webhook path, a schedule, an event
topic, a polled connection, a person) and what it reaches (the connections
its calls use, the topics it emits, the flows it runs). Each flow links
every system it is started by to every system it reaches; links between the
same two systems are merged and labelled with all their flows. An event
topic sits between the flow that emits it and the flows it starts or
resumes, so events between flows read as two hops through the topic.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from lobflows.docs import markdown
from lobflows.engine import events
from lobflows.spec import models

# Readable names of the built-in connector types; others show their type.
CONNECTOR_NAMES = {
    "erpnext": "ERPNext",
    "smtp": "SMTP",
    "slack_webhook": "Slack webhook",
    "http": "HTTP",
}
# Order of kinds in listings and drawings: where data enters, then reaches.
SYSTEM_KINDS = (
    "webhook",
    "schedule",
    "manual",
    "event",
    "flow",
    "connection",
    "none",
)


@dataclass(frozen=True)
class System:
    """One node of the map: a system, a topic or an entry point."""

    key: str
    label: str
    kind: str


@dataclass(frozen=True)
class Link:
    """Data moving from one system to another through one or more flows."""

    source: System
    target: System
    flows: tuple[str, ...]

    @property
    def label(self) -> str:
        return ", ".join(self.flows)


@dataclass(frozen=True)
class IntegrationMap:
    """Every system and every link between them, in a stable order."""

    systems: tuple[System, ...]
    links: tuple[Link, ...]

    def links_from(self, system: System) -> list[Link]:
        return [link for link in self.links if link.source == system]

    def links_to(self, system: System) -> list[Link]:
        return [link for link in self.links if link.target == system]


NO_SYSTEM = System("none", "no other system", "none")
MANUAL = System("manual", "started by hand", "manual")

FlowWithConnections = tuple[models.Flow, Mapping[str, Mapping[str, Any]]]


def integration_map(flows: Iterable[FlowWithConnections]) -> IntegrationMap:
    """The map of the given flows, each with its folder's connections."""
    flows = list(flows)
    emitted = sorted({t for flow, _ in flows for t in emitted_topics(flow)})
    started = {name for flow, _ in flows for name in started_flows(flow)}
    systems: dict[str, System] = {}
    linked: dict[tuple[str, str], list[str]] = {}

    for flow, connections in flows:
        sources = _sources(flow, connections, emitted, started)
        targets = _targets(flow, connections) or [NO_SYSTEM]
        for system in sources:
            systems.setdefault(system.key, system)
        for source in sources:
            for target in targets:
                if source.key == target.key:
                    continue
                systems.setdefault(target.key, target)
                linked.setdefault((source.key, target.key), []).append(flow.flow)

    ordered = sorted(systems.values(), key=_system_order)
    position = {system.key: i for i, system in enumerate(ordered)}
    links = [
        Link(systems[a], systems[b], tuple(dict.fromkeys(names)))
        for (a, b), names in linked.items()
    ]
    links.sort(key=lambda link: (position[link.source.key], position[link.target.key]))
    return IntegrationMap(systems=tuple(ordered), links=tuple(links))


def _system_order(system: System) -> tuple[int, str]:
    return SYSTEM_KINDS.index(system.kind), system.label


def connection_type(name: str, connections: Mapping[str, Mapping[str, Any]]) -> str:
    """The readable type of a connection, e.g. ERPNext; "not declared" if unknown."""
    settings = connections.get(name)
    if settings is None:
        return "not declared"
    kind = str(settings.get("type", "unknown type"))
    return CONNECTOR_NAMES.get(kind, kind)


def connection_system(
    name: str, connections: Mapping[str, Mapping[str, Any]]
) -> System:
    """A connection as a system, e.g. "erpnext (ERPNext)"."""
    kind = connection_type(name, connections)
    return System(f"connection:{name}:{kind}", f"{name} ({kind})", "connection")


def event_system(topic: str) -> System:
    return System(f"event:{topic}", f"event {topic}", "event")


def flow_system(name: str) -> System:
    return System(f"flow:{name}", f"flow {name}", "flow")


def trigger_text(trigger: models.Trigger) -> str:
    """The trigger as configured, in one short line, e.g. webhook /hooks/hire."""
    if trigger.webhook:
        return f"webhook {trigger.webhook.path}"
    if trigger.schedule:
        schedule = trigger.schedule
        return f"schedule {schedule.cron} ({schedule.timezone})"
    if trigger.event:
        return f"event {trigger.event.topic}"
    if trigger.poll:
        every = markdown.duration(trigger.poll.every_seconds)
        return f"poll {trigger.poll.call} every {every}"
    return MANUAL.label


def step_calls(flow: models.Flow) -> list[tuple[str, str]]:
    """Every call a flow's steps make: (step id, connection.action).

    Undo calls and task notifications count too, under their step's id.
    """
    found: list[tuple[str, str]] = []
    for step in models.walk_steps(flow.steps):
        step_id = step.id or models.step_kind(step)
        if isinstance(step, models.CallStep):
            found.append((step_id, step.call))
            if step.undo is not None:
                found.append((step_id, step.undo.call))
        if isinstance(step, models.TaskStep) and step.task.notify is not None:
            found.append((step_id, step.task.notify.call))
    return found


def emitted_topics(flow: models.Flow) -> list[str]:
    return [
        step.emit.topic
        for step in models.walk_steps(flow.steps)
        if isinstance(step, models.EmitStep)
    ]


def awaited_topics(flow: models.Flow) -> list[str]:
    return [
        step.wait.event
        for step in models.walk_steps(flow.steps)
        if isinstance(step, models.WaitStep) and step.wait.event is not None
    ]


def started_flows(flow: models.Flow) -> list[str]:
    """The flows a flow runs as subflows or per item."""
    names: list[str] = []
    for step in models.walk_steps(flow.steps):
        if isinstance(step, models.SubflowStep):
            names.append(step.subflow.flow)
        if isinstance(step, models.ForeachStep):
            names.append(step.foreach.flow)
    return names


def topics_matching(pattern: str, topics: Iterable[str]) -> list[str]:
    """The topics an event trigger's topic (``*`` for one part) matches."""
    compiled = events.topic_pattern(pattern)
    return [topic for topic in topics if compiled.match(topic)]


def _sources(
    flow: models.Flow,
    connections: Mapping[str, Mapping[str, Any]],
    emitted: list[str],
    started: set[str],
) -> list[System]:
    trigger = flow.trigger
    found: list[System] = []
    if trigger.webhook:
        path = trigger.webhook.path
        found.append(System(f"webhook:{path}", f"webhook {path}", "webhook"))
    elif trigger.schedule:
        text = trigger_text(trigger)
        found.append(System(text, text, "schedule"))
    elif trigger.event:
        topic = trigger.event.topic
        matching = topics_matching(topic, emitted) if "*" in topic else [topic]
        found.extend(event_system(t) for t in matching or [topic])
    elif trigger.poll:
        found.append(connection_system(trigger.poll.call.split(".")[0], connections))
    else:
        found.append(MANUAL)
    found.extend(event_system(topic) for topic in awaited_topics(flow))
    if flow.flow in started:
        found.append(flow_system(flow.flow))
    return list(dict.fromkeys(found))


def _targets(
    flow: models.Flow, connections: Mapping[str, Mapping[str, Any]]
) -> list[System]:
    found = [
        connection_system(call.split(".")[0], connections)
        for _, call in step_calls(flow)
    ]
    found.extend(event_system(topic) for topic in emitted_topics(flow))
    found.extend(flow_system(name) for name in started_flows(flow))
    return list(dict.fromkeys(found))


_MERMAID_SHAPES = {
    "webhook": ("([", "])"),
    "schedule": ("([", "])"),
    "manual": ("((", "))"),
    "event": ("{{", "}}"),
    "flow": ("[[", "]]"),
    "connection": ("[", "]"),
    "none": ("[", "]"),
}
# Fill and stroke per kind, shared by the Mermaid text and the SVG drawing.
KIND_COLOURS = {
    "webhook": ("#e3f2fd", "#1565c0"),
    "schedule": ("#fff8e1", "#f9a825"),
    "manual": ("#eceff1", "#546e7a"),
    "event": ("#f3e5f5", "#7b1fa2"),
    "flow": ("#fff3e0", "#ef6c00"),
    "connection": ("#e8f5e9", "#2e7d32"),
    "none": ("#fafafa", "#9e9e9e"),
}


def mermaid(landscape: IntegrationMap) -> str:
    """The map as Mermaid ``flowchart LR``: systems as nodes, flows on the links."""
    ids = {system.key: f"s{i}" for i, system in enumerate(landscape.systems, 1)}
    lines = ["flowchart LR"]
    for system in landscape.systems:
        opening, closing = _MERMAID_SHAPES[system.kind]
        label = markdown.mermaid_label(system.label)
        lines.append(f'    {ids[system.key]}{opening}"{label}"{closing}')
    for link in landscape.links:
        label = markdown.mermaid_label(link.label)
        source, target = ids[link.source.key], ids[link.target.key]
        lines.append(f'    {source} -->|"{label}"| {target}')
    for kind in SYSTEM_KINDS:
        members = [ids[s.key] for s in landscape.systems if s.kind == kind]
        if members:
            fill, stroke = KIND_COLOURS[kind]
            lines.append(f"    classDef {kind}System fill:{fill},stroke:{stroke}")
            lines.append(f"    class {','.join(members)} {kind}System")
    return "\n".join(lines) + "\n"
