"""The ``lobflows`` command: validate, serve, run and inspect flows."""

from __future__ import annotations

import enum
import json
import sys
from pathlib import Path
from typing import Annotated, Any, TypeVar

import orjson
import typer
from rich.markup import escape

from lobflows import errors, logs
from lobflows.cli import views
from lobflows.cli.common import (
    EXIT_NOT_FOUND,
    EXIT_PROBLEMS,
    EXIT_USAGE,
    cli_actor,
    console,
    err_console,
    fail,
    options,
    run_async,
    with_store,
)
from lobflows.settings import DEFAULT_DATABASE_URL, Settings

T = TypeVar("T")
# The longest discard reason kept, in characters.
MAX_REASON_CHARS = 2000

app = typer.Typer(
    name="lobflows",
    help="Durable, documented flows between line-of-business systems.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
runs_app = typer.Typer(help="Inspect runs.", no_args_is_help=True)
flows_app = typer.Typer(
    help="Stored flow versions and the runs each has in flight.", no_args_is_help=True
)
dlq_app = typer.Typer(
    help="Work the dead letter queue: list, show, replay, discard.",
    no_args_is_help=True,
)
app.add_typer(runs_app, name="runs")
app.add_typer(dlq_app, name="dlq")
app.add_typer(flows_app, name="flows")

FlowsDir = Annotated[
    Path,
    typer.Argument(
        help="Folder of flow files (and connections.yaml).", envvar="LOBFLOWS_FLOWS"
    ),
]


class LogLevel(enum.StrEnum):
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"


class LogFormat(enum.StrEnum):
    text = "text"
    json = "json"


class RunStatus(enum.StrEnum):
    queued = "queued"
    running = "running"
    waiting = "waiting"
    succeeded = "succeeded"
    failed = "failed"


class LetterStatus(enum.StrEnum):
    open = "open"
    replayed = "replayed"
    discarded = "discarded"
    all = "all"


@app.callback()
def main_options(
    db: Annotated[
        str,
        typer.Option(
            "--db",
            envvar="LOBFLOWS_DB",
            help="Run store URL: sqlite:///file.db or postgresql://…",
        ),
    ] = DEFAULT_DATABASE_URL,
    secrets_file: Annotated[
        Path | None,
        typer.Option(
            "--secrets",
            envvar="LOBFLOWS_SECRETS_FILE",
            help="YAML file of secret name: value.",
        ),
    ] = None,
    api_token: Annotated[
        str | None,
        typer.Option(
            "--api-token",
            envvar="LOBFLOWS_API_TOKEN",
            help="Bearer token that opens the REST API.",
            show_default=False,
        ),
    ] = None,
    public_url: Annotated[
        str,
        typer.Option(
            "--public-url",
            envvar="LOBFLOWS_PUBLIC_URL",
            help="Base URL people reach the server at, for task links.",
        ),
    ] = "http://127.0.0.1:8700",
    lease_seconds: Annotated[
        float,
        typer.Option(
            envvar="LOBFLOWS_LEASE_SECONDS",
            help="Lease of a claimed run without a heartbeat.",
        ),
    ] = 30.0,
    concurrency: Annotated[
        int,
        typer.Option(
            envvar="LOBFLOWS_CONCURRENCY", help="Runs in progress per process."
        ),
    ] = 64,
    step_data_budget: Annotated[
        int,
        typer.Option(
            "--step-data-budget-bytes",
            envvar="LOBFLOWS_STEP_DATA_BUDGET_BYTES",
            help="Stored data per step; larger data is cut with a marker.",
        ),
    ] = 65_536,
    poll_interval: Annotated[
        float,
        typer.Option(
            envvar="LOBFLOWS_POLL_INTERVAL", help="Seconds between looks for due runs."
        ),
    ] = 0.5,
    log_level: Annotated[
        LogLevel,
        typer.Option(
            envvar="LOBFLOWS_LOG_LEVEL",
            case_sensitive=False,
            help="Log lines at or above this level.",
        ),
    ] = LogLevel.INFO,
    log_format: Annotated[
        LogFormat,
        typer.Option(
            envvar="LOBFLOWS_LOG_FORMAT", help="Lines as key=value text or JSON."
        ),
    ] = LogFormat.text,
    session_hours: Annotated[
        float,
        typer.Option(
            envvar="LOBFLOWS_SESSION_HOURS", help="How long a dashboard sign-in lasts."
        ),
    ] = 12.0,
    oidc_issuer: Annotated[
        str | None,
        typer.Option(
            envvar="LOBFLOWS_OIDC_ISSUER",
            help="OpenID Connect issuer URL, for single sign-on.",
        ),
    ] = None,
    oidc_client_id: Annotated[
        str | None,
        typer.Option(
            envvar="LOBFLOWS_OIDC_CLIENT_ID", help="Client id at the OIDC issuer."
        ),
    ] = None,
    oidc_roles_claim: Annotated[
        str,
        typer.Option(
            envvar="LOBFLOWS_OIDC_ROLES_CLAIM",
            help="ID token claim whose values map to roles.",
        ),
    ] = "groups",
    oidc_role_map: Annotated[
        str,
        typer.Option(
            envvar="LOBFLOWS_OIDC_ROLE_MAP",
            help="Claim value to role, as value=role,value=role.",
        ),
    ] = "",
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            "-v",
            envvar="LOBFLOWS_VERBOSE",
            help="Show tracebacks of unexpected errors.",
        ),
    ] = False,
) -> None:
    role_map = _pairs(oidc_role_map, "--oidc-role-map")
    try:
        options.settings = Settings(
            database_url=db,
            secrets_file=secrets_file,
            api_token=api_token,
            public_url=public_url,
            lease_seconds=lease_seconds,
            concurrency=concurrency,
            poll_interval_seconds=poll_interval,
            step_data_budget_bytes=step_data_budget,
            log_level=log_level.value,
            log_format=log_format.value,
            session_hours=session_hours,
            oidc_issuer=oidc_issuer or None,
            oidc_client_id=oidc_client_id or None,
            oidc_roles_claim=oidc_roles_claim,
            oidc_role_map=role_map,
        )
    except Exception as exc:
        fail(f"invalid setting: {exc}", EXIT_USAGE)
    options.verbose = verbose
    logs.configure(
        level=options.settings.log_level,
        json_lines=options.settings.log_format == "json",
    )


def _pairs(text: str, option: str) -> dict[str, str]:
    """name=value,name=value as a mapping."""
    pairs: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip():
            fail(f"{option} {item!r}: expected name=value", EXIT_USAGE)
        pairs[name.strip()] = value.strip()
    return pairs


def _read_json(path: Path, what: str) -> Any:
    try:
        return orjson.loads(path.read_bytes())
    except OSError as exc:
        fail(f"cannot read {what} {path}: {exc.strerror}", EXIT_USAGE)
    except orjson.JSONDecodeError as exc:
        fail(f"{what} {path} is not valid JSON: {exc}", EXIT_USAGE)


def _correction(path: Path | None, what: str) -> dict[str, Any] | None:
    """A replay's corrected input from a file: a JSON object, or None."""
    if path is None:
        return None
    from lobflows.store import dead_letters

    try:
        return dead_letters.checked_correction(_read_json(path, what), what=what)
    except ValueError as exc:
        fail(f"{path}: {exc}", EXIT_USAGE)
    raise AssertionError("unreachable")


# -- definitions ------------------------------------------------------------


@app.command()
def validate(
    paths: Annotated[list[Path], typer.Argument(help="Flow files or folders.")],
) -> None:
    """Check flow files; print every problem with file, line, field and what was expected.

    A folder is checked as a project: its flows, its connections.yaml, its
    monitor.yaml, and that every call and alert rule names a declared
    connection and a known action.
    """
    from lobflows.spec import loader

    problems: list[errors.Problem] = []
    for path in paths:
        if not path.exists():
            problems.append(
                errors.Problem(
                    path=str(path),
                    line=None,
                    field="",
                    message="no such file or folder",
                )
            )
    files = loader.flow_files(paths)
    loaded: dict[Path, Any] = {}
    for path in files:
        try:
            loaded[path] = loader.load_flow_file(path)
        except errors.FlowFileError as exc:
            problems.extend(exc.problems)
    for folder in (p for p in paths if p.is_dir()):
        problems.extend(
            _project_problems(
                folder, [f for p, f in loaded.items() if p.parent == folder]
            )
        )
    troubled = {problem.path for problem in problems}
    for path, flow in loaded.items():
        if str(path) in troubled:
            continue
        steps = len(flow.spec.steps)
        console.print(
            f"[green]ok[/] {escape(str(path))} [dim]({flow.name}, {steps} step"
            f"{'' if steps == 1 else 's'})[/]",
            highlight=False,
        )
    for problem in problems:
        err_console.print(str(problem), highlight=False, soft_wrap=True, markup=False)
    if problems or not files:
        fail(
            f"{len(problems)} problem(s) in {len(files)} file(s)"
            if files
            else "no flow files found",
            EXIT_PROBLEMS,
        )


def _project_problems(folder: Path, flows: list[Any]) -> list[errors.Problem]:
    from lobflows.connectors import base as connectors
    from lobflows.spec import loader

    source = folder / loader.CONNECTIONS_FILE
    try:
        declared = loader.load_connections(source)
        roles = loader.load_roles(folder / loader.ROLES_FILE)
    except errors.FlowFileError as exc:
        return exc.problems + _monitor_problems(folder, None)
    project = loader.Project(
        flows={f.name: f for f in flows}, connections=declared, roles=roles
    )
    problems = connectors.check_project(project, source=str(source))
    return problems + _monitor_problems(folder, declared)


def _monitor_problems(
    folder: Path, declared: dict[str, Any] | None
) -> list[errors.Problem]:
    """monitor.yaml's problems; its rules' connections only when they could be read."""
    from lobflows.connectors import base as connectors
    from lobflows.monitor import config as monitor_config
    from lobflows.spec import loader

    try:
        monitoring = monitor_config.load(folder)
    except errors.FlowFileError as exc:
        return exc.problems
    if declared is None:
        return []
    classes = connectors.connector_classes()
    kinds = {
        name: classes.get(str((raw or {}).get("type")))
        for name, raw in declared.items()
    }
    path = str(folder / loader.MONITOR_FILE)
    return monitor_config.rule_problems(monitoring, kinds, path)


@app.command()
def schema() -> None:
    """Print the JSON Schema of flow files, for editors."""
    from lobflows.spec import models

    document = models.Flow.model_json_schema(by_alias=True)
    document["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    document["title"] = "LoB Flows flow file"
    sys.stdout.write(json.dumps(document, indent=2) + "\n")


# -- running ----------------------------------------------------------------


@app.command()
def serve(
    flows_dir: FlowsDir,
    host: Annotated[
        str, typer.Option(envvar="LOBFLOWS_HOST", help="Address to listen on.")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(envvar="LOBFLOWS_PORT", help="Port to listen on.")
    ] = 8700,
    no_worker: Annotated[
        bool,
        typer.Option(
            "--no-worker",
            envvar="LOBFLOWS_NO_WORKER",
            help="Serve HTTP only; separate workers execute runs.",
        ),
    ] = False,
) -> None:
    """Serve webhooks and the API, and execute runs in the same process."""
    from lobflows import server

    run_async(
        server.serve(
            options.settings, flows_dir, host=host, port=port, with_worker=not no_worker
        )
    )


@app.command()
def worker(flows_dir: FlowsDir) -> None:
    """Execute due runs from the store until stopped (Ctrl-C or SIGTERM)."""
    from lobflows import server

    run_async(server.work(options.settings, flows_dir))


@app.command("run")
def run_flow(
    flow: Annotated[str, typer.Argument(help="Flow name, or path to a flow file.")],
    input_file: Annotated[
        Path | None,
        typer.Option("--input", "-i", help="JSON file with the run's input."),
    ] = None,
    flows_dir: Annotated[
        Path,
        typer.Option(
            "--flows",
            envvar="LOBFLOWS_FLOWS",
            help="Folder of flows, when FLOW is a name.",
        ),
    ] = Path("."),
    no_wait: Annotated[
        bool,
        typer.Option("--no-wait", help="Only store the run; a worker executes it."),
    ] = False,
) -> None:
    """Start a run by hand and, unless --no-wait, execute it here."""
    from lobflows import server

    data = _read_json(input_file, "input") if input_file else {}
    if flow.endswith((".yaml", ".yml")):
        flows_dir, flow = Path(flow).parent, run_async(_flow_name(Path(flow)))
    code = run_async(
        server.run_once(
            options.settings, flows_dir, flow, data, wait=not no_wait, console=console
        )
    )
    raise typer.Exit(code)


async def _flow_name(path: Path) -> str:
    return (await _load_flow(path)).name


# -- inspecting -------------------------------------------------------------


@runs_app.command("list")
def runs_list(
    flow: Annotated[str | None, typer.Option(help="Only this flow.")] = None,
    status: Annotated[
        RunStatus | None, typer.Option(help="Only runs in this status.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="How many, newest first.")] = 50,
) -> None:
    """List runs, newest first."""
    chosen = status.value if status else None
    runs = run_async(
        with_store(lambda s: s.list_runs(flow=flow, status=chosen, limit=limit))
    )
    console.print(views.runs_table(runs))


@runs_app.command("show")
def runs_show(
    run_id: Annotated[
        str, typer.Argument(help="Run id or a prefix of at least 6 characters.")
    ],
    data: Annotated[
        bool, typer.Option("--data", help="Also print each attempt's input and output.")
    ] = False,
    mapping: Annotated[
        bool,
        typer.Option(
            "--mapping", help="Also print which rule made each field of mapping steps."
        ),
    ] = False,
) -> None:
    """Show a run: each step's attempts, status, duration and (redacted) data."""

    async def load(store: Any) -> Any:
        run = await store.find_run(run_id)
        return run, await store.attempts(run.id), await store.children(run.id)

    run, attempts, children = run_async(with_store(load))
    views.print_run(console, run, attempts, with_data=data, children=tuple(children))
    if mapping:
        views.print_traces(console, attempts)


@app.command()
def signal(
    run_id: Annotated[
        str, typer.Argument(help="Run id or a prefix of at least 6 characters.")
    ],
    name: Annotated[
        str, typer.Argument(help="Signal name, as the flow's wait step names it.")
    ],
    data_file: Annotated[
        Path | None, typer.Option("--data", help="JSON file sent with the signal.")
    ] = None,
) -> None:
    """Send a named signal to a run; a run waiting for it goes on."""
    payload = _read_json(data_file, "signal data") if data_file else None

    async def send(store: Any) -> str:
        run = await store.find_run(run_id)
        await store.send_signal(run.id, name, payload)
        return run.id

    sent_to = run_async(with_store(send))
    console.print(f"Signal {name!r} sent to run {sent_to}.", highlight=False)


@flows_app.command("list")
def flows_list() -> None:
    """Every flow's versions, as stored by serve and worker, with runs in flight."""
    versions = run_async(with_store(lambda s: s.flow_versions()))
    console.print(views.flow_versions_table(versions))


@flows_app.command("diagram")
def flows_diagram(
    path: Annotated[Path, typer.Argument(help="A flow file.")],
) -> None:
    """Print the flow as a Mermaid flowchart, drawn from its steps."""
    from lobflows.spec import diagram

    loaded = run_async(_load_flow(path))
    sys.stdout.write(diagram.mermaid(loaded.spec))


async def _load_flow(path: Path) -> Any:
    from lobflows.spec import loader

    return loader.load_flow_file(path)


@flows_app.command("show")
def flows_show(flow: Annotated[str, typer.Argument(help="Flow name.")]) -> None:
    """One flow's versions: when each was stored and how many runs it still has."""
    versions = run_async(with_store(lambda s: s.flow_versions(flow)))
    if not versions:
        fail(
            f"no stored versions of flow {flow!r}",
            EXIT_NOT_FOUND,
            "a flow is stored when serve or worker loads it",
        )
    console.print(views.flow_versions_table(versions))


@dlq_app.command("list")
def dlq_list(
    status: Annotated[
        LetterStatus, typer.Option(help="Only dead letters in this status.")
    ] = LetterStatus.open,
    limit: Annotated[int, typer.Option(min=1, help="How many, newest first.")] = 100,
) -> None:
    """List dead letters, newest first."""
    chosen = None if status is LetterStatus.all else status.value
    letters = run_async(
        with_store(lambda s: s.dead_letters(status=chosen, limit=limit))
    )
    console.print(views.dead_letters_table(letters))


@dlq_app.command("show")
def dlq_show(
    dead_letter_id: Annotated[int, typer.Argument(help="Dead letter id.")],
    input_only: Annotated[
        bool,
        typer.Option(
            "--input-only",
            help="Print only the failed step's input as JSON, to correct and replay with --input.",
        ),
    ] = False,
    run_input_only: Annotated[
        bool,
        typer.Option(
            "--run-input-only",
            help="Print only the run's input as JSON, to correct and replay with --run-input.",
        ),
    ] = False,
) -> None:
    """Show a dead letter: the failed step, its input, the run's input and the error."""

    async def load(store: Any) -> Any:
        letter = await store.dead_letter(dead_letter_id)
        return letter, await store.get_run(letter.run_id)

    letter, run = run_async(with_store(load))
    if input_only or run_input_only:
        sys.stdout.write(
            json.dumps(
                letter.step_input if input_only else run.input,
                indent=2,
                ensure_ascii=False,
            )
            + "\n"
        )
        return
    views.print_dead_letter(console, letter, run)


@dlq_app.command("replay")
def dlq_replay(
    dead_letter_id: Annotated[int, typer.Argument(help="Dead letter id.")],
    input_file: Annotated[
        Path | None,
        typer.Option(
            "--input",
            "-i",
            help="JSON file with the corrected input of the failed step (call and respond steps).",
        ),
    ] = None,
    run_input_file: Annotated[
        Path | None,
        typer.Option(
            "--run-input",
            help="JSON file that replaces the run's input (the trigger payload) every step reads.",
        ),
    ] = None,
    flows_dir: Annotated[
        Path | None,
        typer.Option(
            "--flows",
            envvar="LOBFLOWS_FLOWS",
            help="Execute here with these flows, instead of leaving it to a worker.",
        ),
    ] = None,
) -> None:
    """Queue a dead-lettered run again from its failed step."""
    from lobflows import server

    corrected = _correction(input_file, "corrected input")
    corrected_run = _correction(run_input_file, "corrected run input")

    async def replay(store: Any) -> str:
        letter = await store.dead_letter(dead_letter_id)
        if corrected is not None and letter.step_input is None:
            fail(
                f"step {letter.step!r} takes no input of its own: it reads the run's input",
                EXIT_USAGE,
                f"correct the run's input instead: lobflows dlq replay {dead_letter_id} --run-input FILE",
            )
        run_id = await store.replay_dead_letter(
            dead_letter_id, corrected_input=corrected, corrected_run_input=corrected_run
        )
        await store.record_audit(
            cli_actor(),
            "replay",
            f"dead letter {letter.id}",
            {
                "run_id": run_id,
                "flow": letter.flow,
                "step": letter.step,
                "corrected_input": corrected is not None,
                "corrected_run_input": corrected_run is not None,
            },
        )
        return run_id

    run_id = run_async(with_store(replay))
    console.print(f"Run {run_id} queued again from its failed step.", highlight=False)
    if flows_dir is not None:
        raise typer.Exit(
            run_async(
                server.resume(options.settings, flows_dir, run_id, console=console)
            )
        )


@dlq_app.command("discard")
def dlq_discard(
    dead_letter_id: Annotated[int, typer.Argument(help="Dead letter id.")],
    reason: Annotated[
        str | None,
        typer.Option(
            help="Why it is closed without a replay; kept in the audit log.",
        ),
    ] = None,
) -> None:
    """Close a dead letter without replaying it."""
    reason = " ".join((reason or "").split())[:MAX_REASON_CHARS] or None

    async def discard(store: Any) -> None:
        letter = await store.dead_letter(dead_letter_id)
        await store.discard_dead_letter(letter.id)
        await store.record_audit(
            cli_actor(),
            "discard",
            f"dead letter {letter.id}",
            {
                "run_id": letter.run_id,
                "flow": letter.flow,
                "step": letter.step,
                "reason": reason,
            },
        )

    run_async(with_store(discard))
    console.print(f"Dead letter {dead_letter_id} discarded.")


@app.command()
def prune(
    batch_size: Annotated[
        int, typer.Option(help="Runs deleted per transaction.")
    ] = 500,
) -> None:
    """Delete finished runs past their flow's retention and give the space back."""
    from lobflows.store import retention

    removed = run_async(with_store(lambda s: retention.prune(s, batch_size=batch_size)))
    console.print(f"Pruned {removed} run(s).")


@app.command()
def demo(
    flows_dir: Annotated[Path, typer.Argument(help="The example to run.")] = Path(
        "examples/onboarding"
    ),
    port: Annotated[
        int, typer.Option(envvar="LOBFLOWS_PORT", help="Port of the LoB Flows server.")
    ] = 8700,
    once: Annotated[
        bool,
        typer.Option("--once", help="Exit after the sample run instead of serving on."),
    ] = False,
) -> None:
    """Run an example end to end: stand-ins for ERPNext, chat and mail, the server, one sample run."""
    from lobflows import demo as demo_module

    raise typer.Exit(
        run_async(
            demo_module.run_demo(
                options.settings, flows_dir, port=port, once=once, console=console
            )
        )
    )


@app.command("test")
def test_fixtures(flows_dir: FlowsDir) -> None:
    """Run the mapping fixtures (mappings/tests/<mapping>.yaml) and show a diff for each failure."""
    from lobflows.transform import fixtures

    if not fixtures.fixture_files(flows_dir):
        fail(
            f"no mapping fixtures in {flows_dir / 'mappings' / fixtures.TESTS_FOLDER}",
            EXIT_NOT_FOUND,
            "add <mapping>.yaml there: a list of cases with name, input and expected",
        )
    results = run_async(_run_fixtures(flows_dir))
    for result in results:
        mark = "[green]ok[/]  " if result.passed else "[red]FAIL[/]"
        console.print(
            f"{mark} {escape(result.mapping)}: {escape(result.name)}", highlight=False
        )
        if result.detail:
            console.print(escape(result.detail), highlight=False, markup=False)
    failed = sum(1 for r in results if not r.passed)
    summary = f"{len(results) - failed} passed, {failed} failed"
    if failed:
        fail(summary, EXIT_PROBLEMS)
    console.print(summary, highlight=False)


async def _run_fixtures(flows_dir: Path) -> Any:
    from lobflows.transform import fixtures

    return fixtures.run_fixtures(flows_dir)


# Sub-commands kept in modules of their own; they use the helpers above.
from lobflows.cli.bulk import map_command  # noqa: E402
from lobflows.cli.connectors import connectors_app  # noqa: E402
from lobflows.cli.docs import docs_command  # noqa: E402
from lobflows.cli.health import health_app  # noqa: E402
from lobflows.cli.secrets import secrets_app  # noqa: E402
from lobflows.cli.tasks import tasks_app  # noqa: E402
from lobflows.cli.users import users_app  # noqa: E402

app.add_typer(tasks_app, name="tasks")
app.add_typer(secrets_app, name="secrets")
app.add_typer(users_app, name="users")
app.add_typer(health_app, name="health")
app.add_typer(connectors_app, name="connectors")
app.command("docs")(docs_command)
app.command("map")(map_command)


def main() -> None:
    app()
