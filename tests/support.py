"""Helpers shared by the tests: a LoB Flows server in a child process, and waits."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from lobflows.store import RunRecord, RunStore
from lobflows.triggers.webhook import sign

__all__ = ["sign"]

REPO = Path(__file__).resolve().parent.parent
ONBOARDING = REPO / "examples" / "onboarding"
HOOK_PATH = "/hooks/bamboohr/new-hire"
WEBHOOK_KEY = "test-webhook-signing-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli(
    env: dict[str, str],
    *args: str,
    cwd: Path | None = None,
    timeout: float = 60,
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the ``lobflows`` command as a user would, wide enough not to wrap;
    `stdin` is what the user types or pipes in."""
    return subprocess.run(
        [sys.executable, "-m", "lobflows", *args],
        env={**env, "COLUMNS": "200"},
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class ServerProcess:
    """``lobflows serve`` (or ``worker``) in a child process, killable like a real one."""

    def __init__(
        self,
        env: dict[str, str],
        flows_dir: Path,
        log_path: Path,
        *,
        command: str = "serve",
    ) -> None:
        self.env = env
        self.flows_dir = flows_dir
        self.log_path = log_path
        self.command = command
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServerProcess:
        args = [sys.executable, "-m", "lobflows", self.command, str(self.flows_dir)]
        if self.command == "serve":
            args += ["--port", str(self.port)]
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            args, env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        if self.command == "serve":
            self._wait_healthy()
        return self

    def _wait_healthy(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"server exited with {self.process.returncode}:\n{self.log()}"
                )
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise TimeoutError(f"server did not come up:\n{self.log()}")

    def log(self) -> str:
        return (
            self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        )

    def kill(self) -> None:
        """SIGKILL: no cleanup, no lease release, as in a crash."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def post_hire(
        self,
        hire: Any,
        *,
        key: str = WEBHOOK_KEY,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        body = raw if raw is not None else json.dumps(hire).encode()
        all_headers = {
            "Content-Type": "application/json",
            "X-Signature-256": sign(body, key),
        }
        all_headers.update(headers or {})
        return httpx.post(
            self.url + HOOK_PATH, content=body, headers=all_headers, timeout=30
        )


def sample_hire(**fields: Any) -> dict[str, Any]:
    """The sample hire, with fields replaced (None removes a field)."""
    hire = json.loads((ONBOARDING / "samples" / "employee-onboarding.json").read_text())
    employee = hire["employees"][0]
    for name, value in fields.items():
        if name == "id":
            employee["id"] = value
        elif value is None:
            employee["fields"].pop(name, None)
        else:
            employee["fields"][name] = value
    return hire


async def wait_for_run(
    store: RunStore,
    run_id: str,
    *,
    statuses: tuple[str, ...] = ("succeeded", "failed"),
    timeout: float = 30,
) -> RunRecord:
    deadline = time.monotonic() + timeout
    while True:
        run = await store.get_run(run_id)
        if run.status in statuses:
            return run
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"run {run_id} is still {run.status} (step {run.current_step}): {run.error}"
            )
        await asyncio.sleep(0.05)


def base_env(store_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOBFLOWS_")}
    env.update({"LOBFLOWS_DB": store_url, "LOBFLOWS_LOG_LEVEL": "INFO", **extra})
    return env


def create_store(store_url: str) -> None:
    """Make the run store at `store_url` with the newest schema, as a first
    `lobflows serve` would; commands that read the store refuse a missing one."""
    from lobflows.store import RunStore

    async def migrate() -> None:
        store = RunStore(store_url)
        try:
            await store.migrate()
        finally:
            await store.close()

    asyncio.run(migrate())


async def wait_for_log(
    server: ServerProcess, text: str, *, timeout: float = 10
) -> None:
    deadline = time.monotonic() + timeout
    while text not in server.log():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{text!r} never appeared in the server log")
        await asyncio.sleep(0.05)


async def drain(runtime: Any) -> None:
    """Claim and execute due runs until none is left, as workers would."""
    store, engine = runtime.store, runtime.engine
    while claimed := await store.claim_runs(
        owner=engine.owner, limit=10, lease_seconds=30
    ):
        for run in claimed:
            await engine.execute(run)
        await store.flush()


async def pass_once(runtime: Any) -> int:
    """Claim what is due by the engine's clock and execute it, like one worker poll."""
    engine = runtime.engine
    claimed = await runtime.store.claim_runs(
        owner=engine.owner, limit=10, lease_seconds=30, now=engine.clock.now()
    )
    for run in claimed:
        await engine.execute(run)
    await runtime.store.flush()
    return len(claimed)


class Service:
    """A local HTTP service that answers every request with JSON, failing the
    next few calls of a path with a chosen status; it keeps every call in order."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.log: list[str] = []
        self.failures: dict[str, list[int]] = {}

    def app(self) -> Starlette:
        async def handle(request: Request) -> JSONResponse:
            path = request.url.path
            self.calls[path] += 1
            self.log.append(f"{request.method} {path}")
            pending = self.failures.get(path)
            if pending:
                return JSONResponse({"error": "no"}, status_code=pending.pop(0))
            return JSONResponse({"ok": True, "path": path})

        methods = ["POST", "PUT", "DELETE", "GET"]
        return Starlette(routes=[Route("/{path:path}", handle, methods=methods)])


def welcomes(standins: Any) -> list[Any]:
    """The onboarding welcome emails; the buddy flow's messages are not counted."""
    return [m for m in standins.mailbox.messages if m.subject.startswith("Welcome")]


POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


@contextlib.contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """An empty PostgreSQL database, dropped afterwards."""
    name = f"lobflows_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def directory_entry(uid: str) -> dict[str, Any]:
    """A person's entry in the test directory (scripts/slapd.sh), read directly."""
    import ldap3

    server = ldap3.Server("ldap://127.0.0.1:3890")
    with ldap3.Connection(
        server, "cn=admin,dc=example,dc=com", "lobflows-test-admin", auto_bind=True
    ) as conn:
        conn.search(
            "ou=people,dc=example,dc=com",
            f"(uid={ldap3.utils.conv.escape_filter_chars(uid)})",
            attributes=["cn", "mail", "sn", "givenName"],
        )
        assert conn.entries, f"no directory entry for uid {uid}"
        return {k: list(v) for k, v in conn.entries[0].entry_attributes_as_dict.items()}
