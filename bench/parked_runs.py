"""Runs parked on a wait step: worker memory, signal-to-resume latency, step cost.

Three measures, each on a fresh run store and a fresh ``lobflows serve``
process (web and worker in one), on SQLite and on PostgreSQL:

1. N runs of a ``map`` → ``wait: {signal: go}`` → ``map`` flow are started
   through the flow's webhook and park at the wait; the server's resident
   memory (VmRSS from /proc) is read with 0 and with N runs parked.
2. Every parked run is then signalled through the REST API at a steady rate;
   signal-to-resume is the time from sending the signal to the wait step's
   success record, both read from ``time.time()`` on this machine.
3. Engine overhead per step: runs of a 40-step and of a 1-step flow of
   constant ``map`` steps, one at a time and many at once, through
   synchronous webhooks; (t40 - t1) / 39 removes the fixed cost of a run.

    python bench/parked_runs.py [--counts 1000,10000] [--stores sqlite,postgresql]
        [--signal-rate 100] [--runs 200] [--concurrent 50]

Needs LoB Flows installed; for the postgresql store a
PostgreSQL server that lets ``postgres`` create databases on 127.0.0.1:5432
(``--postgres-url``). Everything listens on 127.0.0.1; every server and
temporary database is removed at the end, on an error, Ctrl-C or SIGTERM. Results
go to ``bench/results/parked-<timestamp>.json``; see bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import importlib.metadata
import json
import math
import os
import platform
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from webhook_servers import HOST
from webhook_throughput import (
    POSTGRES_ADMIN_URL,
    BenchError,
    RunCounter,
    TargetCheck,
    child,
    free_port,
    log_tail,
    postgres_database,
    targets_text,
    wait_ready,
)

HERE = Path(__file__).resolve().parent
RESULTS_DIR = HERE / "results"
STORES = ("sqlite", "postgresql")
PARKED_FLOW = "parked"
PARK_PATH = "/bench/parked"
WAIT_STEP = "approval"
SIGNAL_NAME = "go"
LONG_STEPS = 40
# From PERFORMANCE.md.
TARGET_RSS_MIB = 150.0
TARGET_RSS_COUNT = 10_000
TARGET_P99_MS = 50.0
TARGET_STEP_MS = {"sqlite": 1.0, "postgresql": 5.0}
# Runs through every path before the baseline memory is read, so that lazy
# imports and warm caches count as baseline, not as the cost of parked runs.
WARMUP_RUNS = 20
CREATE_CONCURRENCY = 32
SIGNAL_CONCURRENCY = 64
PROGRESS_SECONDS = 5.0
# A wait for runs fails when their count has not moved for this long.
STALL_SECONDS = 60.0
# Messages the server logs at WARNING that this benchmark causes on purpose.
EXPECTED_WARNINGS = ("webhook_unsigned",)


# -- the flows -------------------------------------------------------------------


CARD = """\
card:
  trigger: the benchmark posts to a webhook
  data: {entity: benchmark record, sensitivity: internal}
  transform: constants only
  target: none; the run's own journal
  on_failure: dead letter
  owner: bench@example.com
"""

PARKED_YAML = f"""\
flow: {PARKED_FLOW}
version: 1
description: Parks at a wait step until the benchmark sends the signal.
{CARD}trigger:
  webhook: {{path: {PARK_PATH}}}
steps:
  - id: before
    map: {{stage: before}}
  - id: {WAIT_STEP}
    wait: {{signal: {SIGNAL_NAME}}}
  - id: after
    map: {{stage: after}}
"""


def steps_flow_name(steps: int) -> str:
    return f"steps{steps}"


def steps_flow_yaml(steps: int) -> str:
    """A flow of `steps` constant map steps behind a synchronous webhook."""
    name = steps_flow_name(steps)
    body = "".join(
        f"  - id: s{index:02d}\n    map: {{n: {index}}}\n"
        for index in range(1, steps + 1)
    )
    return (
        f"flow: {name}\nversion: 1\n"
        f"description: {steps} map steps of constants, one after another.\n"
        f"{CARD}trigger:\n  webhook: {{path: /bench/{name}, mode: sync}}\n"
        f"steps:\n{body}"
    )


def write_flows(directory: Path) -> Path:
    """The parked flow and the 1- and 40-step flows, in one folder."""
    flows = directory / "flows"
    flows.mkdir()
    (flows / f"{PARKED_FLOW}.yaml").write_text(PARKED_YAML)
    for steps in (1, LONG_STEPS):
        name = steps_flow_name(steps)
        (flows / f"{name}.yaml").write_text(steps_flow_yaml(steps))
    return flows


# -- the server and its store -------------------------------------------------------


class StoreReader(RunCounter):
    """Reads run and step times straight from the store's tables."""

    def count(self, flow: str, status: str) -> int:
        """Runs of a flow in a status."""
        sql = "SELECT count(*) FROM runs WHERE flow = ? AND status = ?"
        return self._scalar(sql, flow, status)

    def step_finished_at(self, step: str) -> dict[str, float]:
        """When each run's succeeded attempt of a step was recorded, by run id."""
        sql = (
            "SELECT run_id, finished_at FROM step_attempts "
            "WHERE step = ? AND status = 'succeeded'"
        )
        return dict(self._rows(sql, step))

    def signal_received_at(self, name: str) -> dict[str, float]:
        """When the server stored each run's first signal of a name, by run id."""
        sql = (
            "SELECT run_id, min(received_at) FROM signals "
            "WHERE name = ? GROUP BY run_id"
        )
        return dict(self._rows(sql, name))

    def run_seconds(self, flow: str) -> dict[str, float]:
        """Created-to-finished seconds of each succeeded run of a flow, by run id."""
        sql = (
            "SELECT id, finished_at - created_at FROM runs "
            "WHERE flow = ? AND status = 'succeeded'"
        )
        return dict(self._rows(sql, flow))

    def _rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        cursor = self.connection.execute(sql.replace("?", self.placeholder), params)
        return [tuple(row) for row in cursor.fetchall()]


@dataclass
class Server:
    """A running `lobflows serve` on a fresh store, and how to reach both."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    api_token: str
    reader: StoreReader
    log_dir: Path

    def check_alive(self) -> None:
        """Fail with the server's log if it has exited."""
        if self.process.poll() is not None:
            raise BenchError(
                f"{self.name} exited with {self.process.returncode}:\n"
                f"{log_tail(self.log_dir, self.name)}"
            )


@contextlib.contextmanager
def store_url(store: str, *, work_dir: Path, postgres_url: str) -> Iterator[str]:
    """A store URL for a fresh, empty database, removed afterwards."""
    if store == "sqlite":
        yield f"sqlite:///{work_dir / f'runs-{uuid.uuid4().hex[:8]}.db'}"
    else:
        with postgres_database(postgres_url) as url:
            yield url


def open_reader(url: str) -> StoreReader:
    """A read-only connection to the store behind a URL."""
    if url.startswith("sqlite:///"):
        return StoreReader.sqlite(Path(url[len("sqlite:///") :]))
    return StoreReader.postgresql(url)


@contextlib.contextmanager
def lobflows_server(plan: Plan, store: str, label: str) -> Iterator[Server]:
    """`lobflows serve` on a fresh store; stopped and its store removed afterwards."""
    name = f"lobflows-{store}-{label}"
    port = free_port()
    token = secrets.token_urlsafe(24)
    with store_url(
        store, work_dir=plan.work_dir, postgres_url=plan.postgres_url
    ) as url:
        command = [
            sys.executable,
            "-m",
            "lobflows",
            "--db",
            url,
            "--api-token",
            token,
            "--log-level",
            "WARNING",
            *plan.server_options,
            "serve",
            str(plan.flows),
            "--port",
            str(port),
        ]
        with child(name, command, plan.work_dir) as process:
            wait_ready(name, process, f"http://{HOST}:{port}/healthz", plan.work_dir)
            reader = open_reader(url)
            try:
                yield Server(name, process, port, token, reader, plan.work_dir)
            finally:
                reader.close()


def memory_mib(pid: int) -> tuple[float, float]:
    """Resident memory of a process now and at its peak (VmRSS, VmHWM), in MiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024  # the kernel counts kB
    return fields["VmRSS"], fields["VmHWM"]


def log_problems(server: Server) -> list[str]:
    """Warnings and errors the server logged, except the ones expected here."""
    path = server.log_dir / f"{server.name}.log"
    lines = path.read_text(errors="replace").splitlines() if path.exists() else []
    return [
        line
        for line in lines
        if line.strip() and not any(event in line for event in EXPECTED_WARNINGS)
    ]


# -- load ----------------------------------------------------------------------


class Progress:
    """Prints `done / total` with the rate every few seconds."""

    def __init__(self, label: str, total: int) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self.started = time.monotonic()
        self.printed = self.started

    def tick(self) -> None:
        self.done += 1
        now = time.monotonic()
        if now - self.printed >= PROGRESS_SECONDS:
            self.printed = now
            self.show(now)

    def show(self, now: float | None = None) -> None:
        seconds = (now or time.monotonic()) - self.started
        rate = self.done / seconds if seconds > 0 else 0.0
        print(
            f"    {self.label}: {self.done:,} / {self.total:,} ({rate:,.0f}/s)",
            flush=True,
        )


async def for_each(
    count: int, concurrency: int, action: Callable[[int], Awaitable[Any]]
) -> list[Any]:
    """Call `action(i)` for i in range(count), `concurrency` at a time, in order."""
    results: list[Any] = [None] * count
    indexes = iter(range(count))

    async def lane() -> None:
        # The lanes share one iterator: each takes the next index when free.
        for index in indexes:
            results[index] = await action(index)

    await asyncio.gather(*(lane() for _ in range(min(concurrency, count))))
    return results


Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class Client:
    """Keep-alive HTTP/1.1 connections to one server on 127.0.0.1, for JSON POSTs.

    Not httpx: its connection pool spends more CPU than the server under test
    at 64 connections (see PERFORMANCE.md), and the two share the machine.
    """

    def __init__(self, server: Server, connections: int) -> None:
        self.server = server
        self.connections = connections
        self._opened = 0
        self._idle: asyncio.Queue[Connection] = asyncio.Queue()

    async def post(
        self, path: str, body: Any = None, **headers: str
    ) -> tuple[int, bytes]:
        """POST `body` as JSON; the reply's status and body, or a BenchError."""
        payload = json.dumps(body).encode()
        connection = await self._take()
        try:
            status, reply = await exchange(connection, path, payload, headers)
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            connection[1].close()
            self._opened -= 1
            raise self._failure(path, exc) from None
        self._idle.put_nowait(connection)
        return status, reply

    async def _take(self) -> Connection:
        if self._idle.empty() and self._opened < self.connections:
            self._opened += 1
            try:
                return await asyncio.open_connection(HOST, self.server.port)
            except OSError as exc:
                self._opened -= 1
                raise self._failure("(connect)", exc) from None
        return await self._idle.get()

    def _failure(self, path: str, exc: BaseException) -> BenchError:
        # A server that died shows in its log; give it a moment to be seen exiting.
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.server.process.wait(timeout=2)
        self.server.check_alive()
        return BenchError(f"{self.server.name}: POST {path} failed: {exc!r}")

    async def close(self) -> None:
        while not self._idle.empty():
            self._idle.get_nowait()[1].close()


async def exchange(
    connection: Connection, path: str, payload: bytes, headers: dict[str, str]
) -> tuple[int, bytes]:
    """One request and its reply on a kept-alive connection: status and body."""
    reader, writer = connection
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {HOST}",
        "Content-Type: application/json",
        f"Content-Length: {len(payload)}",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + payload)
    status = int((await reader.readuntil(b"\r\n")).split()[1])
    length = None
    while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
        name, _, value = line.decode("latin-1").partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    if length is None:
        raise ValueError("reply without Content-Length")
    return status, await reader.readexactly(length)


async def post_json(
    client: Client, path: str, *, expected: int, body: Any = None, **headers: str
) -> Any:
    """POST to the server; the JSON reply if the status is the expected one."""
    status, reply = await client.post(path, body, **headers)
    if status != expected:
        raise BenchError(
            f"{client.server.name}: POST {path} answered {status}, "
            f"expected {expected}: {reply[:300].decode(errors='replace')}"
        )
    return json.loads(reply)


async def start_parked_runs(client: Client, count: int) -> list[str]:
    """Start `count` runs of the parked flow through its webhook; their ids."""
    progress = Progress("started", count)

    async def start(index: int) -> str:
        body = {"seq": index}
        reply = await post_json(client, PARK_PATH, expected=202, body=body)
        progress.tick()
        return str(reply["run_id"])

    run_ids = await for_each(count, CREATE_CONCURRENCY, start)
    if count >= 1000:
        progress.show()
    return run_ids


@dataclass
class SignalLog:
    """When each signal was sent, how long its REST call took, the rate achieved."""

    sent_at: dict[str, float] = field(default_factory=dict)
    call_ms: list[float] = field(default_factory=list)
    rate: float = 0.0


async def send_signals(client: Client, run_ids: list[str], rate: float) -> SignalLog:
    """Signal each run through the REST API at a steady rate."""
    authorization = f"Bearer {client.server.api_token}"
    slots = asyncio.Semaphore(SIGNAL_CONCURRENCY)
    signals = SignalLog()
    progress = Progress("signalled", len(run_ids))

    async def send(run_id: str) -> None:
        async with slots:
            path = f"/api/runs/{run_id}/signals/{SIGNAL_NAME}"
            signals.sent_at[run_id] = time.time()
            started = time.perf_counter()
            await post_json(client, path, expected=202, Authorization=authorization)
            signals.call_ms.append(1000 * (time.perf_counter() - started))
            progress.tick()

    started = time.monotonic()
    tasks = []
    for index, run_id in enumerate(run_ids):
        delay = started + index / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(send(run_id)))
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
    signals.rate = len(run_ids) / (time.monotonic() - started)
    return signals


async def wait_for_runs(
    server: Server,
    flow: str,
    status: str,
    expected: int,
    *,
    label: str,
    poll_seconds: float = 0.05,
) -> float:
    """Poll the store until `expected` runs of a flow have a status; seconds taken."""
    started = time.monotonic()
    printed = moved = started
    last = -1
    while (found := server.reader.count(flow, status)) < expected:
        server.check_alive()
        now = time.monotonic()
        if found != last:
            last, moved = found, now
        elif now - moved > STALL_SECONDS:
            raise BenchError(
                f"{server.name}: {found:,} of {expected:,} runs of {flow} are "
                f"{status}, and none more for {STALL_SECONDS:g} s"
            )
        if now - printed >= PROGRESS_SECONDS:
            printed = now
            print(f"    {label}: {found:,} / {expected:,}", flush=True)
        await asyncio.sleep(poll_seconds)
    return time.monotonic() - started


@contextlib.asynccontextmanager
async def client_for(server: Server, connections: int) -> AsyncIterator[Client]:
    """A client with up to `connections` kept-alive connections to the server."""
    client = Client(server, connections)
    try:
        yield client
    finally:
        await client.close()


# -- measure 1 and 2: parked runs --------------------------------------------------


@dataclass
class ParkResult:
    """Memory with N runs parked, and how fast a signal resumed each."""

    store: str
    parked: int
    seconds_to_park: float
    rss_idle_mib: float
    rss_parked_mib: float
    peak_parked_mib: float
    rss_after_mib: float
    signal_rate: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    call_p50_ms: float
    call_p99_ms: float
    stored_p50_ms: float
    stored_p99_ms: float
    server_log_problems: list[str] = field(default_factory=list)


async def park(client: Client, server: Server, count: int) -> tuple[list[str], float]:
    """Start `count` runs and wait until all are parked; their ids, seconds taken."""
    started = time.monotonic()
    run_ids = await start_parked_runs(client, count)
    await wait_for_runs(server, PARKED_FLOW, "waiting", count, label="parked")
    return run_ids, time.monotonic() - started


@dataclass
class Resumption:
    """Signal-to-resume times of a batch of parked runs, in ms, ascending."""

    from_sent_ms: list[float]
    from_stored_ms: list[float]
    signals: SignalLog


async def resume(
    client: Client,
    server: Server,
    run_ids: list[str],
    *,
    rate: float,
    finished_before: int,
) -> Resumption:
    """Signal parked runs and wait until all have finished.

    Times run from sending the signal, and from the moment the server stored
    it, to the wait step's success record; `finished_before` counts runs of
    the parked flow that had finished earlier.
    """
    signals = await send_signals(client, run_ids, rate)
    total = finished_before + len(run_ids)
    await wait_for_runs(server, PARKED_FLOW, "succeeded", total, label="resumed")
    resumed = server.reader.step_finished_at(WAIT_STEP)
    stored = server.reader.signal_received_at(SIGNAL_NAME)
    sent = signals.sent_at
    return Resumption(
        from_sent_ms=sorted(1000 * (resumed[r] - sent[r]) for r in sent),
        from_stored_ms=sorted(1000 * (resumed[r] - stored[r]) for r in sent),
        signals=signals,
    )


async def measure_parked(plan: Plan, store: str, count: int) -> ParkResult:
    """One fresh server: idle memory, memory with `count` parked, signal latency."""
    print(f"  {store}, {count:,} parked runs", flush=True)
    rate = plan.signal_rate
    with lobflows_server(plan, store, f"parked-{count}") as server:
        pid = server.process.pid
        async with client_for(server, SIGNAL_CONCURRENCY) as client:
            warm_ids, _ = await park(client, server, WARMUP_RUNS)
            await resume(client, server, warm_ids, rate=rate, finished_before=0)
            rss_idle, _ = memory_mib(pid)
            run_ids, seconds_to_park = await park(client, server, count)
            rss_parked, peak_parked = memory_mib(pid)
            print(
                f"    {count:,} parked in {seconds_to_park:.1f} s; RSS "
                f"{rss_idle:.1f} MiB idle, {rss_parked:.1f} MiB parked",
                flush=True,
            )
            resumption = await resume(
                client, server, run_ids, rate=rate, finished_before=WARMUP_RUNS
            )
            rss_after, _ = memory_mib(pid)
        problems = log_problems(server)
    latencies, calls = resumption.from_sent_ms, sorted(resumption.signals.call_ms)
    result = ParkResult(
        store=store,
        parked=count,
        seconds_to_park=seconds_to_park,
        rss_idle_mib=rss_idle,
        rss_parked_mib=rss_parked,
        peak_parked_mib=peak_parked,
        rss_after_mib=rss_after,
        signal_rate=resumption.signals.rate,
        p50_ms=percentile(latencies, 50),
        p99_ms=percentile(latencies, 99),
        max_ms=latencies[-1],
        call_p50_ms=percentile(calls, 50),
        call_p99_ms=percentile(calls, 99),
        stored_p50_ms=percentile(resumption.from_stored_ms, 50),
        stored_p99_ms=percentile(resumption.from_stored_ms, 99),
        server_log_problems=problems[:20],
    )
    print(
        f"    signal to resume at {result.signal_rate:,.0f}/s: p50 "
        f"{result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms, max "
        f"{result.max_ms:.1f} ms; REST call p99 {result.call_p99_ms:.1f} ms",
        flush=True,
    )
    return result


def percentile(ordered: list[float], share: float) -> float:
    """The nearest-rank percentile of an ascending list."""
    rank = max(1, math.ceil(share / 100 * len(ordered)))
    return ordered[rank - 1]


# -- measure 3: engine overhead per step ----------------------------------------------


@dataclass
class FlowTiming:
    """K runs of one flow, one at a time or many at once."""

    flow: str
    steps: int
    at_once: int
    runs: int
    seconds: float
    run_p50_ms: float
    reply_p50_ms: float

    @property
    def runs_per_second(self) -> float:
        return self.runs / self.seconds

    @property
    def wall_ms_per_run(self) -> float:
        return 1000 * self.seconds / self.runs


@dataclass
class OverheadResult:
    """The 1- and 40-step flows, one at a time and many at once, on one store."""

    store: str
    timings: list[FlowTiming] = field(default_factory=list)
    server_log_problems: list[str] = field(default_factory=list)

    def timing(self, steps: int, at_once: int) -> FlowTiming:
        return next(
            t for t in self.timings if t.steps == steps and t.at_once == at_once
        )

    def per_step_reply_ms(self, at_once: int) -> float:
        """(t40 - t1) / 39 from the median time the caller waits for a run."""
        long, short = self.timing(LONG_STEPS, at_once), self.timing(1, at_once)
        return (long.reply_p50_ms - short.reply_p50_ms) / (LONG_STEPS - 1)

    def per_step_wall_ms(self, at_once: int) -> float:
        """(t40 - t1) / 39 from the batch's wall time per run, until all are stored."""
        long, short = self.timing(LONG_STEPS, at_once), self.timing(1, at_once)
        return (long.wall_ms_per_run - short.wall_ms_per_run) / (LONG_STEPS - 1)


async def time_flow(
    client: Client, server: Server, steps: int, *, runs: int, at_once: int
) -> FlowTiming:
    """Post `runs` synchronous webhooks of a flow, `at_once` at a time."""
    flow = steps_flow_name(steps)
    path = f"/bench/{flow}"

    async def post(_index: int) -> tuple[str, float]:
        started = time.perf_counter()
        reply = await post_json(client, path, expected=200, body={})
        return str(reply["run_id"]), 1000 * (time.perf_counter() - started)

    finished_before = server.reader.count(flow, "succeeded")
    await for_each(WARMUP_RUNS, at_once, post)
    started = time.monotonic()
    replies = await for_each(runs, at_once, post)
    # Constant map steps journal without waiting for the commit, so the last
    # runs may still be on their way to the store when the reply comes: the
    # wall time ends when the store has them all.
    expected = finished_before + WARMUP_RUNS + runs
    await wait_for_runs(
        server, flow, "succeeded", expected, label=f"{flow} stored", poll_seconds=0.005
    )
    seconds = time.monotonic() - started
    run_seconds = server.reader.run_seconds(flow)
    return FlowTiming(
        flow=flow,
        steps=steps,
        at_once=at_once,
        runs=runs,
        seconds=seconds,
        run_p50_ms=1000 * statistics.median(run_seconds[r] for r, _ in replies),
        reply_p50_ms=statistics.median(ms for _, ms in replies),
    )


async def measure_overhead(plan: Plan, store: str) -> OverheadResult:
    """One fresh server: the 1- and 40-step flows, alone and concurrently."""
    result = OverheadResult(store)
    print(f"  {store}, engine overhead per step", flush=True)
    with lobflows_server(plan, store, "steps") as server:
        async with client_for(server, plan.concurrent) as client:
            for at_once in (1, plan.concurrent):
                for steps in (1, LONG_STEPS):
                    timing = await time_flow(
                        client, server, steps, runs=plan.runs, at_once=at_once
                    )
                    result.timings.append(timing)
                    print(
                        f"    {timing.flow}, {at_once} at a time: reply p50 "
                        f"{timing.reply_p50_ms:.2f} ms, "
                        f"{timing.runs_per_second:,.0f} runs/s",
                        flush=True,
                    )
        result.server_log_problems = log_problems(server)[:20]
    return result


# -- reporting -------------------------------------------------------------------


def _verdict(ok: bool | None) -> str:
    return "not measured" if ok is None else ("met" if ok else "missed")


def parked_table(results: list[ParkResult]) -> str:
    """One row per store and count of parked runs."""
    lines = [
        "Parked runs: server memory (MiB), signal-to-resume and REST call (ms)",
        f"{'store':<11} {'parked':>7} {'park s':>7} {'RSS idle':>9} "
        f"{'RSS parked':>11} {'peak':>7} {'RSS after':>10} {'signals/s':>10} "
        f"{'p50':>7} {'p99':>7} {'max':>7} {'stored p99':>11} {'call p99':>9}",
    ]
    for r in results:
        lines.append(
            f"{r.store:<11} {r.parked:>7,} {r.seconds_to_park:>7.1f} "
            f"{r.rss_idle_mib:>9.1f} {r.rss_parked_mib:>11.1f} "
            f"{r.peak_parked_mib:>7.1f} {r.rss_after_mib:>10.1f} "
            f"{r.signal_rate:>10,.0f} {r.p50_ms:>7.1f} {r.p99_ms:>7.1f} "
            f"{r.max_ms:>7.1f} {r.stored_p99_ms:>11.1f} {r.call_p99_ms:>9.1f}"
        )
    return "\n".join(lines)


def overhead_table(results: list[OverheadResult]) -> str:
    """One row per store, flow and concurrency."""
    lines = [
        "Engine overhead: constant map steps through a synchronous webhook (ms)",
        f"{'store':<11} {'flow':<8} {'at once':>7} {'runs':>6} {'reply p50':>10} "
        f"{'run p50':>8} {'wall/run':>9} {'runs/s':>9}",
    ]
    for result in results:
        for t in result.timings:
            lines.append(
                f"{result.store:<11} {t.flow:<8} {t.at_once:>7} {t.runs:>6} "
                f"{t.reply_p50_ms:>10.2f} {t.run_p50_ms:>8.2f} "
                f"{t.wall_ms_per_run:>9.2f} {t.runs_per_second:>9,.1f}"
            )
    return "\n".join(lines)


def check_targets(
    parked: list[ParkResult], overhead: list[OverheadResult], plan: Plan
) -> list[TargetCheck]:
    """Every target of PERFORMANCE.md that this benchmark judges, per store."""
    checks = []
    for store in plan.stores:
        checks.append(_rss_target(store, parked))
        checks.extend(_latency_targets(store, parked))
        checks.extend(_step_targets(store, overhead, plan.concurrent))
    return checks


def _rss_target(store: str, parked: list[ParkResult]) -> TargetCheck:
    found = [r for r in parked if r.store == store and r.parked == TARGET_RSS_COUNT]
    value = found[0].rss_parked_mib if found else None
    return TargetCheck(
        f"RSS with {TARGET_RSS_COUNT:,} parked, {store}",
        f"< {TARGET_RSS_MIB:.0f} MiB",
        "-" if value is None else f"{value:.1f} MiB",
        _verdict(None if value is None else value < TARGET_RSS_MIB),
    )


def _latency_targets(store: str, parked: list[ParkResult]) -> list[TargetCheck]:
    return [
        TargetCheck(
            f"p99 signal to resume, {r.parked:,} parked, {store}",
            f"< {TARGET_P99_MS:.0f} ms",
            f"{r.p99_ms:.1f} ms",
            _verdict(r.p99_ms < TARGET_P99_MS),
        )
        for r in parked
        if r.store == store
    ]


def _step_targets(
    store: str, overhead: list[OverheadResult], concurrent: int
) -> list[TargetCheck]:
    found = [r for r in overhead if r.store == store]
    if not found:
        return []
    result, limit = found[0], TARGET_STEP_MS[store]
    figures = [
        ("1 at a time, reply p50", result.per_step_reply_ms(1)),
        (f"{concurrent} at once, wall/run", result.per_step_wall_ms(concurrent)),
    ]
    return [
        TargetCheck(
            f"per step, {store}, {label}",
            f"<= {limit:g} ms",
            f"{value:.2f} ms",
            _verdict(value <= limit),
        )
        for label, value in figures
    ]


def problems_text(parked: list[ParkResult], overhead: list[OverheadResult]) -> str:
    """What the servers logged at WARNING or above, beyond the expected."""
    lines = []
    for r in parked:
        lines += [
            f"  {r.store}, {r.parked:,} parked: {p}" for p in r.server_log_problems
        ]
    for o in overhead:
        lines += [f"  {o.store}, steps: {p}" for p in o.server_log_problems]
    if not lines:
        return "Server logs: no warnings or errors beyond unsigned webhooks."
    return "Server logs (first lines at WARNING or above):\n" + "\n".join(lines)


def report(plan: Plan, parked: list[ParkResult], overhead: list[OverheadResult]) -> str:
    """Both tables, the targets and the footnotes, as printed at the end."""
    parts = [parked_table(parked)]
    if overhead:
        parts.append(overhead_table(overhead))
    parts += [
        targets_text(check_targets(parked, overhead, plan)),
        problems_text(parked, overhead),
        f"RSS: VmRSS of the serve process, idle after {WARMUP_RUNS} warm-up runs; "
        "peak is VmHWM. Signal to resume (p50, p99, max): from just before the "
        "REST call to the wait step's success record; stored p99: from the "
        "signal's row in the store; call p99: the REST call itself.\n"
        "Per step: (t40 - t1) / 39, from the caller's median reply one at a "
        "time, and from the wall time per run until stored, many at once; "
        "run p50 (created to finished in the store) leaves out the journal's "
        "commits, which constant map steps do not wait for.\n"
        f"Load average (1 min) at start {plan.load_at_start:.2f}, at end "
        f"{os.getloadavg()[0]:.2f}, on {os.cpu_count()} CPUs.",
    ]
    return "\n\n".join(parts)


def write_json(
    plan: Plan, parked: list[ParkResult], overhead: list[OverheadResult]
) -> Path:
    """Every figure of the run, to bench/results/parked-<timestamp>.json."""
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"parked-{plan.stamp}.json"
    document = {
        "benchmark": "parked_runs",
        "started_at": plan.stamp,
        "counts": plan.counts,
        "signal_rate": plan.signal_rate,
        "runs": plan.runs,
        "concurrent": plan.concurrent,
        "server_options": plan.server_options,
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_at_start": plan.load_at_start,
            "load_average_at_end": os.getloadavg()[0],
            "platform": platform.platform(),
            "python": platform.python_version(),
            "lobflows": importlib.metadata.version("lobflows"),
        },
        "parked": [dataclasses.asdict(r) for r in parked],
        "overhead": [
            {
                **dataclasses.asdict(o),
                "per_step_ms_one_at_a_time": o.per_step_reply_ms(1),
                "per_step_ms_concurrent": o.per_step_wall_ms(plan.concurrent),
            }
            for o in overhead
        ],
        "targets": [
            dataclasses.asdict(c) for c in check_targets(parked, overhead, plan)
        ],
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


# -- command line ------------------------------------------------------------------


@dataclass
class Plan:
    """What to run, read from the command line."""

    counts: list[int]
    stores: list[str]
    signal_rate: float
    runs: int
    concurrent: int
    postgres_url: str
    server_options: list[str]
    load_at_start: float
    stamp: str
    work_dir: Path
    flows: Path


def positive_ints(text: str) -> list[int]:
    """`1000,10000` as [1000, 10000]; ValueError unless all are positive."""
    values = [int(part) for part in text.split(",") if part.strip()]
    if not values or min(values) < 1:
        raise ValueError(text)
    return values


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The options, checked."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--counts", default="1000,10000", help="Runs to park, comma-separated."
    )
    parser.add_argument(
        "--stores", default="sqlite,postgresql", help="sqlite, postgresql or both."
    )
    parser.add_argument(
        "--signal-rate",
        type=float,
        default=100.0,
        help="Signals sent per second (default 100).",
    )
    parser.add_argument(
        "--runs", type=int, default=200, help="Runs per flow for the step cost."
    )
    parser.add_argument(
        "--concurrent",
        type=int,
        default=50,
        help="Runs at once in the concurrent part of the step cost (default 50).",
    )
    parser.add_argument(
        "--poll-interval",
        type=float,
        default=None,
        help="Passed to the server as --poll-interval (default: the product's).",
    )
    parser.add_argument(
        "--skip-overhead", action="store_true", help="Measure parked runs only."
    )
    parser.add_argument(
        "--postgres-url",
        default=POSTGRES_ADMIN_URL,
        help="Admin URL for CREATE DATABASE.",
    )
    args = parser.parse_args(argv)
    try:
        args.count_list = positive_ints(args.counts)
    except ValueError:
        parser.error("--counts needs positive integers, e.g. 1000,10000")
    args.store_list = [x.strip() for x in args.stores.split(",") if x.strip()]
    if unknown := set(args.store_list) - set(STORES):
        parser.error(f"unknown store(s) {sorted(unknown)}; expected sqlite, postgresql")
    if args.signal_rate <= 0 or args.runs < 1 or args.concurrent < 1:
        parser.error("--signal-rate, --runs and --concurrent must be positive")
    return args


def make_plan(args: argparse.Namespace, work_dir: Path) -> Plan:
    """The plan of a run, with its flows written into the work folder."""
    options = []
    if args.poll_interval is not None:
        options = ["--poll-interval", str(args.poll_interval)]
    return Plan(
        counts=args.count_list,
        stores=args.store_list,
        signal_rate=args.signal_rate,
        runs=args.runs,
        concurrent=args.concurrent,
        postgres_url=args.postgres_url,
        server_options=options,
        load_at_start=os.getloadavg()[0],
        stamp=dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ"),
        work_dir=work_dir,
        flows=write_flows(work_dir),
    )


async def run(args: argparse.Namespace, work_dir: Path) -> None:
    """Measure each store in turn, then report."""
    plan = make_plan(args, work_dir)
    parked: list[ParkResult] = []
    overhead: list[OverheadResult] = []
    print(
        f"Measuring: {plan.counts} parked runs at {plan.signal_rate:g} signals/s; "
        f"step cost over {plan.runs} runs",
        flush=True,
    )
    for store in plan.stores:
        for count in plan.counts:
            parked.append(await measure_parked(plan, store, count))
        if not args.skip_overhead:
            overhead.append(await measure_overhead(plan, store))
    print()
    print(report(plan, parked, overhead))
    print(f"\nResults: {write_json(plan, parked, overhead).relative_to(HERE.parent)}")


def _interrupt(_signum: int, _frame: Any) -> None:
    # As SIGINT: inside asyncio.run that cancels the main task cleanly, where
    # a KeyboardInterrupt raised here could land inside any task.
    signal.raise_signal(signal.SIGINT)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; servers and temporary databases go away however it ends."""
    args = parse_args(argv)
    # Explicit, since a shell may start a background job with SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        with tempfile.TemporaryDirectory(prefix="lobflows-parked-") as work_dir:
            asyncio.run(run(args, Path(work_dir)))
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
