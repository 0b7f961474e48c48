"""``lobflows health``: health of every flow and connection, read from the run store.

Exit codes: 0 when nothing is down, 1 when a flow or connection is down,
4 when the store or the settings (flow files, connections.yaml,
monitor.yaml) are unusable.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from lobflows.cli import common as cli
from lobflows.cli import views
from lobflows.monitor import Health, Snapshot

health_app = typer.Typer(
    help="Health of every flow and connection.",
    # Options may follow the folder, as with every other command.
    context_settings={"allow_interspersed_args": True},
)

STATUS_STYLE = {
    "healthy": "green",
    "degraded": "yellow",
    "down": "bold red",
    "unknown": "dim",
}


@health_app.callback(invoke_without_command=True)
def health(
    flows_dir: Annotated[
        Path,
        typer.Argument(
            help="Folder of flows (with connections.yaml and monitor.yaml).",
            envvar="LOBFLOWS_FLOWS",
        ),
    ],
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Check every connection now (and keep the outcome for all processes).",
            envvar="LOBFLOWS_HEALTH_CHECK",
        ),
    ] = False,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print JSON instead of tables.",
            envvar="LOBFLOWS_HEALTH_JSON",
        ),
    ] = False,
) -> None:
    """Print the health table; exit 1 when a flow or connection is down."""
    snapshot = cli.run_async(
        _snapshot(flows_dir, check=check),
        # 1 says something is down; unusable settings are told apart.
        definition_exit=cli.EXIT_CONFIGURATION,
    )
    if as_json:
        cli.console.print_json(json.dumps(snapshot_json(snapshot)))
    else:
        cli.console.print(flows_table(snapshot))
        cli.console.print(connections_table(snapshot))
    down = [h.name for h in snapshot.all() if h.status == "down"]
    if down:
        cli.fail(f"down: {', '.join(down)}", cli.EXIT_PROBLEMS)


async def _snapshot(flows_dir: Path, *, check: bool) -> Snapshot:
    from lobflows.runtime import Runtime

    cli.require_store(cli.options.settings)
    runtime = await Runtime.open(cli.options.settings, flows_dir)
    try:
        if check:
            await runtime.monitor.checker.run_due(force=True)
        return await runtime.monitor.snapshot()
    finally:
        await runtime.close()


def snapshot_json(snapshot: Snapshot) -> dict[str, Any]:
    return {
        "at": snapshot.at,
        "flows": {n: dataclasses.asdict(h) for n, h in snapshot.flows.items()},
        "connections": {
            n: dataclasses.asdict(h) for n, h in snapshot.connections.items()
        },
        "recent_errors": [dataclasses.asdict(e) for e in snapshot.recent_errors],
    }


def flows_table(snapshot: Snapshot) -> Table:
    table = Table(title="flows", title_justify="left")
    columns = ("flow", "status", "runs today", "errors", "error rate", "p50 / p95")
    for column in (*columns, "backlog", "last success", "reasons"):
        table.add_column(column, overflow="fold")
    for h in snapshot.flows.values():
        table.add_row(
            escape(h.name),
            _status(h.status),
            str(h.runs_today),
            str(h.errors_today),
            _rate(h),
            _latency(h),
            str(h.backlog),
            views.when(h.last_success_at),
            _reasons(h),
        )
    return table


def connections_table(snapshot: Snapshot) -> Table:
    table = Table(title="connections", title_justify="left")
    columns = ("connection", "status", "breaker", "last check", "calls today")
    for column in (*columns, "errors", "error rate", "p50 / p95", "reasons"):
        table.add_column(column, overflow="fold")
    for h in snapshot.connections.values():
        table.add_row(
            escape(h.name),
            _status(h.status),
            h.breaker or "-",
            _last_check(h),
            str(h.runs_today),
            str(h.errors_today),
            _rate(h),
            _latency(h),
            _reasons(h),
        )
    return table


def _status(status: str) -> str:
    return f"[{STATUS_STYLE.get(status, 'white')}]{status}[/]"


def _rate(h: Health) -> str:
    return "-" if h.error_rate is None else f"{h.error_rate:.0%}"


def _latency(h: Health) -> str:
    if h.p50_seconds is None or h.p95_seconds is None:
        return "-"
    return f"{h.p50_seconds:.2f} s / {h.p95_seconds:.2f} s"


def _last_check(h: Health) -> str:
    """When the last check ran and what it said, or why there is none."""
    said = escape(h.check_result or "")
    if h.last_check_at is None:
        return said or "-"
    when = views.when(h.last_check_at)
    return f"{when}: {said}" if said else when


def _reasons(h: Health) -> str:
    return escape("; ".join(h.reasons)) if h.reasons else "-"
