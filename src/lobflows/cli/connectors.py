"""``lobflows connectors``: the connection types installed, their actions and settings."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from lobflows import errors
from lobflows.cli import common as cli
from lobflows.connectors import base
from lobflows.connectors.base import connector_classes
from lobflows.connectors.limits import Limits

connectors_app = typer.Typer(
    help="Connection types: built in or from installed packages.", no_args_is_help=True
)


@connectors_app.command("list")
def connectors_list() -> None:
    """Every connection type with its actions, built-ins and packages alike."""
    table = Table(title="connection types", title_justify="left")
    for column in ("type", "actions", "from"):
        table.add_column(column, overflow="fold")
    for kind, cls in sorted(connector_classes().items()):
        table.add_row(kind, ", ".join(sorted(cls.actions)), cls.__module__)
    cli.console.print(table)


@connectors_app.command("show")
def connectors_show(
    kind: Annotated[str, typer.Argument(help="A connection type, e.g. http.")],
) -> None:
    """One connection type: what each action does, and its settings."""
    classes = connector_classes()
    cls = classes.get(kind)
    if cls is None:
        cli.fail(
            f"no connection type {kind!r}; installed: {', '.join(sorted(classes))}",
            cli.EXIT_NOT_FOUND,
        )
    cli.console.print(
        f"[bold]{escape(kind)}[/]  {escape(cls.__doc__ or '')}", highlight=False
    )
    actions = Table(title="actions", title_justify="left")
    for column in ("action", "what it does"):
        actions.add_column(column, overflow="fold")
    for name, text in sorted(cls.actions.items()):
        actions.add_row(name, escape(text))
    cli.console.print(actions)
    cli.console.print(_settings_table(cls.settings_model, "settings"))
    cli.console.print(_settings_table(Limits, "limits (every connection)"))


@connectors_app.command("check")
def connectors_check(
    flows_dir: Annotated[
        Path,
        typer.Argument(
            help="Folder of flows with connections.yaml.", envvar="LOBFLOWS_FLOWS"
        ),
    ],
) -> None:
    """Reach every declared connection with its settings and secrets; exit 1 if any fails."""
    results = cli.run_async(_check_all(flows_dir))
    table = Table(title="connections", title_justify="left")
    for column in ("connection", "type", "result"):
        table.add_column(column, overflow="fold")
    for name, kind, ok, text in results:
        mark = "[green]ok[/]" if ok else "[red]failed[/]"
        table.add_row(name, kind, f"{mark} {escape(text)}")
    cli.console.print(table)
    failed = [name for name, _, ok, _ in results if not ok]
    if failed:
        cli.fail(
            f"{len(failed)} connection(s) failed: {', '.join(failed)}",
            cli.EXIT_PROBLEMS,
        )


async def _check_all(flows_dir: Path) -> list[tuple[str, str, bool, str]]:
    from lobflows.connectors.base import build_connections
    from lobflows.secrets import SecretStore, redactor
    from lobflows.spec import loader

    project = loader.load_project(flows_dir)
    secrets = SecretStore.load(cli.options.settings.secrets_file)
    connections = build_connections(
        project.connections, secrets, source=str(flows_dir / loader.CONNECTIONS_FILE)
    )
    results = []
    for name, connection in sorted(connections.items()):
        try:
            text, ok = await connection.check(), True
        except errors.LobflowsError as exc:
            text, ok = redactor.redact(str(exc)), False
        finally:
            await connection.close()
        results.append((name, connection.kind, ok, text))
    return results


def _settings_table(model: Any, title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("setting", "type", "default", "description"):
        table.add_column(column, overflow="fold")
    # A connector's own settings first, then the ones every network connection has.
    fields = sorted(
        model.model_fields.items(),
        key=lambda item: item[0] in base.NetworkSettings.model_fields,
    )
    for name, field in fields:
        shown = field.alias or name
        default = (
            "required"
            if field.is_required()
            else repr(field.get_default(call_default_factory=True))
        )
        table.add_row(
            shown,
            escape(_type_name(field.annotation)),
            escape(default),
            escape(field.description or ""),
        )
    return table


def _type_name(annotation: Any) -> str:
    """A type as a person reads it: HttpUrl, not pydantic.networks.HttpUrl."""
    text = str(annotation).replace("<class '", "").replace("'>", "")
    return re.sub(r"\b(?:\w+\.)+(\w+)", r"\1", text)
