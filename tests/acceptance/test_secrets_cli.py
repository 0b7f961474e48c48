"""``lobflows secrets`` end to end: new-key, set, list, rotate, show-usage, remove."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from lobflows.store import RunStore
from tests import support

pytestmark = pytest.mark.acceptance
QUOTE = support.REPO / "tests" / "flows" / "quote"
VALUE, ROTATED = "quote-key-canary-0001", "quote-key-canary-0002"


@pytest.fixture
def store_url(sqlite_store_url: str) -> str:
    return sqlite_store_url


def secrets_cli(
    env: dict[str, str], *args: str, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    return support.cli(env, "secrets", *args, stdin=stdin)


@pytest.fixture
def env(store_url: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    made = secrets_cli(support.base_env(store_url), "new-key")
    assert made.returncode == 0, made.stderr
    # Outside the store's folder (tmp_path), which refuses key files.
    key_file = tmp_path_factory.mktemp("keys") / "master.key"
    key_file.write_text(made.stdout)
    key_file.chmod(0o600)
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


def test_secrets_set_refuses_a_key_file_below_the_store_and_warns_on_an_open_one(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
):
    store_url = f"sqlite:///{tmp_path / 'runs.db'}"
    key = secrets_cli(support.base_env(store_url), "new-key").stdout
    below = tmp_path / "keys" / "master.key"
    below.parent.mkdir()
    below.write_text(key)
    elsewhere = tmp_path_factory.mktemp("open-keys") / "master.key"
    elsewhere.write_text(key)
    elsewhere.chmod(0o644)

    refused = secrets_cli(
        support.base_env(store_url, LOBFLOWS_MASTER_KEY_FILE=str(below)),
        "set",
        "crm-token",
        stdin="crm-value",
    )
    warned = secrets_cli(
        support.base_env(store_url, LOBFLOWS_MASTER_KEY_FILE=str(elsewhere)),
        "set",
        "crm-token",
        stdin="crm-value",
    )

    assert refused.returncode == 4
    assert "or in a folder below it" in refused.stderr
    assert warned.returncode == 0, warned.stderr
    warnings = [line for line in warned.stderr.splitlines() if "chmod 600" in line]
    assert len(warnings) == 1 and str(elsewhere) in warnings[0]
    assert key.strip() not in warned.stdout + warned.stderr


@pytest.mark.parametrize(
    ("args", "stdin", "phrase"),
    [
        (["set", "crm-token"], "abc", "too short: expected at least 4"),  # short
        (["set", "crm-token"], "     \n", "empty or only whitespace"),  # blank
        (["set", "crm-token", "--rotate-every", "99999999999w"], VALUE, "3650d"),
        (["rotate", "quote-signing-key"], "xyz\n", "too short"),  # short, rotated
        (["rotate", "quote-signing-key", "--grace", "99999999999999w"], ROTATED, "30d"),
        (["rotate", "quote-signing-key", "--grace", "9" * 400 + "d"], ROTATED, "30d"),
    ],
)
async def test_secrets_set_and_rotate_refuse_values_and_durations_out_of_bounds(
    env: dict[str, str], store: RunStore, args: list[str], stdin: str, phrase: str
):
    assert secrets_cli(env, "set", "quote-signing-key", stdin=VALUE).returncode == 0
    before = await store.secret_versions()

    refused = secrets_cli(env, *args, stdin=stdin)

    assert refused.returncode == 2, refused.stderr
    assert phrase in refused.stderr
    assert "Traceback" not in refused.stderr
    assert VALUE not in refused.stderr and ROTATED not in refused.stderr
    assert await store.secret_versions() == before


async def test_secrets_set_refuses_a_name_sharing_an_environment_variable(
    env: dict[str, str], store: RunStore
):
    assert secrets_cli(env, "set", "erp-api", stdin=VALUE).returncode == 0

    refused = secrets_cli(env, "set", "ERP.API", stdin=ROTATED)

    assert refused.returncode == 4
    assert "LOBFLOWS_SECRET_ERP_API with secret 'erp-api'" in refused.stderr
    assert [r.name for r in await store.secret_records()] == ["erp-api"]


def test_secrets_set_with_a_wrong_key_says_the_key_does_not_open_the_vault(
    env: dict[str, str],
):
    assert secrets_cli(env, "set", "erpnext-api", stdin=VALUE).returncode == 0
    keyless = {k: v for k, v in env.items() if k != "LOBFLOWS_MASTER_KEY_FILE"}
    other_key = secrets_cli(env, "new-key").stdout.strip()

    refused = secrets_cli(
        {**keyless, "LOBFLOWS_MASTER_KEY": other_key}, "set", "newone", stdin=ROTATED
    )
    listed = secrets_cli(keyless, "list")
    usage = secrets_cli(keyless, "show-usage", "erpnext-api")

    assert refused.returncode == 4
    assert "error: the master key does not open the vault" in refused.stderr
    assert "secret 'erpnext-api' (version 1)" in refused.stderr
    assert VALUE not in refused.stderr and ROTATED not in refused.stderr
    # list and show-usage need no key, and show no values
    assert listed.returncode == 0, listed.stderr
    assert "erpnext-api" in listed.stdout and VALUE not in listed.stdout
    assert usage.returncode == 0, usage.stderr
    assert "erpnext-api (vault)" in usage.stdout and VALUE not in usage.stdout


def test_a_server_uses_a_secret_removed_and_set_again(
    env: dict[str, str], tmp_path: Path
):
    # Given a server whose webhook key is in the vault
    assert secrets_cli(env, "set", "quote-signing-key", stdin=VALUE).returncode == 0
    server_env = {**env, "LOBFLOWS_SECRETS_REFRESH_SECONDS": "0.2"}
    server = support.ServerProcess(server_env, QUOTE, tmp_path / "server.log").start()
    try:
        assert _post(server, VALUE).status_code == 200

        # When the key is removed and set again with a new value
        removed = secrets_cli(env, "remove", "quote-signing-key", "--force")
        again = secrets_cli(env, "set", "quote-signing-key", stdin=ROTATED)
        assert (removed.returncode, again.returncode) == (0, 0), again.stderr

        # Then the server takes the new value and refuses the removed one
        new_ok = _wait_for_status(server, ROTATED, 200)
        old = _post(server, VALUE)
    finally:
        server.stop()
    assert new_ok
    assert old.status_code == 401
