"""No secret value reaches a log line, a stored row, an API answer, a web
page or an error message, whatever happens to the runs that use it."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from lobflows.secrets import vault
from lobflows.testing.servers import ServerThread
from tests import support

pytestmark = pytest.mark.acceptance

VAULT_CANARY = "canary-vault-7f3a9c2e51"
ENV_CANARY = "canary-env-b81d44e0aa"
API_TOKEN = "redaction-test-api-token-123"
FLOW = """flow: push
card:
  trigger: a signed webhook
  data: {entity: order, sensitivity: internal}
  transform: order -> api call
  target: the api
  on_failure: dead letter
  owner: team@example.com
trigger:
  webhook:
    path: /hooks/push
    signature: {secret: push-signing-key}
steps:
  - id: send
    call: api.request
    with: {method: POST, path: /orders, json: "{{ input }}"}
    retry: {max_attempts: 3, initial_delay_seconds: 0.05, max_delay_seconds: 0.1}
"""
CONNECTIONS = """connections:
  api:
    type: http
    base_url: BASE
    allow_networks: ["127.0.0.0/8"]
    auth: {kind: bearer, secret: api-token}
"""


class Target:
    """Echoes the credential it was given, in successes and in failures,
    as careless systems do: `flaky` orders fail once, `bad` ones until fixed."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.fixed = False

    def app(self) -> Starlette:
        async def orders(request: Request) -> JSONResponse:
            body = await request.json()
            order = str(body.get("id"))
            self.calls[order] = self.calls.get(order, 0) + 1
            echo = {"you_sent": request.headers.get("authorization"), "order": order}
            if body.get("mode") == "flaky" and self.calls[order] == 1:
                return JSONResponse({"error": "busy", **echo}, status_code=503)
            if body.get("mode") == "bad" and not self.fixed:
                return JSONResponse({"error": "rejected", **echo}, status_code=422)
            return JSONResponse({"ok": True, **echo})

        return Starlette(routes=[Route("/orders", orders, methods=["POST"])])


def post(server: support.ServerProcess, body: Any, key: str) -> httpx.Response:
    raw = json.dumps(body).encode()
    headers = {
        "Content-Type": "application/json",
        "X-Signature-256": support.sign(raw, key),
    }
    return httpx.post(server.url + "/hooks/push", content=raw, headers=headers)


def wait_for(check: Any, what: str, timeout: float = 15) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    raise TimeoutError(what)


def run_status(api: httpx.Client, run_id: str) -> str:
    return str(api.get(f"/api/runs/{run_id}").json().get("status"))


def every_row(database: Path) -> str:
    """Every row of every table, as text."""
    with sqlite3.connect(database) as conn:
        names = [
            r[0]
            for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
        ]
        rows = [
            repr(row)
            for name in names
            for row in conn.execute(f'SELECT * FROM "{name}"')  # noqa: S608
        ]
    assert len(names) > 10 and rows
    return "\n".join(rows)


def test_no_canary_appears_in_logs_rows_answers_pages_or_errors(tmp_path: Path):
    # Given a vault secret (the API credential) and an environment secret
    # (the webhook key), a target that echoes credentials back, and a server
    (tmp_path / "data").mkdir()
    (tmp_path / "flows").mkdir()
    database = tmp_path / "data" / "runs.db"
    env = support.base_env(
        f"sqlite:///{database}",
        LOBFLOWS_MASTER_KEY=vault.new_key(),
        LOBFLOWS_SECRET_PUSH_SIGNING_KEY=ENV_CANARY,
        LOBFLOWS_API_TOKEN=API_TOKEN,
        LOBFLOWS_LOG_LEVEL="DEBUG",
    )
    stored = support.cli(env, "secrets", "set", "api-token", stdin=VAULT_CANARY)
    assert stored.returncode == 0, stored.stderr
    target = Target()
    texts = [stored.stdout, stored.stderr]
    with ServerThread(target.app()) as api_server:
        (tmp_path / "flows" / "push.yaml").write_text(FLOW)
        (tmp_path / "flows" / "connections.yaml").write_text(
            CONNECTIONS.replace("BASE", api_server.url)
        )
        server = support.ServerProcess(
            env, tmp_path / "flows", tmp_path / "server.log"
        ).start()
        client = httpx.Client(
            base_url=server.url,
            headers={"Authorization": f"Bearer {API_TOKEN}"},
            timeout=30,
        )
        try:
            texts += drive_runs(server, client, target)
        finally:
            client.close()
            server.stop()
    texts.append(server.log())
    texts.append(every_row(database))

    # Then neither canary appears anywhere, while the runs did use them
    assert target.calls == {"1": 1, "2": 2, "3": 2}
    everything = "\n".join(texts)
    assert "run_succeeded" in everything
    assert "Bearer ***" in everything  # the echoes were stored, masked
    for canary in (VAULT_CANARY, ENV_CANARY):
        assert canary not in everything


def drive_runs(
    server: support.ServerProcess, client: httpx.Client, target: Target
) -> list[str]:
    """Success, a retry, a dead letter and its replay; every answer's text."""
    texts = []
    runs = {}
    for order, mode in (("1", "ok"), ("2", "flaky"), ("3", "bad")):
        reply = post(server, {"id": order, "mode": mode}, ENV_CANARY)
        assert reply.status_code == 202, reply.text
        runs[order] = reply.json()["run_id"]
    refused = post(server, {"id": "4"}, "a-wrong-key-entirely")
    assert refused.status_code == 401
    texts.append(refused.text)
    for order in ("1", "2"):
        wait_for(lambda o=order: run_status(client, runs[o]) == "succeeded", order)
    wait_for(lambda: run_status(client, runs["3"]) == "failed", "dead letter")
    letters = client.get("/api/dead-letters").json()["dead_letters"]
    texts.append(json.dumps(letters))
    [letter] = letters
    target.fixed = True
    replay = client.post(f"/api/dead-letters/{letter['id']}/replay", json={})
    assert replay.status_code == 200, replay.text
    wait_for(lambda: run_status(client, runs["3"]) == "succeeded", "replay")
    for path in [
        *(f"/api/runs/{run_id}" for run_id in runs.values()),
        "/api/tasks",
        "/api/dead-letters?status=all",
        "/api/secrets",
        "/api/audit",
    ]:
        answer = client.get(path)
        assert answer.status_code == 200, (path, answer.text)
        texts.append(answer.text)
    pages = ["/", "/flows/push", "/dead-letters", f"/dead-letters/{letter['id']}"]
    pages += [f"/runs/{run_id}" for run_id in runs.values()]
    pages += ["/connections", "/secrets", "/map", "/audit", "/inbox", "/metrics"]
    for path in pages:
        page = client.get(path, headers={"Accept": "text/html"})
        assert page.status_code == 200, (path, page.text)
        texts.append(page.text)
    return texts
