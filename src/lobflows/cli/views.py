"""Rich renderings of runs, attempts and dead letters for the terminal."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from lobflows.secrets import redactor
from lobflows.store import Attempt, DeadLetter, RunRecord
from lobflows.store.tasks import TaskAction, TaskRecord

STATUS_STYLE = {
    "waiting": "magenta",
    "succeeded": "green",
    "failed": "red",
    "dead": "red",
    "queued": "yellow",
    "running": "cyan",
    "open": "red",
    "replayed": "green",
    "discarded": "dim",
    "approved": "green",
    "completed": "green",
    "rejected": "red",
    "timed_out": "red",
}
MAX_SHOWN_CHARACTERS = 2000


def when(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def duration(start: float, end: float | None) -> str:
    if end is None:
        return "-"
    seconds = end - start
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def status(text: str) -> str:
    return f"[{STATUS_STYLE.get(text, 'white')}]{text}[/]"


def shown(value: Any) -> str:
    """Stored data as indented JSON, secrets masked, safe to print as markup."""
    text = json.dumps(
        redactor.redact_data(value), indent=2, default=str, ensure_ascii=False
    )
    if len(text) > MAX_SHOWN_CHARACTERS:
        text = text[:MAX_SHOWN_CHARACTERS] + f"\n… ({len(text)} characters in all)"
    return escape(text)


def plain(text: str | None, limit: int | None = None) -> str:
    """Stored text (errors, names) with secrets masked, safe to print as markup."""
    cleaned = redactor.redact(text or "")
    if limit is not None and len(cleaned) > limit:
        cleaned = cleaned[: limit - 1] + "…"
    return escape(cleaned)


def runs_table(runs: list[RunRecord]) -> Table:
    table = Table(title=f"{len(runs)} run(s)", title_justify="left")
    for column in (
        "run",
        "flow",
        "status",
        "trigger",
        "started (UTC)",
        "duration",
        "error",
    ):
        table.add_column(column, overflow="fold")
    for run in runs:
        table.add_row(
            run.id,
            run.flow,
            status(run.status),
            run.trigger,
            when(run.created_at),
            duration(run.created_at, run.finished_at),
            plain(run.error, 80),
        )
    return table


def print_run(
    console: Console,
    run: RunRecord,
    attempts: list[Attempt],
    *,
    with_data: bool,
    children: tuple[RunRecord, ...] = (),
) -> None:
    console.print(
        f"[bold]Run {run.id}[/]  flow [bold]{run.flow}[/]  {status(run.status)}",
        highlight=False,
    )
    console.print(
        f"trigger {run.trigger}  started {when(run.created_at)} UTC  duration {duration(run.created_at, run.finished_at)}",
        highlight=False,
    )
    if run.parent_run_id:
        console.print(f"started by run {run.parent_run_id} (subflow)", highlight=False)
    for child in children:
        console.print(
            f"subflow run {child.id}  flow {child.flow}  {status(child.status)}",
            highlight=False,
        )
    if run.status == "waiting" and run.current_step:
        console.print(f"waiting at {run.current_step}", highlight=False)
    if run.status == "queued" and run.current_step:
        console.print(
            f"next attempt of {run.current_step} at {when(run.due_at)} UTC",
            highlight=False,
        )
    if run.error:
        console.print(
            f"[red]error:[/] {plain(run.error)}", highlight=False, soft_wrap=True
        )
    table = Table(title_justify="left")
    for column in ("step", "attempt", "status", "started (UTC)", "duration", "error"):
        table.add_column(column, overflow="fold")
    for a in attempts:
        table.add_row(
            a.step,
            str(a.attempt),
            status(a.status),
            when(a.started_at),
            duration(a.started_at, a.finished_at),
            plain(a.error),
        )
    console.print(table)
    if run.response is not None:
        console.print("response:", shown(run.response), highlight=False)
    if with_data:
        console.rule("run input")
        console.print(shown(run.input), highlight=False)
        for a in attempts:
            console.rule(f"{a.step} · attempt {a.attempt}")
            console.print("input:", shown(a.input), highlight=False)
            console.print("output:", shown(a.output), highlight=False)


def print_traces(console: Console, attempts: list[Attempt]) -> None:
    """The transformation log: per mapping step, each field's source and rule."""
    traced = [a for a in attempts if a.trace]
    if not traced:
        console.print("no mapping steps in this run", highlight=False)
        return
    for a in traced:
        table = Table(title=f"{a.step}: fields", title_justify="left")
        for column in ("field", "source", "rule", "outcome"):
            table.add_column(column, overflow="fold")
        for entry in a.trace if isinstance(a.trace, list) else []:
            table.add_row(
                plain(entry.get("field")),
                plain(entry.get("source")),
                plain(entry.get("rule")),
                plain(entry.get("outcome")),
            )
        console.print(table)


def flow_versions_table(versions: list[dict[str, Any]]) -> Table:
    table = Table(title=f"{len(versions)} flow version(s)", title_justify="left")
    for column in ("flow", "version", "digest", "stored (UTC)", "runs in flight"):
        table.add_column(column, overflow="fold")
    for v in versions:
        table.add_row(
            v["flow"],
            str(v["version"]),
            v["digest"],
            when(v["created_at"]),
            str(v["in_flight"]),
        )
    return table


def dead_letters_table(letters: list[DeadLetter]) -> Table:
    table = Table(title=f"{len(letters)} dead letter(s)", title_justify="left")
    for column in ("id", "run", "flow", "step", "status", "since (UTC)", "error"):
        table.add_column(column, overflow="fold")
    for d in letters:
        table.add_row(
            str(d.id),
            d.run_id,
            d.flow,
            d.step,
            status(d.status),
            when(d.created_at),
            plain(d.error, 100),
        )
    return table


def print_dead_letter(console: Console, letter: DeadLetter, run: RunRecord) -> None:
    console.print(
        f"[bold]Dead letter {letter.id}[/]  {status(letter.status)}  run {letter.run_id}",
        highlight=False,
    )
    console.print(
        f"flow {letter.flow}  step {letter.step}  since {when(letter.created_at)} UTC",
        highlight=False,
    )
    console.print(
        f"[red]error:[/] {plain(letter.error)}", highlight=False, soft_wrap=True
    )
    if letter.step_input is not None:
        console.print("step input:", shown(letter.step_input), highlight=False)
    console.print("run input:", shown(run.input), highlight=False)
    if letter.status != "open":
        return
    if letter.step_input is not None:
        fix = f"lobflows dlq show {letter.id} --input-only > step.json; edit; lobflows dlq replay {letter.id} --input step.json"
    else:
        fix = f"lobflows dlq show {letter.id} --run-input-only > run.json; edit; lobflows dlq replay {letter.id} --run-input run.json"
    console.print(
        f"[dim]to correct: {escape(fix)}\nto retry as is: lobflows dlq replay {letter.id}   to close: lobflows dlq discard {letter.id}[/]",
        highlight=False,
    )


def tasks_table(tasks: list[TaskRecord]) -> Table:
    table = Table(title=f"{len(tasks)} task(s)", title_justify="left")
    for column in ("id", "title", "kind", "status", "assignees", "due (UTC)", "run"):
        table.add_column(column, overflow="fold")
    for t in tasks:
        table.add_row(
            t.id[:12],
            plain(t.title, 60),
            t.kind
            if t.kind == "review"
            else f"approval {t.required}/{len(t.assignees)}",
            status(t.status),
            plain(", ".join(t.assignees), 60),
            when(t.due_at),
            t.run_id[:12],
        )
    return table


def print_task(console: Console, task: TaskRecord, actions: list[TaskAction]) -> None:
    console.print(
        f"[bold]Task {task.id}[/]  {status(task.status)}  {task.kind}", highlight=False
    )
    console.print(f"[bold]{plain(task.title)}[/]", highlight=False)
    if task.description:
        console.print(plain(task.description), highlight=False)
    needed = (
        f"  ({task.required} approval(s) needed)" if task.kind == "approval" else ""
    )
    console.print(
        f"assignees: {plain(', '.join(task.assignees))}{needed}", highlight=False
    )
    if task.requester:
        console.print(f"requested by {plain(task.requester)}", highlight=False)
    console.print(
        f"run {task.run_id}  flow {task.flow}  step {task.step}  "
        f"opened {when(task.created_at)} UTC  due {when(task.due_at)} UTC",
        highlight=False,
    )
    if task.form:
        fields = ", ".join(
            f"{f['name']} ({f['type']}{', required' if f.get('required') else ''})"
            for f in task.form
        )
        console.print(f"form: {plain(fields)}", highlight=False)
    table = Table(title="history", title_justify="left")
    for column in ("at (UTC)", "action", "by", "for", "comment"):
        table.add_column(column, overflow="fold")
    for a in actions:
        table.add_row(
            when(a.at), a.action, plain(a.by), plain(a.for_user), plain(a.comment)
        )
    console.print(table)
    if task.data:
        console.print("form data:", shown(task.data), highlight=False)
