"""A flow drawn as a Mermaid flowchart, from the flow itself.

The drawing follows the steps as the engine runs them: branches of ``if``
and ``switch`` fork and meet again, parallel branches fork and join, a
task's deadline leads to its escalate steps. Documentation embeds the text,
and a test keeps it equal to what this module draws.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from lobflows.spec import models

_SHAPES = {
    "trigger": ("([", "])"),
    "end": ("((", "))"),
    "task": ("[/", "/]"),
    "wait": ("([", "])"),
    "sleep": ("([", "])"),
    "subflow": ("[[", "]]"),
    "foreach": ("[[", "]]"),
    "if": ("{", "}"),
    "switch": ("{", "}"),
    "emit": (">", "]"),
}


@dataclass
class _Drawing:
    lines: list[str] = field(default_factory=list)
    count: int = 0

    def node(self, label: str, kind: str) -> str:
        self.count += 1
        name = f"n{self.count}"
        opening, closing = _SHAPES.get(kind, ("[", "]"))
        self.lines.append(f'    {name}{opening}"{_escape(label)}"{closing}')
        return name

    def edge(self, source: str, target: str, label: str | None = None) -> None:
        arrow = f' -->|"{_escape(label)}"| ' if label else " --> "
        self.lines.append(f"    {source}{arrow}{target}")


def mermaid(flow: models.Flow) -> str:
    """The flow as Mermaid ``flowchart TD`` text."""
    drawing = _Drawing(lines=["flowchart TD"])
    start = drawing.node(_trigger_label(flow.trigger), "trigger")
    ends = _block(drawing, flow.steps, [(start, None)])
    finish = drawing.node("end", "end")
    for source, label in ends:
        drawing.edge(source, finish, label)
    return "\n".join(drawing.lines) + "\n"


def _block(
    drawing: _Drawing, steps: list[Any], entries: list[tuple[str, str | None]]
) -> list[tuple[str, str | None]]:
    """Draw steps one after another; returns the open ends (node, edge label)."""
    for step in steps:
        entries = _step(drawing, step, entries)
    return entries


def _step(
    drawing: _Drawing, step: Any, entries: list[tuple[str, str | None]]
) -> list[tuple[str, str | None]]:
    kind = models.step_kind(step)
    name = drawing.node(_label(step, kind), kind)
    for source, label in entries:
        drawing.edge(source, name, label)
    if isinstance(step, models.IfStep):
        return [
            *_block(drawing, step.then, [(name, "yes")]),
            *_block(drawing, step.else_, [(name, "no")]),
        ]
    if isinstance(step, models.SwitchStep):
        ends = []
        for case, block in step.cases.items():
            ends.extend(_block(drawing, block, [(name, case)]))
        return [*ends, *_block(drawing, step.default, [(name, "otherwise")])]
    if isinstance(step, models.ParallelStep):
        join = drawing.node(_join_label(step), "join")
        for branch, block in step.parallel.items():
            for source, label in _block(drawing, block, [(name, branch)]):
                drawing.edge(source, join, label)
        return [(join, None)]
    if isinstance(step, models.TaskStep) and step.escalate:
        late = _block(drawing, step.escalate, [(name, "deadline passed")])
        return [(name, "decided"), *late]
    return [(name, None)]


def _label(step: Any, kind: str) -> str:
    title = step.id or kind
    if isinstance(step, models.CallStep):
        return f"{step.id}: {step.call}" + (" (undo on failure)" if step.undo else "")
    if isinstance(step, models.TaskStep):
        who = ", ".join(
            f"role {a.role}" if a.role else "user" for a in step.task.assignees
        )
        due = f", due in {step.task.due_in}" if step.task.due_in is not None else ""
        return f"{step.id}: {step.task.kind} by {who}{due}"
    if isinstance(step, models.WaitStep):
        awaited = step.wait.event or step.wait.signal
        return f"{step.id}: wait for {awaited}"
    if isinstance(step, models.SubflowStep):
        return f"{step.id}: run flow {step.subflow.flow}"
    if isinstance(step, models.ForeachStep):
        return f"{step.id}: flow {step.foreach.flow} per item"
    if isinstance(step, models.IfStep | models.SwitchStep):
        question = step.description or _shortened(
            step.if_ if isinstance(step, models.IfStep) else step.switch
        )
        return f"{step.id}: {question}?"
    if isinstance(step, models.TransformStep):
        return f"{step.id}: mapping {step.transform.mapping}"
    if isinstance(step, models.EmitStep):
        return f"{step.id}: emit {step.emit.topic}"
    if isinstance(step, models.SleepStep):
        return f"{step.id}: sleep"
    if step.description:
        return f"{step.id}: {_shortened(step.description.rstrip('.'))}"
    return f"{step.id}: {kind}" if step.id else title


def _shortened(text: str, limit: int = 60) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _join_label(step: models.ParallelStep) -> str:
    if step.join == "all":
        return "all branches done"
    return "first branch done" if step.join == "any" else f"first {step.join} done"


def _trigger_label(trigger: models.Trigger) -> str:
    if trigger.webhook:
        return f"webhook {trigger.webhook.path}"
    if trigger.schedule:
        return f"schedule {trigger.schedule.cron} {trigger.schedule.timezone}"
    if trigger.event:
        return f"event {trigger.event.topic}"
    if trigger.poll:
        return f"poll {trigger.poll.call}"
    return "started by hand"


def _escape(text: str) -> str:
    # Mermaid labels in double quotes: quotes become #quot;, and template
    # braces and line breaks are kept out of the drawing.
    text = re.sub(r"\s+", " ", text).replace('"', "#quot;")
    return text.replace("{{", "").replace("}}", "").strip()
