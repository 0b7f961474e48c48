"""``lobflows secrets`` end to end: new-key, set, list, rotate, show-usage, remove."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lobflows.store import RunStore
from tests import support

pytestmark = pytest.mark.acceptance
QUOTE = support.REPO / "tests" / "flows" / "quote"
VALUE, ROTATED = "quote-key-canary-0001", "quote-key-canary-0002"


def secrets_cli(
    env: dict[str, str], *args: str, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lobflows", "secrets", *args],
        env={**env, "COLUMNS": "200"},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def env(store_url: str, tmp_path: Path) -> dict[str, str]:
    made = secrets_cli(support.base_env(store_url), "new-key")
    assert made.returncode == 0, made.stderr
    key_file = tmp_path / "keys" / "master.key"
    key_file.parent.mkdir()
    key_file.write_text(made.stdout)
    return support.base_env(store_url, LOBFLOWS_MASTER_KEY_FILE=str(key_file))


async def test_secrets_commands_keep_values_out_of_output_and_audit_each_change(
    env: dict[str, str], store: RunStore
):
    set_ = secrets_cli(
        env, "set", "quote-signing-key", "--rotate-every", "90d", stdin=VALUE
    )
    rotate = secrets_cli(
        env, "rotate", "quote-signing-key", "--grace", "30m", stdin=ROTATED
    )
    listed = secrets_cli(env, "list", "--flows", str(QUOTE))
    usage = secrets_cli(env, "show-usage", "quote-signing-key", "--flows", str(QUOTE))
    refused = secrets_cli(env, "remove", "quote-signing-key", "--flows", str(QUOTE))
    forced = secrets_cli(
        env, "remove", "quote-signing-key", "--force", "--flows", str(QUOTE)
    )

    for result in (set_, rotate, listed, usage, forced):
        assert result.returncode == 0, result.stderr
    everything = "".join(
        r.stdout + r.stderr for r in (set_, rotate, listed, usage, refused, forced)
    )
    assert VALUE not in everything and ROTATED not in everything
    assert "rotated to version 2" in rotate.stdout
    row = next(
        line for line in listed.stdout.splitlines() if "quote-signing-key" in line
    )
    assert "vault" in row and "90d" in row and "flow quote (webhook signature)" in row
    assert "used by:   flow quote (webhook signature)" in usage.stdout
    assert refused.returncode == 1
    assert "used by flow quote (webhook signature); not removed" in refused.stderr
    entries = await store.audit_entries(limit=10)
    assert [(e.action, e.target) for e in reversed(entries)] == [
        ("secret_set", "quote-signing-key"),
        ("secret_rotate", "quote-signing-key"),
        ("secret_remove", "quote-signing-key"),
    ]
    assert all(e.actor.startswith("cli:") for e in entries)


def test_secrets_set_refuses_a_malformed_key_and_a_key_beside_the_store(
    tmp_path: Path,
):
    store_url = f"sqlite:///{tmp_path / 'runs.db'}"
    beside = tmp_path / "master.key"
    beside.write_text(secrets_cli(support.base_env(store_url), "new-key").stdout)

    malformed = secrets_cli(
        support.base_env(store_url, LOBFLOWS_MASTER_KEY="short-key-value"),
        "set",
        "crm-token",
        stdin="crm-value",
    )
    near = secrets_cli(
        support.base_env(store_url, LOBFLOWS_MASTER_KEY_FILE=str(beside)),
        "set",
        "crm-token",
        stdin="crm-value",
    )

    assert malformed.returncode == 4
    assert "LOBFLOWS_MASTER_KEY is malformed" in malformed.stderr
    assert "short-key-value" not in malformed.stderr
    assert near.returncode == 4
    assert "same folder as the run store" in near.stderr
    assert "Traceback" not in malformed.stderr + near.stderr


def test_a_server_accepts_the_old_signature_during_grace_after_a_cli_rotation(
    env: dict[str, str], tmp_path: Path
):
    # Given a server whose webhook key is in the vault
    assert secrets_cli(env, "set", "quote-signing-key", stdin=VALUE).returncode == 0
    server_env = {**env, "LOBFLOWS_SECRETS_REFRESH_SECONDS": "0.2"}
    server = support.ServerProcess(server_env, QUOTE, tmp_path / "server.log").start()
    try:
        # When the key is rotated from the command line
        rotated = secrets_cli(
            env, "rotate", "quote-signing-key", "--grace", "1h", stdin=ROTATED
        )
        assert rotated.returncode == 0, rotated.stderr
        new_ok = _wait_for_status(server, ROTATED, 200)

        # Then both keys sign acceptably while the grace lasts
        old = _post(server, VALUE)
        wrong = _post(server, "not-the-key-at-all")
    finally:
        server.stop()
    assert new_ok
    assert old.status_code == 200, old.text
    assert wrong.status_code == 401
    assert VALUE not in server.log() and ROTATED not in server.log()


def _post(server: support.ServerProcess, key: str):
    import json

    import httpx

    raw = json.dumps({"customer": "Hooli", "quantity": 2}).encode()
    headers = {
        "Content-Type": "application/json",
        "X-Signature-256": support.sign(raw, key),
    }
    return httpx.post(
        server.url + "/hooks/quote", content=raw, headers=headers, timeout=30
    )


def _wait_for_status(server: support.ServerProcess, key: str, status: int) -> bool:
    import time

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if _post(server, key).status_code == status:
            return True
        time.sleep(0.1)
    return False
