"""A flow's page: card, description, diagram, steps, connections, inline mappings."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

from lobflows.docs import integration_map as maps
from lobflows.docs import mapping_page, markdown
from lobflows.docs.catalogue import Catalogue, FlowEntry
from lobflows.spec import diagram, models


def render(entry: FlowEntry, catalogue: Catalogue) -> str:
    """The Markdown page of one flow."""
    flow = entry.spec
    where = (
        f"Folder {markdown.code(entry.folder.shown)}, file "
        f"{markdown.code(entry.file_name)}"
        + (f", version {flow.version}" if flow.version is not None else "")
        + ". [Back to the catalogue](../index.md)"
    )
    sections = [markdown.GENERATED, f"# {markdown.text(flow.flow)}", where]
    if flow.description:
        sections.append(markdown.paragraphs(flow.description))
    sections += [
        "## Card",
        _card(entry),
        "## Diagram",
        markdown.fenced(diagram.mermaid(flow), "mermaid"),
        "## Steps",
        _steps(entry, catalogue),
        "## Connections used",
        _connections(entry),
    ]
    map_steps = [
        step
        for step in models.walk_steps(flow.steps)
        if isinstance(step, models.MapStep)
    ]
    if map_steps:
        sections.append("## Map steps")
        sections.append(
            "Each map step builds a record field by field. A template that "
            "names data which is not there counts as missing."
        )
        for step in map_steps:
            sections += _map_step(step)
    return "\n\n".join(section.rstrip("\n") for section in sections) + "\n"


# -- card -------------------------------------------------------------------


def _card(entry: FlowEntry) -> str:
    flow = entry.spec
    card = flow.card
    data = f"{card.data.entity} · {card.data.sensitivity}"
    if card.data.volume:
        data += f" · {card.data.volume}"
    if card.data.sensitivity in ("pii", "secret"):
        data += " (masked in views)"
    rows = [
        ("Trigger", markdown.text(card.trigger) + "<br>" + _trigger_detail(flow)),
        ("Data", markdown.text(data)),
        ("Transform", markdown.text(card.transform)),
        ("Target", markdown.text(card.target)),
        ("On failure", markdown.text(card.on_failure) + "<br>" + _retry(flow)),
        ("Owner", markdown.text(card.owner)),
        (
            "Retention",
            markdown.text(f"finished runs are kept {flow.retention_days:g} days"),
        ),
    ]
    return markdown.table(["Card", "Answer"], rows)


def _trigger_detail(flow: models.Flow) -> str:
    trigger = flow.trigger
    detail = [markdown.code(maps.trigger_text(trigger))]
    hook = trigger.webhook
    if hook is not None:
        if hook.signature is not None:
            detail.append(markdown.text(f"signed (header {hook.signature.header})"))
        if hook.dedupe:
            detail.append("one run per " + markdown.code(hook.dedupe))
        if hook.mode == "sync":
            detail.append(markdown.text("the caller waits for the reply"))
    if trigger.schedule is not None and trigger.schedule.missed == "catch_up":
        detail.append(markdown.text("missed runs are started late"))
    if trigger.poll is not None:
        detail.append(
            "one run per new item, identified by " + markdown.code(trigger.poll.id)
        )
    return ", ".join(detail)


def _retry(flow: models.Flow) -> str:
    retry = flow.retry
    return markdown.text(
        f"call steps are tried {retry.max_attempts} times, waiting up to "
        f"{retry.initial_delay_seconds:g} s at first and never more than "
        f"{retry.max_delay_seconds:g} s"
    )


# -- steps ------------------------------------------------------------------


def _steps(entry: FlowEntry, catalogue: Catalogue) -> str:
    rows = [
        (
            markdown.code(step.id or models.step_kind(step)),
            markdown.text(models.step_kind(step)),
            markdown.text(within),
            _what(step, entry, catalogue),
        )
        for step, within in _walk(entry.spec.steps, "")
    ]
    return markdown.table(["Step", "Kind", "Within", "What it does"], rows)


def _walk(steps: list[Any], within: str) -> Iterator[tuple[Any, str]]:
    for step in steps:
        yield step, within
        for branch, block in models.child_blocks(step):
            name = branch.replace("case:", "case ").replace("branch:", "branch ")
            yield from _walk(block, f"{step.id}: {name}")


def _what(step: Any, entry: FlowEntry, catalogue: Catalogue) -> str:
    parts = [_action(step, entry, catalogue)]
    if step.description:
        parts.append(markdown.text(step.description))
    return "<br>".join(part for part in parts if part)


def _action(step: Any, entry: FlowEntry, catalogue: Catalogue) -> str:
    connections = entry.folder.project.connections
    if isinstance(step, models.MapStep):
        return markdown.text(
            f"builds a record of {markdown.plural(len(step.map), 'field')}"
            f" (see Map steps below)"
        )
    if isinstance(step, models.CallStep):
        return _call(step, connections)
    if isinstance(step, models.TaskStep):
        return _task(step, entry)
    if isinstance(step, models.WaitStep):
        return _wait(step)
    if isinstance(step, models.TransformStep):
        return _transform(step, entry, catalogue)
    if isinstance(step, models.SubflowStep | models.ForeachStep):
        return _run_flow(step, entry, catalogue)
    return _simple(step)


def _call(step: models.CallStep, connections: Any) -> str:
    text = (
        markdown.code(step.call)
        + " "
        + _call_meaning(step.call, step.with_, connections)
    )
    if step.retry is not None:
        text += markdown.text(f"; tried {step.retry.max_attempts} times")
    if step.undo is not None:
        text += "; undone by " + markdown.code(step.undo.call)
        text += markdown.text(" when a later step fails for good")
    return text


def _call_meaning(call: str, params: dict[str, Any], connections: Any) -> str:
    connection, _, action = call.partition(".")
    kind = maps.connection_type(connection, connections)
    meaning = f"on {connection} ({kind})"
    doctype = params.get("doctype")
    if isinstance(doctype, str):
        meaning += f", doctype {doctype}"
    settings = connections.get(connection) or {}
    described = _action_descriptions(str(settings.get("type", ""))).get(action)
    if described:
        # The first sentence says what the action does; the rest is detail.
        meaning += ": " + described.split(". ")[0].rstrip(".")
    return markdown.text(meaning)


@functools.cache
def _action_descriptions(kind: str) -> dict[str, str]:
    """What each action of a connector type does, as the connector declares it."""
    from lobflows.connectors import base

    connector = base.connector_classes().get(kind)
    return dict(connector.actions) if connector is not None else {}


def _task(step: models.TaskStep, entry: FlowEntry) -> str:
    task = step.task
    roles = entry.folder.project.roles
    who = []
    for assignee in task.assignees:
        if assignee.user is not None:
            who.append("user " + markdown.code(assignee.user))
            continue
        role = markdown.code(assignee.role)
        members = roles.get(assignee.role or "")
        if members:
            role += markdown.text(f" ({', '.join(members)})")
        if assignee.pick == "round_robin":
            role += markdown.text(", one member in turn")
        who.append("role " + role)
    text = markdown.text(f"{task.kind} by ") + ", ".join(who)
    if task.kind == "approval" and task.required > 1:
        text += markdown.text(f"; {task.required} approvals needed")
    if task.due_in is not None:
        text += "; due in " + _duration_or_code(task.due_in)
    if task.remind_before:
        reminders = ", ".join(
            markdown.duration(models.parse_duration(r)) for r in task.remind_before
        )
        text += markdown.text(f"; reminded {reminders} before")
    if task.notify is not None:
        text += "; told by " + markdown.code(task.notify.call)
    if task.form:
        text += markdown.text("; form: " + ", ".join(f.name for f in task.form))
    if step.escalate:
        late = ", ".join(s.id or models.step_kind(s) for s in step.escalate)
        text += markdown.text(f"; when the deadline passes: {late}")
    title = "asks " + markdown.code(task.title)
    return f"{title}<br>{text}"


def _duration_or_code(value: Any) -> str:
    if isinstance(value, str) and "{" in value:
        return markdown.code(value)
    return markdown.text(markdown.duration(models.parse_duration(value)))


def _wait(step: models.WaitStep) -> str:
    wait = step.wait
    if wait.signal is not None:
        text = "waits for the signal " + markdown.code(wait.signal)
    else:
        text = (
            "waits for the event "
            + markdown.code(wait.event)
            + " with key "
            + markdown.code(wait.key)
        )
    if wait.timeout_seconds is not None:
        then = "fails" if wait.on_timeout == "fail" else "goes on"
        text += markdown.text(
            f"; after {markdown.duration(wait.timeout_seconds)} it {then}"
        )
    return text


def _transform(
    step: models.TransformStep, entry: FlowEntry, catalogue: Catalogue
) -> str:
    name = step.transform.mapping
    target = catalogue.mapping(entry.folder, name)
    shown = (
        markdown.link(name, f"../mappings/{target.page}.md")
        if target is not None
        else markdown.code(name)
    )
    rejects = "fails" if step.transform.on_reject == "fail" else "skips them"
    return (
        "maps "
        + markdown.code(step.transform.input)
        + " with the mapping "
        + shown
        + markdown.text(f"; on records it cannot map, it {rejects}")
    )


def _run_flow(step: Any, entry: FlowEntry, catalogue: Catalogue) -> str:
    name = (
        step.subflow.flow if isinstance(step, models.SubflowStep) else step.foreach.flow
    )
    target = catalogue.flow(entry.folder, name)
    shown = markdown.link(name, f"{target.page}.md") if target else markdown.code(name)
    if isinstance(step, models.SubflowStep):
        return "runs the flow " + shown + markdown.text(" and waits for its result")
    each = step.foreach
    return (
        "runs the flow "
        + shown
        + " per item of "
        + markdown.code(each.items)
        + markdown.text(f" ({each.batch_size} per run, {each.concurrency} at once)")
    )


def _simple(step: Any) -> str:
    if isinstance(step, models.IfStep):
        return "if " + markdown.code(step.if_)
    if isinstance(step, models.SwitchStep):
        cases = ", ".join(step.cases)
        return "by " + markdown.code(step.switch) + markdown.text(f": cases {cases}")
    if isinstance(step, models.ParallelStep):
        branches = ", ".join(step.parallel)
        return markdown.text(
            f"runs the branches {branches} at once; goes on when "
            f"{_join(step)}; a failed branch "
            + ("fails the run" if step.on_branch_failure == "fail" else "is noted")
        )
    if isinstance(step, models.RespondStep):
        return "answers the webhook caller with status " + markdown.code(
            step.respond.status
        )
    if isinstance(step, models.SleepStep):
        if step.sleep.seconds is not None:
            return markdown.text(f"sleeps {markdown.duration(step.sleep.seconds)}")
        return "sleeps until " + markdown.code(step.sleep.until)
    if isinstance(step, models.EmitStep):
        text = "emits the event " + markdown.code(step.emit.topic)
        if step.emit.key:
            text += " with key " + markdown.code(step.emit.key)
        return text
    if isinstance(step, models.ValidateStep):
        required = step.validate_.schema_.get("required") or []
        text = "checks " + markdown.code(step.validate_.data) + " against a JSON Schema"
        if required:
            text += markdown.text(f" (required: {', '.join(map(str, required))})")
        return text
    return ""


def _join(step: models.ParallelStep) -> str:
    if step.join == "all":
        return "all are done"
    return "the first is done" if step.join == "any" else f"{step.join} are done"


# -- connections ------------------------------------------------------------


def _connections(entry: FlowEntry) -> str:
    used: dict[str, dict[str, list[str]]] = {}
    trigger = entry.spec.trigger
    calls = list(maps.step_calls(entry.spec))
    if trigger.poll is not None:
        calls.insert(0, ("trigger", trigger.poll.call))
    for step_id, call in calls:
        connection, _, action = call.partition(".")
        actions = used.setdefault(connection, {})
        actions.setdefault(action, [])
        if step_id not in actions[action]:
            actions[action].append(step_id)
    if not used:
        return markdown.text("This flow calls no connection.")
    connections = entry.folder.project.connections
    rows = [
        (
            markdown.code(name),
            markdown.text(maps.connection_type(name, connections)),
            "<br>".join(
                markdown.code(action) + markdown.text(": " + ", ".join(steps))
                for action, steps in actions.items()
            ),
        )
        for name, actions in sorted(used.items())
    ]
    return markdown.table(["Connection", "Type", "Actions: steps"], rows)


# -- map steps --------------------------------------------------------------


def _map_step(step: models.MapStep) -> list[str]:
    parts = [f"### {markdown.code(step.id or 'map')}"]
    if step.description:
        parts.append(markdown.text(step.description))
    rows = [_map_row(target, rule) for target, rule in step.map.items()]
    headers = ["Target", "Source", "Converters", "On missing", "On null", "Required"]
    parts.append(markdown.table(headers, rows))
    return parts


def _map_row(target: str, rule: Any) -> list[str]:
    if not isinstance(rule, str | models.FieldRule):
        return [
            markdown.code(target),
            "constant " + markdown.constant(rule),
            "—",
            "—",
            "—",
            "—",
        ]
    if isinstance(rule, str):
        rule = models.FieldRule(value=rule)
    source = (
        "path " + markdown.code(rule.from_)
        if rule.from_ is not None
        else "template " + markdown.code(rule.value)
    )
    return [
        markdown.code(target),
        source,
        mapping_page.converters_text(rule.convert),
        mapping_page.policy_text(rule.on_missing, rule.default),
        mapping_page.policy_text(rule.on_null, rule.default),
        _required(rule),
    ]


def _required(rule: models.FieldRule) -> str:
    if rule.on_missing == "error" and rule.on_null == "error":
        return "yes"
    if rule.on_missing == "error":
        return markdown.text("must be present (may be empty)")
    return "no"
