"""Access control end to end: users made with the CLI sign in to a real server,
API tokens act as their user, roles decide what each may do, and every
change lands in the audit log."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import httpx
import pytest

from lobflows.store import RunStore
from tests import support

pytestmark = pytest.mark.acceptance
PASSWORD = "correct horse battery"

FLOW = """flow: expense
card:
  trigger: by hand
  data: {entity: expense claim, sensitivity: internal}
  transform: none
  target: the run store
  on_failure: dead letter
  owner: finance@example.com
trigger: {manual: {}}
steps:
  - id: decision
    wait: {signal: decided}
"""


@pytest.fixture
def store_url(sqlite_store_url: str) -> str:
    return sqlite_store_url


def users(
    env: dict[str, str], *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return support.cli(env, "users", *args, stdin=stdin)


@pytest.fixture
def env(store_url: str) -> dict[str, str]:
    return support.base_env(
        store_url,
        LOBFLOWS_POLL_INTERVAL="0.1",
        LOBFLOWS_SECRET_SESSION_KEY="acceptance-session-key",
    )


@pytest.fixture
def server(env: dict[str, str], tmp_path: Path):
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "expense.yaml").write_text(FLOW)
    process = support.ServerProcess(env, flows, tmp_path / "server.log").start()
    yield process
    process.stop()


async def test_cli_users_sign_in_and_act_within_their_roles(
    env: dict[str, str], server: support.ServerProcess, store: RunStore
):
    # Given an operator and a viewer with an API token, made with the CLI.
    added = users(
        env,
        "add",
        "olga",
        "--role",
        "operator",
        "--password-stdin",
        stdin=PASSWORD + "\n",
    )
    users(
        env, "add", "vic", "--role", "viewer", "--password-stdin", stdin=PASSWORD + "\n"
    )
    created = users(env, "token", "create", "--user", "vic", "--name", "ci")
    token = created.stdout.strip()
    listed = users(env, "list")
    assert added.returncode == 0 and created.returncode == 0, added.stderr
    assert re.fullmatch(r"lft_[A-Za-z0-9_-]{40,}", token)
    assert "olga" in listed.stdout and "operator" in listed.stdout
    assert PASSWORD not in added.stdout + added.stderr

    queued = support.cli(
        env, "run", "expense", "--flows", str(server.flows_dir), "--no-wait"
    )
    run_id = queued.stdout.split()[1]
    await support.wait_for_run(store, run_id, statuses=("waiting",))
    signal_url = f"{server.url}/api/runs/{run_id}/signals/decided"

    # Anonymous: 401 for the API, the sign-in page for a browser.
    anonymous = httpx.get(f"{server.url}/api/runs/{run_id}")
    browser = httpx.get(f"{server.url}/", headers={"Accept": "text/html"})
    assert anonymous.status_code == 401
    assert (
        browser.status_code == 303 and browser.headers["location"] == "/login?next=%2F"
    )

    # The viewer's token reads but cannot send a signal.
    viewer = {"Authorization": f"Bearer {token}"}
    assert (
        httpx.get(f"{server.url}/api/runs/{run_id}", headers=viewer).status_code == 200
    )
    refused = httpx.post(signal_url, json={}, headers=viewer)
    assert refused.status_code == 403 and "operate" in refused.json()["error"]

    # The operator signs in with the password and sends it from the session.
    with httpx.Client(base_url=server.url) as browser_session:
        page = browser_session.get("/login")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        signed_in = browser_session.post(
            "/login",
            data={"csrf_token": csrf, "name": "olga", "password": PASSWORD},
        )
        cookie = signed_in.headers["set-cookie"].lower()
        csrf = re.search(
            r'name="csrf_token" value="([^"]+)"', browser_session.get("/login").text
        ).group(1)
        sent = browser_session.post(
            signal_url, json={"approved": True}, headers={"X-CSRF-Token": csrf}
        )
    assert signed_in.status_code == 303
    assert "httponly" in cookie and "samesite=lax" in cookie
    assert sent.status_code == 202
    assert (await support.wait_for_run(store, run_id)).status == "succeeded"

    # A revoked token is refused at once.
    revoked = users(env, "token", "revoke", "--user", "vic", "--name", "ci")
    assert revoked.returncode == 0, revoked.stderr
    assert (
        httpx.get(f"{server.url}/api/runs/{run_id}", headers=viewer).status_code == 401
    )

    # Every change is in the audit log, with who did it.
    entries = await store.audit_entries()
    done = [(e.action, e.actor.split(":")[0], e.target) for e in reversed(entries)]
    assert done == [
        ("user_add", "cli", "user olga"),
        ("user_add", "cli", "user vic"),
        ("token_create", "cli", "user vic"),
        ("sign_in", "olga", "user olga"),
        ("signal", "olga", f"run {run_id}"),
        ("token_revoke", "cli", "user vic"),
    ]


def test_cli_refuses_names_the_audit_log_uses_and_reading_a_missing_store(
    env: dict[str, str], store_url: str, tmp_path: Path
):
    missing = tmp_path / "mistyped.db"
    mistyped = {**env, "LOBFLOWS_DB": f"sqlite:///{missing}"}

    listed = users(mistyped, "list")
    tokens = users(mistyped, "token", "list")
    reserved = users(env, "add", "cli:root", "--role", "admin", "--no-password")
    slashed = users(env, "add", "a/b", "--role", "viewer", "--no-password")
    added = users(env, "add", "ada", "--role", "admin", "--no-password")
    revoke = users(env, "token", "revoke", "--user", "ada", "--name", "nosuch")

    for refused in (listed, tokens):
        assert refused.returncode == 4, refused.stderr
        assert f"no run store at {missing}" in refused.stderr
    assert not missing.exists()
    assert reserved.returncode == 2
    assert "is how the audit log names actions no user took" in reserved.stderr
    assert slashed.returncode == 2 and "must not hold a slash" in slashed.stderr
    assert added.returncode == 0, added.stderr
    assert revoke.returncode != 0
    assert "user 'ada' has no live token named 'nosuch'" in revoke.stderr
    assert "lobflows users token list shows them" in revoke.stderr
