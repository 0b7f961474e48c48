"""``lobflows tasks``: the people's side of a run: list, show, decide, delegate."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from lobflows import errors
from lobflows.cli import common as cli
from lobflows.cli import views
from lobflows.engine import tasks as task_rules

tasks_app = typer.Typer(
    help="Human tasks: approvals and reviews that runs wait on.", no_args_is_help=True
)

TaskId = Annotated[
    str, typer.Argument(help="Task id or a prefix of at least 6 characters.")
]


@tasks_app.command("list")
def tasks_list(
    user: Annotated[
        str | None,
        typer.Option(
            "--for", help="Only tasks this user may act on (delegations too)."
        ),
    ] = None,
    status: Annotated[
        str,
        typer.Option(help="open, approved, rejected, completed, timed_out, or all."),
    ] = "open",
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 50,
) -> None:
    """Tasks, newest first; open ones unless --status says otherwise."""
    wanted = None if status == "all" else status
    found = cli.run_async(
        cli.with_store(
            lambda store: store.list_tasks(status=wanted, user=user, limit=limit)
        )
    )
    cli.console.print(views.tasks_table(found))


@tasks_app.command("show")
def tasks_show(task_id: TaskId) -> None:
    """One task: what is asked, of whom, by when, and everything done so far."""

    async def load(store: Any) -> Any:
        task = await store.find_task(task_id)
        return task, await store.task_actions(task.id)

    task, actions = cli.run_async(cli.with_store(load))
    views.print_task(cli.console, task, actions)


@tasks_app.command("decide")
def tasks_decide(
    task_id: TaskId,
    decision: Annotated[
        str, typer.Argument(help="approve or reject (approvals), complete (reviews).")
    ],
    by: Annotated[
        str, typer.Option("--as", help="Who decides: an assignee or their delegate.")
    ],
    fields: Annotated[
        list[str] | None,
        typer.Option("--field", "-f", help="A form value as name=value; repeatable."),
    ] = None,
    comment: Annotated[str | None, typer.Option(help="A note kept with it.")] = None,
) -> None:
    """Approve, reject or complete a task; the decision that settles it resumes the run."""
    data: dict[str, str] = {}
    for item in fields or []:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            cli.fail(f"--field {item!r}: expected name=value", cli.EXIT_USAGE)
        data[name.strip()] = value

    async def decide(store: Any) -> Any:
        try:
            return await task_rules.decide(
                store, task_id, by=by, decision=decision, data=data, comment=comment
            )
        except errors.InvalidDecisionError as exc:
            cli.fail(str(exc), cli.EXIT_USAGE)

    task = cli.run_async(cli.with_store(decide))
    if task.is_open:
        cli.console.print(
            f"Decision taken; task {task.id} stays open for more approvals.",
            highlight=False,
        )
    else:
        cli.console.print(
            f"Task {task.id} is {task.status}; its run {task.run_id} goes on.",
            highlight=False,
        )


@tasks_app.command("delegate")
def tasks_delegate(
    task_id: TaskId,
    by: Annotated[str, typer.Option("--from", help="The assignee handing it on.")],
    to: Annotated[str, typer.Option("--to", help="Who decides in their place.")],
) -> None:
    """Let someone decide in an assignee's place (holiday, absence)."""

    async def delegate(store: Any) -> Any:
        task = await store.find_task(task_id)
        return await store.delegate(task.id, by=by, to=to)

    task = cli.run_async(cli.with_store(delegate))
    cli.console.print(
        f"{to} may now decide task {task.id} in place of {by}.", highlight=False
    )
