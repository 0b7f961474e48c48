"""Sync records from PostgreSQL to the ERPNext stand-in, in batches, under throttling.

A parent run reads the ids to sync from a PostgreSQL table with the ``sql``
connector's ``query``, then a ``foreach`` starts one child run per batch of
``--batch-size`` records, ``--batches-at-once`` at a time; each batch run
starts a run per record that creates an Employee with the ``erpnext``
connector's ``create`` and ``unique_field: employee_number``, so a create
retried after a 429 or a lost answer finds the document instead of making a
second one. The erpnext connection declares ``limits: {concurrency: 8}``.

The stand-in runs in this process behind a small wrapper that rate-limits
creates as a busy site does: beyond ``--throttle`` creates in a second it
answers 429 with ``Retry-After: 1``, and the flow retries them. The wrapper
also counts requests in flight, so the peak the site saw is measured where
it matters.

    python bench/sync_records.py [--records 50000] [--workers 1]
        [--batch-size 100] [--batches-at-once 8] [--throttle 20]

Needs LoB Flows installed and a PostgreSQL server on 127.0.0.1:5432 where
``postgres`` may create databases (``--postgres-url``); the run store is a
fresh database there, dropped at the end. Everything listens on 127.0.0.1;
every child process is stopped on the way out. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import uvicorn
from webhook_servers import HOST
from webhook_throughput import (
    POSTGRES_ADMIN_URL,
    BenchError,
    free_port,
    postgres_database,
)

from lobflows.testing.erpnext import create_erpnext_app

API_KEY, API_SECRET = "bench-key", "bench-secret"
CONCURRENCY_LIMIT = 8
DOCTYPE = "Employee"
POLL_SECONDS = 1.0
PROGRESS_SECONDS = 10.0

CARD = """\
card:
  trigger: by hand, from the benchmark
  data: {entity: employee record, sensitivity: internal}
  transform: row -> Employee
  target: the ERPNext stand-in
  on_failure: dead letter
  owner: bench@example.com
"""


def flows_text(*, batch_size: int, batches_at_once: int) -> dict[str, str]:
    """The parent, batch and record flows, and the connections, by file name."""
    parent = f"""\
flow: sync-records
description: Splits the ids to sync into batches; each batch reads its own rows.
{CARD}trigger: {{manual: {{}}}}
steps:
  # The parent carries offsets, not rows: a run's stored data stays small
  # (step data is cut at its budget), whatever the number of records.
  - id: plan
    map:
      offsets: "{{{{ range(0, input.records, {batch_size}) | list }}}}"
  - id: batches
    foreach:
      items: "{{{{ steps.plan.offsets }}}}"
      flow: sync-batch
      concurrency: {batches_at_once}
"""
    batch = f"""\
flow: sync-batch
description: Reads one batch of rows and creates them, a run per record.
{CARD}trigger: {{manual: {{}}}}
steps:
  - id: rows
    call: source.query
    with:
      sql: >-
        SELECT id, first_name, last_name, date_of_birth::text AS date_of_birth
        FROM people ORDER BY id LIMIT {batch_size} OFFSET :offset
      params: {{offset: "{{{{ input }}}}"}}
  - id: records
    foreach:
      items: "{{{{ steps.rows }}}}"
      flow: sync-record
      concurrency: {CONCURRENCY_LIMIT}
"""
    record = f"""\
flow: sync-record
description: Creates one Employee unless one with its number exists.
{CARD}trigger: {{manual: {{}}}}
steps:
  - id: employee
    call: erp.create
    with:
      doctype: {DOCTYPE}
      unique_field: employee_number
      doc:
        employee_number: "{{{{ input.id }}}}"
        first_name: "{{{{ input.first_name }}}}"
        last_name: "{{{{ input.last_name }}}}"
        gender: Female
        date_of_birth: "{{{{ input.date_of_birth }}}}"
        date_of_joining: "2026-01-05"
        company: Example Corp
    retry:
      max_attempts: 20
      initial_delay_seconds: 0.2
      max_delay_seconds: 2
"""
    connections = f"""\
connections:
  source:
    type: sql
    url: ${{SOURCE_DB_URL}}
  erp:
    type: erpnext
    base_url: ${{ERPNEXT_URL}}
    auth_secret: erpnext-api
    allow_networks: [127.0.0.0/8]
    limits:
      concurrency: {CONCURRENCY_LIMIT}
"""
    return {
        "sync-records.yaml": parent,
        "sync-batch.yaml": batch,
        "sync-record.yaml": record,
        "connections.yaml": connections,
    }


# -- the stand-in ---------------------------------------------------------------


class InFlight:
    """ASGI wrapper counting the stand-in's /api requests in flight, and the
    peak; creates beyond `creates_per_second` in a second get 429, as a
    rate-limited site answers."""

    def __init__(self, app: Any, creates_per_second: int) -> None:
        self.app = app
        self.now = 0
        self.peak = 0
        self.throttled = 0
        self.creates_per_second = creates_per_second
        self.window = (0, 0)  # (second, creates in it)
        self.lock = threading.Lock()

    def _over_rate(self, scope: Any) -> bool:
        if not self.creates_per_second or scope.get("method") != "POST":
            return False
        second = int(time.monotonic())
        with self.lock:
            start, count = self.window
            count = count + 1 if start == second else 1
            self.window = (second, count)
            if count > self.creates_per_second:
                self.throttled += 1
                return True
        return False

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        counted = scope["type"] == "http" and scope["path"].startswith("/api/")
        if counted and self._over_rate(scope):
            await send(
                {
                    "type": "http.response.start",
                    "status": 429,
                    "headers": [
                        (b"retry-after", b"1"),
                        (b"content-type", b"application/json"),
                    ],
                }
            )
            await send(
                {
                    "type": "http.response.body",
                    "body": b'{"exc_type": "TooManyRequestsError"}',
                }
            )
            return
        if counted:
            with self.lock:
                self.now += 1
                self.peak = max(self.peak, self.now)
        try:
            await self.app(scope, receive, send)
        finally:
            if counted:
                with self.lock:
                    self.now -= 1


class Standin:
    """The ERPNext stand-in on a thread of its own, rate-limiting creates."""

    def __init__(self, throttle_per_second: int) -> None:
        self.app = create_erpnext_app(api_key=API_KEY, api_secret=API_SECRET)
        self.state = self.app.state.erpnext
        self.counter = InFlight(self.app, throttle_per_second)
        self.port = free_port()
        config = uvicorn.Config(
            self.counter, host=HOST, port=self.port, log_level="warning"
        )
        self.server = uvicorn.Server(config)
        self.stopping = threading.Event()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @contextlib.contextmanager
    def running(self) -> Iterator[Standin]:
        serving = threading.Thread(target=self.server.run, daemon=True)
        serving.start()
        while not self.server.started:
            time.sleep(0.05)
        try:
            yield self
        finally:
            self.stopping.set()
            self.server.should_exit = True
            serving.join(timeout=10)

    def documents(self) -> tuple[int, int]:
        """Employees in the site, and distinct employee numbers among them."""
        with self.state.lock:
            docs = list(self.state.docs[DOCTYPE].values())
        numbers = {d.get("employee_number") for d in docs}
        return len(docs), len(numbers)


# -- the source table, the flows and the processes --------------------------------


def fill_source(url: str, records: int) -> None:
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(
            "CREATE TABLE people (id text PRIMARY KEY, first_name text NOT NULL, "
            "last_name text NOT NULL, date_of_birth date NOT NULL)"
        )
        connection.execute(
            "INSERT INTO people SELECT 'P' || lpad(n::text, 7, '0'), "
            "'First' || n, 'Last' || n, date '1970-01-01' + (n %% 10000) "
            "FROM generate_series(1, %s) AS n",
            (records,),
        )


@contextlib.contextmanager
def processes(
    commands: dict[str, list[str]], env: dict[str, str], log_dir: Path
) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    """Start each command in its own session; stop exactly those on the way out."""
    started: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name, command in commands.items():
            log = (log_dir / f"{name}.log").open("wb")
            started[name] = subprocess.Popen(
                command,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        yield started
    finally:
        for process in started.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in started.values():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def start_parent(env: dict[str, str], flows: Path, db: str, records: int) -> str:
    data = flows.parent / "input.json"
    data.write_text(json.dumps({"records": records}))
    command = [
        sys.executable,
        "-m",
        "lobflows",
        "--db",
        db,
        "run",
        "sync-records",
        "--input",
        str(data),
        "--flows",
        str(flows),
        "--no-wait",
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise BenchError(f"could not start the parent run: {done.stderr.strip()}")
    return done.stdout.split()[1]


def wait_for_run(
    db: str, run_id: str, standin: Standin, started: float, timeout: float
) -> str:
    last_report = started
    with psycopg.connect(db, autocommit=True) as connection:
        while time.monotonic() - started < timeout:
            row = connection.execute(
                "SELECT status FROM runs WHERE id = %s", (run_id,)
            ).fetchone()
            status = row[0] if row else "missing"
            if status in ("succeeded", "failed", "cancelled"):
                failures = connection.execute(
                    "SELECT flow, error FROM runs WHERE status = 'failed' LIMIT 3"
                ).fetchall()
                for flow, error in failures:
                    print(f"  failed run of {flow}: {str(error)[:300]}")
                return str(status)
            if time.monotonic() - last_report >= PROGRESS_SECONDS:
                last_report = time.monotonic()
                created, _ = standin.documents()
                elapsed = last_report - started
                print(f"  {elapsed:6.0f} s: {created} documents", flush=True)
            time.sleep(POLL_SECONDS)
    raise BenchError(f"the parent run did not end within {timeout:.0f} s")


def measure(args: argparse.Namespace, db: str, work: Path) -> dict[str, Any]:
    fill_source(db, args.records)
    flows = work / "flows"
    flows.mkdir()
    texts = flows_text(batch_size=args.batch_size, batches_at_once=args.batches_at_once)
    for name, text in texts.items():
        (flows / name).write_text(text)
    standin = Standin(args.throttle)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOBFLOWS_")}
    with standin.running():
        env.update(
            SOURCE_DB_URL=db,
            ERPNEXT_URL=standin.url,
            LOBFLOWS_SECRET_ERPNEXT_API=f"{API_KEY}:{API_SECRET}",
            LOBFLOWS_POLL_INTERVAL="0.1",
        )
        base = [sys.executable, "-m", "lobflows", "--db", db, "--log-level", "WARNING"]
        commands = {"serve": [*base, "serve", str(flows), "--port", str(free_port())]}
        for index in range(1, args.workers + 1):
            commands[f"worker{index}"] = [*base, "worker", str(flows)]
        with processes(commands, env, work):
            time.sleep(2.0)
            started = time.monotonic()
            run_id = start_parent(env, flows, db, args.records)
            status = wait_for_run(db, run_id, standin, started, args.timeout)
            seconds = time.monotonic() - started
        created, distinct = standin.documents()
    return {
        "records": args.records,
        "status": status,
        "seconds": round(seconds, 1),
        "records_per_second": round(created / seconds, 1),
        "peak_requests_in_flight": standin.counter.peak,
        "throttled_with_429": standin.counter.throttled,
        "documents": created,
        "distinct_employee_numbers": distinct,
        "requests": dict(standin.state.request_counts),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument(
        "--workers", type=int, default=1, help="worker processes beside serve"
    )
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--batches-at-once", type=int, default=8)
    parser.add_argument(
        "--throttle",
        type=int,
        default=40,
        help="Creates the stand-in accepts per second; more get 429 (0: no limit).",
    )
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds")
    parser.add_argument("--postgres-url", default=POSTGRES_ADMIN_URL)
    args = parser.parse_args()

    with (
        tempfile.TemporaryDirectory(prefix="lobflows-sync-") as tmp,
        postgres_database(args.postgres_url) as db,
    ):
        result = measure(args, db, Path(tmp))
    print(json.dumps(result, indent=2))
    ok = (
        result["status"] == "succeeded"
        and result["peak_requests_in_flight"] <= CONCURRENCY_LIMIT
        and result["documents"] == result["distinct_employee_numbers"] == args.records
    )
    print("ok" if ok else "FAILED: see the figures above")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        # The context managers above have stopped the servers and dropped
        # the database on the way out.
        print("interrupted: servers stopped, database dropped", file=sys.stderr)
        sys.exit(130)
