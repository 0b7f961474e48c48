"""Webhook throughput of LoB Flows against a bare Starlette baseline, in one run.

The workload: a synchronous webhook receives a contact, a map step makes
``{name, email}`` of it, a call step POSTs that to a local HTTP sink, and a
respond step answers the caller with JSON. The baseline does the same work
in a bare Starlette endpoint with nothing stored. wrk drives each server
with keep-alive connections at each concurrency level; every server, the
sink and wrk run on 127.0.0.1 only.

    python bench/webhook_throughput.py [--seconds 10] [--levels 1,10,50]
        [--stores sqlite,postgresql] [--profile]

Needs: wrk (Debian: ``apt-get install wrk``); for the postgresql store a
PostgreSQL server that lets ``postgres`` create databases on 127.0.0.1:5432
(``--postgres-url``); for ``--profile`` py-spy (``pip install py-spy``) and
the right to attach to a process (root, or ptrace allowed). Results go to
``bench/results/<timestamp>.json``; see bench/README.md for how to read them.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import importlib.metadata
import json
import os
import platform
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import profile_summary
from webhook_servers import HOOK_PATH, HOST, SINK_PATH

HERE = Path(__file__).resolve().parent
RESULTS_DIR = HERE / "results"
BODY = {"firstName": "Ada", "lastName": "Lovelace", "email": "ada@example.com"}
EXPECTED_NAME = "Ada Lovelace"
STORES = ("sqlite", "postgresql")
STORE_TITLES = {
    "sqlite": "LoB Flows, SQLite (WAL, synchronous=FULL, the default)",
    "postgresql": "LoB Flows, PostgreSQL",
}
POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
FLOW_STEPS = 3
# From PERFORMANCE.md.
TARGET_RUNS_PER_SECOND = 500.0
TARGET_P50_MS = 5.0
TARGET_STEP_OVERHEAD_MS = {"sqlite": 1.0, "postgresql": 5.0}
WRK_TIMEOUT = "15s"
SETTLE_SECONDS = 15.0


class BenchError(Exception):
    """A precondition or a server failed; the message says what to do."""


# -- results ---------------------------------------------------------------


@dataclass
class WrkResult:
    """What wrk reported for one level."""

    connections: int
    requests: int
    seconds: float
    requests_per_second: float
    p50_ms: float
    p75_ms: float
    p90_ms: float
    p99_ms: float
    non_2xx: int = 0
    socket_errors: int = 0

    @property
    def errors(self) -> int:
        return self.non_2xx + self.socket_errors


@dataclass
class LevelResult:
    """One concurrency level against one server."""

    wrk: WrkResult
    window_seconds: float
    completed_runs: int | None = None
    runs_per_second: float | None = None
    failed_runs: int | None = None
    sink_calls: int | None = None


@dataclass
class ServerResult:
    """Every level against one server, and where its profile went."""

    name: str
    levels: list[LevelResult] = field(default_factory=list)
    profile: str | None = None

    def at(self, connections: int) -> LevelResult | None:
        for level in self.levels:
            if level.wrk.connections == connections:
                return level
        return None


# -- child processes ---------------------------------------------------------


@contextlib.contextmanager
def child(
    name: str, command: list[str], log_dir: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """Start a process in its own session; stop it (and only it) on the way out."""
    log_path = log_dir / f"{name}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOBFLOWS_")}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # Ctrl-C reaches the bench, which then stops it
        )
    try:
        yield process
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group we created, then SIGKILL after five seconds."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def log_tail(log_dir: Path, name: str, lines: int = 30) -> str:
    """The last lines of a child's log, for error messages."""
    path = log_dir / f"{name}.log"
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def wait_ready(
    name: str, process: subprocess.Popen[bytes], url: str, log_dir: Path
) -> None:
    """Poll a GET until it answers 200; fail with the child's log if it dies first."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchError(
                f"{name} exited with {process.returncode}:\n{log_tail(log_dir, name)}"
            )
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(url, timeout=2) as answer,
        ):
            if answer.status == 200:
                return
        time.sleep(0.1)
    raise BenchError(
        f"{name} did not answer {url} within 60 s:\n{log_tail(log_dir, name)}"
    )


def smoke_test(name: str, url: str, log_dir: Path) -> None:
    """One request before the load: the reply must be the mapped contact."""
    request = urllib.request.Request(
        url,
        data=json.dumps(BODY).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=15) as answer:
            status, reply = answer.status, json.loads(answer.read())
    except (urllib.error.URLError, ValueError) as exc:
        raise BenchError(
            f"{name}: the first request failed: {exc}\n{log_tail(log_dir, name)}"
        ) from None
    if (
        status != 200
        or not isinstance(reply, dict)
        or reply.get("name") != EXPECTED_NAME
    ):
        raise BenchError(
            f"{name}: unexpected reply {status} {reply!r}\n{log_tail(log_dir, name)}"
        )


def sink_count(port: int) -> int:
    """How many POSTs the sink has received so far."""
    with urllib.request.urlopen(f"http://{HOST}:{port}/count", timeout=5) as answer:
        return int(json.loads(answer.read())["received"])


# -- wrk ---------------------------------------------------------------------


def require_wrk() -> str:
    """The path of wrk, or a clear error naming the package to install."""
    path = shutil.which("wrk")
    if path is None:
        raise BenchError(
            "wrk is not installed: install it with `apt-get install wrk` (Debian/Ubuntu)"
        )
    return path


def wrk_version(wrk: str) -> str:
    """wrk's version line, for the results file."""
    done = subprocess.run(
        [wrk, "--version"], capture_output=True, text=True, check=False
    )
    return (
        (done.stdout + done.stderr).splitlines()[0].strip()
        if done.stdout + done.stderr
        else "?"
    )


def write_wrk_script(directory: Path) -> Path:
    """The Lua script that makes every wrk request the same JSON POST."""
    path = directory / "post.lua"
    path.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = [[{json.dumps(BODY)}]]\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
    )
    return path


def run_wrk(
    wrk: str, url: str, script: Path, connections: int, seconds: float
) -> WrkResult:
    """Drive one level and parse what wrk prints."""
    command = [
        wrk,
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        WRK_TIMEOUT,
        "--latency",
        "-s",
        str(script),
        url,
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=seconds + 60, check=False
    )
    if done.returncode != 0:
        raise BenchError(f"wrk failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return parse_wrk(done.stdout, connections)


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def _milliseconds(number: str, unit: str) -> float:
    return float(number) * _UNITS_MS[unit]


def parse_wrk(text: str, connections: int) -> WrkResult:
    """Requests, rate, percentiles and errors from wrk's text report (with --latency)."""
    total = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m|h)", text)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", text)
    percentiles = {
        int(p): _milliseconds(n, u)
        for p, n, u in re.findall(
            r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s|m|h)\s*$", text, re.MULTILINE
        )
    }
    if total is None or rate is None or len(percentiles) != 4:
        raise BenchError(f"cannot read wrk's report:\n{text}")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    return WrkResult(
        connections=connections,
        requests=int(total.group(1)),
        seconds=_milliseconds(total.group(2), total.group(3)) / 1000,
        requests_per_second=float(rate.group(1)),
        p50_ms=percentiles[50],
        p75_ms=percentiles[75],
        p90_ms=percentiles[90],
        p99_ms=percentiles[99],
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(g) for g in sockets.groups()) if sockets else 0,
    )


# -- the run store -------------------------------------------------------------


class RunCounter:
    """Counts runs straight from the store's tables, read-only."""

    def __init__(self, connection: Any, placeholder: str) -> None:
        self.connection = connection
        self.placeholder = placeholder

    @classmethod
    def sqlite(cls, path: Path) -> RunCounter:
        return cls(sqlite3.connect(path, timeout=30, isolation_level=None), "?")

    @classmethod
    def postgresql(cls, url: str) -> RunCounter:
        import psycopg

        return cls(psycopg.connect(url, autocommit=True), "%s")

    def _scalar(self, sql: str, *params: Any) -> int:
        row = self.connection.execute(
            sql.replace("?", self.placeholder), params
        ).fetchone()
        return int(row[0])

    def finished_between(self, status: str, start: float, end: float) -> int:
        """Runs with this status whose finished_at lies in [start, end)."""
        sql = "SELECT count(*) FROM runs WHERE status = ? AND finished_at >= ? AND finished_at < ?"
        return self._scalar(sql, status, start, end)

    def active(self) -> int:
        """Runs still queued or running."""
        return self._scalar(
            "SELECT count(*) FROM runs WHERE status IN ('queued', 'running')"
        )

    def settle(self) -> int:
        """Wait until no run is queued or running (bounded); return how many still are."""
        deadline = time.monotonic() + SETTLE_SECONDS
        while (active := self.active()) and time.monotonic() < deadline:
            time.sleep(0.1)
        return active

    def close(self) -> None:
        self.connection.close()


@contextlib.contextmanager
def postgres_database(admin_url: str) -> Iterator[str]:
    """A fresh database for one measurement, dropped afterwards whatever happens."""
    import psycopg

    name = f"lobflows_bench_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as exc:
        raise BenchError(
            f"cannot create a PostgreSQL database via {admin_url}: {exc}"
        ) from None
    try:
        yield urllib.parse.urlsplit(admin_url)._replace(path=f"/{name}").geturl()
    finally:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- the flow ------------------------------------------------------------------


FLOW_YAML = f"""\
flow: contact-to-sink
version: 1
description: The benchmark workload; map, call, respond.
card:
  trigger: wrk posts a contact to a synchronous webhook
  data: {{entity: contact, sensitivity: internal}}
  transform: firstName and lastName become name; email is kept
  target: a local HTTP sink that answers 200
  on_failure: retry 3x with backoff, then dead letter
  owner: bench@example.com
trigger:
  webhook: {{path: {HOOK_PATH}, mode: sync}}
retry: {{max_attempts: 3, initial_delay_seconds: 0.2}}
steps:
  - id: contact
    map:
      name: "{{{{ input.firstName }}}} {{{{ input.lastName }}}}"
      email: {{from: input.email}}
  - id: deliver
    call: sink.request
    with:
      method: POST
      path: {SINK_PATH}
      json: "{{{{ steps.contact }}}}"
  - id: reply
    respond:
      status: 200
      body:
        ok: true
        name: "{{{{ steps.contact.name }}}}"
        delivered: "{{{{ steps.deliver.status }}}}"
"""


def write_flows(directory: Path, sink_port: int) -> Path:
    """The flow file and a connections.yaml pointing the http connection at the sink."""
    flows = directory / "flows"
    flows.mkdir()
    (flows / "contact-to-sink.yaml").write_text(FLOW_YAML)
    (flows / "connections.yaml").write_text(
        f"connections:\n  sink:\n    type: http\n    base_url: http://{HOST}:{sink_port}\n"
    )
    return flows


# -- measuring -----------------------------------------------------------------


@dataclass
class Plan:
    """What to run, read from the command line."""

    seconds: float
    warmup_seconds: float
    levels: list[int]
    stores: list[str]
    profile: bool
    profile_format: str
    postgres_url: str
    baseline_loop: str
    load_at_start: float
    stamp: str
    wrk: str
    work_dir: Path
    script: Path
    sink_port: int


def warm_up(plan: Plan, url: str) -> None:
    """Unmeasured load first, so that caches and connection pools are warm."""
    if plan.warmup_seconds > 0:
        run_wrk(
            plan.wrk, url, plan.script, min(10, max(plan.levels)), plan.warmup_seconds
        )


def measure_baseline(plan: Plan) -> ServerResult:
    """The bare Starlette endpoint at every level."""
    port = free_port()
    command = [
        sys.executable,
        str(HERE / "webhook_servers.py"),
        "baseline",
        "--port",
        str(port),
        "--sink-port",
        str(plan.sink_port),
        "--loop",
        plan.baseline_loop,
    ]
    result = ServerResult("baseline")
    with child("baseline", command, plan.work_dir) as process:
        wait_ready("baseline", process, f"http://{HOST}:{port}/healthz", plan.work_dir)
        url = f"http://{HOST}:{port}{HOOK_PATH}"
        smoke_test("baseline", url, plan.work_dir)
        warm_up(plan, url)
        for connections in plan.levels:
            result.levels.append(measure_level(plan, url, connections))
            print_progress("baseline", result.levels[-1])
    return result


def measure_level(
    plan: Plan, url: str, connections: int, counter: RunCounter | None = None
) -> LevelResult:
    """One wrk level; with a counter, also the runs the store saw finish meanwhile."""
    sink_before = sink_count(plan.sink_port)
    start = time.time()
    wrk = run_wrk(plan.wrk, url, plan.script, connections, plan.seconds)
    end = time.time()
    level = LevelResult(wrk=wrk, window_seconds=end - start)
    if counter is not None:
        counter.settle()
        level.completed_runs = counter.finished_between("succeeded", start, end)
        level.failed_runs = counter.finished_between("failed", start, end)
        level.runs_per_second = level.completed_runs / level.window_seconds
    level.sink_calls = sink_count(plan.sink_port) - sink_before
    return level


@contextlib.contextmanager
def store_url(plan: Plan, store: str) -> Iterator[str]:
    """A store URL for a fresh, empty database of the given kind."""
    if store == "sqlite":
        yield f"sqlite:///{plan.work_dir / f'runs-{uuid.uuid4().hex[:8]}.db'}"
    else:
        with postgres_database(plan.postgres_url) as url:
            yield url


def open_counter(url: str) -> RunCounter:
    """A read-only run counter for the store behind a URL."""
    if url.startswith("sqlite:///"):
        return RunCounter.sqlite(Path(url[len("sqlite:///") :]))
    return RunCounter.postgresql(url)


def measure_store(plan: Plan, store: str, flows: Path) -> ServerResult:
    """LoB Flows on one store at every level, counting finished runs in the store."""
    result = ServerResult(store)
    port = free_port()
    name = f"lobflows-{store}"
    with store_url(plan, store) as url:
        command = [
            sys.executable,
            "-m",
            "lobflows",
            "--db",
            url,
            "--log-level",
            "WARNING",
            "serve",
            str(flows),
            "--port",
            str(port),
        ]
        with child(name, command, plan.work_dir) as process:
            wait_ready(name, process, f"http://{HOST}:{port}/healthz", plan.work_dir)
            hook = f"http://{HOST}:{port}{HOOK_PATH}"
            smoke_test(name, hook, plan.work_dir)
            counter = open_counter(url)
            try:
                warm_up(plan, hook)
                for connections in plan.levels:
                    result.levels.append(
                        measure_profiled(
                            plan, result, process, hook, connections, counter
                        )
                    )
                    print_progress(name, result.levels[-1])
            finally:
                counter.close()
    return result


def measure_profiled(
    plan: Plan,
    result: ServerResult,
    process: subprocess.Popen[bytes],
    url: str,
    connections: int,
    counter: RunCounter,
) -> LevelResult:
    """A level, with py-spy attached when this is the level to profile."""
    counter.settle()
    if not plan.profile or connections != profiled_level(plan.levels):
        return measure_level(plan, url, connections, counter)
    output = (
        RESULTS_DIR
        / f"{plan.stamp}-{result.name}-c{connections}.{profile_suffix(plan)}"
    )
    with profiler(plan, process.pid, output):
        level = measure_level(plan, url, connections, counter)
    result.profile = str(output.relative_to(HERE.parent)) if output.exists() else None
    return level


def profiled_level(levels: list[int]) -> int:
    """c=50 when measured, else the highest level."""
    return 50 if 50 in levels else max(levels)


def profile_suffix(plan: Plan) -> str:
    return {"raw": "txt", "flamegraph": "svg", "speedscope": "json"}[
        plan.profile_format
    ]


def find_py_spy() -> str | None:
    """py-spy beside this Python, else on the PATH, else None."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


@contextlib.contextmanager
def profiler(plan: Plan, pid: int, output: Path) -> Iterator[None]:
    """py-spy record for the length of one level; the samples go to `output`."""
    py_spy = find_py_spy()
    assert py_spy is not None  # checked before any server starts
    RESULTS_DIR.mkdir(exist_ok=True)
    command = [
        py_spy,
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(max(1, int(plan.seconds))),
        "--format",
        plan.profile_format,
        "--output",
        str(output),
        "--threads",
    ]
    log_path = plan.work_dir / "py-spy.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield
        process.wait(timeout=plan.seconds + 30)
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=10)
    if process.returncode != 0 or not output.exists():
        print(
            f"py-spy failed ({process.returncode}):\n{log_path.read_text(errors='replace')}"
        )


# -- reporting -----------------------------------------------------------------


def print_progress(name: str, level: LevelResult) -> None:
    runs = (
        "" if level.runs_per_second is None else f", {level.runs_per_second:.1f} runs/s"
    )
    print(
        f"  {name} c={level.wrk.connections}: {level.wrk.requests_per_second:.1f} req/s"
        f"{runs}, p50 {level.wrk.p50_ms:.2f} ms",
        flush=True,
    )


def ratio(value: float | None, base: float | None) -> str:
    if value is None or not base:
        return "-"
    return f"{value / base:.3f}"


def number(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


HEADER = (
    f"{'c':>4} {'req/s':>10} {'runs/s':>10} {'p50 ms':>9} {'p99 ms':>9} "
    f"{'req/s ÷ base':>13} {'p50 ÷ base':>11} {'errors':>7}"
)


def table(title: str, server: ServerResult, baseline: ServerResult | None) -> str:
    """Rows per level; ratios against the baseline at the same level."""
    lines = [title, HEADER]
    for level in server.levels:
        w = level.wrk
        base = baseline.at(w.connections) if baseline else None
        lines.append(
            f"{w.connections:>4} {number(w.requests_per_second):>10} "
            f"{number(level.runs_per_second):>10} {number(w.p50_ms, 2):>9} "
            f"{number(w.p99_ms, 2):>9} "
            f"{ratio(w.requests_per_second, base.wrk.requests_per_second if base else None):>13} "
            f"{ratio(w.p50_ms, base.wrk.p50_ms if base else None):>11} "
            f"{w.errors + (level.failed_runs or 0):>7}"
        )
    return "\n".join(lines)


@dataclass(frozen=True)
class TargetCheck:
    """One target of PERFORMANCE.md against what this run measured."""

    target: str
    limit: str
    measured: str
    verdict: str


def check_targets(
    stores: dict[str, ServerResult], baseline: ServerResult
) -> list[TargetCheck]:
    """Every target of PERFORMANCE.md that this benchmark can judge."""
    checks = [_runs_target(stores.get("sqlite")), _p50_target(stores.get("sqlite"))]
    for store, server in stores.items():
        checks.append(_overhead_target(store, server, baseline))
    return checks


def _verdict(ok: bool | None) -> str:
    return "not measured" if ok is None else ("met" if ok else "missed")


def _runs_target(server: ServerResult | None) -> TargetCheck:
    level = server.at(50) if server else None
    value = level.runs_per_second if level else None
    ok = None if value is None else value >= TARGET_RUNS_PER_SECOND
    return TargetCheck(
        "durable runs/s, SQLite, c=50",
        f">= {TARGET_RUNS_PER_SECOND:.0f}",
        number(value),
        _verdict(ok),
    )


def _p50_target(server: ServerResult | None) -> TargetCheck:
    level = server.at(1) if server else None
    value = level.wrk.p50_ms if level else None
    ok = None if value is None else value <= TARGET_P50_MS
    return TargetCheck(
        "p50 latency, SQLite, c=1",
        f"<= {TARGET_P50_MS:.0f} ms",
        f"{number(value, 2)} ms",
        _verdict(ok),
    )


def _overhead_target(
    store: str, server: ServerResult, baseline: ServerResult
) -> TargetCheck:
    """Engine overhead per step, estimated as (p50 - baseline p50) / steps at c=1."""
    level, base = server.at(1), baseline.at(1)
    value = None
    if level and base:
        value = (level.wrk.p50_ms - base.wrk.p50_ms) / FLOW_STEPS
    limit = TARGET_STEP_OVERHEAD_MS[store]
    ok = None if value is None else value <= limit
    return TargetCheck(
        f"engine overhead per step, {store}, c=1 (estimate)",
        f"<= {limit:.0f} ms",
        f"{number(value, 2)} ms",
        _verdict(ok),
    )


def targets_text(checks: list[TargetCheck]) -> str:
    lines = ["Targets (PERFORMANCE.md)"]
    for c in checks:
        lines.append(
            f"  {c.target:<52} {c.limit:>9}   measured {c.measured:>10}   {c.verdict}"
        )
    return "\n".join(lines)


def report(plan: Plan, baseline: ServerResult, stores: dict[str, ServerResult]) -> str:
    """Every table and the targets, as printed at the end."""
    title = f"Baseline: Starlette + httpx, nothing stored (uvicorn loop {plan.baseline_loop})"
    parts = [table(title, baseline, None)]
    for store, server in stores.items():
        parts.append(table(STORE_TITLES[store], server, baseline))
    parts.append(targets_text(check_targets(stores, baseline)))
    parts.append(
        f"{plan.seconds:g} s per level after {plan.warmup_seconds:g} s warm-up; "
        "runs/s counts runs the store marked succeeded during the level; "
        "errors are non-2xx replies, socket errors and failed runs.\n"
        f"Load average (1 min) at start {plan.load_at_start:.2f}, at end "
        f"{os.getloadavg()[0]:.2f}, on {os.cpu_count()} CPUs: "
        "other work on the machine moves absolute figures; compare ratios."
    )
    return "\n\n".join(parts)


def write_json(
    plan: Plan, baseline: ServerResult, stores: dict[str, ServerResult], wrk: str
) -> Path:
    """Every figure of the run, to bench/results/<timestamp>.json."""
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"{plan.stamp}.json"
    document = {
        "benchmark": "webhook_throughput",
        "started_at": plan.stamp,
        "seconds_per_level": plan.seconds,
        "warmup_seconds": plan.warmup_seconds,
        "baseline_loop": plan.baseline_loop,
        "levels": plan.levels,
        "machine": {"load_average_at_start": plan.load_at_start, **machine_facts(wrk)},
        "baseline": dataclasses.asdict(baseline),
        "stores": {name: dataclasses.asdict(server) for name, server in stores.items()},
        "targets": [dataclasses.asdict(c) for c in check_targets(stores, baseline)],
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


def machine_facts(wrk: str) -> dict[str, Any]:
    """What the figures depend on besides the code."""
    return {
        "cpus": os.cpu_count(),
        "load_average_at_end": os.getloadavg()[0],
        "platform": platform.platform(),
        "python": platform.python_version(),
        "lobflows": importlib.metadata.version("lobflows"),
        "wrk": wrk_version(wrk),
    }


def print_profile_summary(stores: dict[str, ServerResult], plan: Plan) -> None:
    """Where each profile went, and for raw profiles the hot spots."""
    for server in stores.values():
        if server.profile is None:
            continue
        print(f"\nProfile of LoB Flows on {server.name}: {server.profile}")
        if plan.profile_format == "raw":
            text = (HERE.parent / server.profile).read_text()
            print(profile_summary.report(profile_summary.summarise(text), top=15))


# -- command line --------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The options, checked."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="Load per level (default 10)."
    )
    parser.add_argument(
        "--warmup", type=float, default=3.0, help="Warm-up per server (default 3)."
    )
    parser.add_argument(
        "--levels", default="1,10,50", help="Concurrent connections, comma-separated."
    )
    parser.add_argument(
        "--stores", default="sqlite,postgresql", help="sqlite, postgresql or both."
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="py-spy record at c=50 (or the top level).",
    )
    parser.add_argument(
        "--profile-format",
        choices=["raw", "flamegraph", "speedscope"],
        default="raw",
        help="raw (collapsed stacks, summarised here), flamegraph (SVG) or speedscope (JSON).",
    )
    parser.add_argument(
        "--postgres-url",
        default=POSTGRES_ADMIN_URL,
        help="Admin URL for CREATE DATABASE.",
    )
    parser.add_argument(
        "--baseline-loop",
        choices=["auto", "asyncio", "uvloop"],
        default="auto",
        help="uvicorn's event loop for the baseline (default auto: uvloop when installed).",
    )
    args = parser.parse_args(argv)
    try:
        args.level_list = [int(x) for x in args.levels.split(",") if x.strip()]
    except ValueError:
        parser.error("--levels needs positive integers, e.g. 1,10,50")
    args.store_list = [x.strip() for x in args.stores.split(",") if x.strip()]
    if not args.level_list or min(args.level_list) < 1:
        parser.error("--levels needs positive integers, e.g. 1,10,50")
    if unknown := set(args.store_list) - set(STORES):
        parser.error(
            f"unknown store(s) {sorted(unknown)}; expected sqlite and/or postgresql"
        )
    if args.seconds < 1:
        parser.error("--seconds must be at least 1")
    return args


def check_profiler(wanted: bool) -> None:
    """Fail before starting anything if --profile cannot work."""
    if wanted and find_py_spy() is None:
        raise BenchError(
            "--profile needs py-spy: install it with `pip install py-spy` "
            "(into the same environment as LoB Flows) and run as root or with ptrace allowed"
        )


def run(args: argparse.Namespace, work_dir: Path) -> None:
    """Start the sink, measure the baseline and each store, report."""
    wrk = require_wrk()
    check_profiler(args.profile)
    sink_port = free_port()
    sink_command = [
        sys.executable,
        str(HERE / "webhook_servers.py"),
        "sink",
        "--port",
        str(sink_port),
    ]
    with child("sink", sink_command, work_dir) as sink:
        wait_ready("sink", sink, f"http://{HOST}:{sink_port}/healthz", work_dir)
        plan = Plan(
            seconds=args.seconds,
            warmup_seconds=args.warmup,
            levels=args.level_list,
            stores=args.store_list,
            profile=args.profile,
            profile_format=args.profile_format,
            postgres_url=args.postgres_url,
            baseline_loop=args.baseline_loop,
            load_at_start=os.getloadavg()[0],
            stamp=dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ"),
            wrk=wrk,
            work_dir=work_dir,
            script=write_wrk_script(work_dir),
            sink_port=sink_port,
        )
        flows = write_flows(work_dir, sink_port)
        print(
            f"Measuring: {plan.seconds:g} s per level, levels {plan.levels}", flush=True
        )
        baseline = measure_baseline(plan)
        stores = {store: measure_store(plan, store, flows) for store in plan.stores}
    print()
    print(report(plan, baseline, stores))
    print_profile_summary(stores, plan)
    print(
        f"\nResults: {write_json(plan, baseline, stores, wrk).relative_to(HERE.parent)}"
    )


def _interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; children and temporary databases go away however it ends."""
    args = parse_args(argv)
    # Explicit, since a shell may start a background job with SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        with tempfile.TemporaryDirectory(prefix="lobflows-bench-") as work_dir:
            run(args, Path(work_dir))
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "\ninterrupted; every server stopped and temporary databases dropped",
            file=sys.stderr,
        )
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
