"""``lobflows secrets rekey``: every vault version moves to a new master key
in one transaction, or none does."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from lobflows import errors
from lobflows.secrets import vault as secret_vault
from lobflows.store import RunStore
from tests import support

pytestmark = pytest.mark.acceptance
OLD_KEY, NEW_KEY = Fernet.generate_key().decode(), Fernet.generate_key().decode()
VALUES = {"crm-token": "crm-canary-0001", "erp-api": "erp-canary-0002"}
ROTATED = "erp-canary-0003"


def secrets_cli(
    env: dict[str, str], *args: str, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    return support.cli(env, "secrets", *args, stdin=stdin)


@pytest.fixture
def env(store_url: str) -> dict[str, str]:
    return support.base_env(store_url, LOBFLOWS_MASTER_KEY=OLD_KEY)


def fill_vault(env: dict[str, str]) -> None:
    """crm-token version 1, erp-api versions 1 and 2, under the old key."""
    for name, value in VALUES.items():
        assert secrets_cli(env, "set", name, stdin=value).returncode == 0
    assert secrets_cli(env, "rotate", "erp-api", stdin=ROTATED).returncode == 0


async def values_under(store: RunStore, key: str) -> dict[str, list[str]]:
    """Every stored value by secret, oldest version first, as the vault opened
    with `key` reads them; the vault names a version it cannot decrypt."""
    cipher = Fernet(key.encode())
    await secret_vault.Vault(store, cipher).refresh()
    values: dict[str, list[str]] = {}
    for record in await store.secret_versions():
        value = cipher.decrypt(record.ciphertext.encode()).decode()
        values.setdefault(record.name, []).append(value)
    return values


async def test_rekey_moves_every_version_to_the_new_key(
    env: dict[str, str], store: RunStore
):
    fill_vault(env)

    rekeyed = secrets_cli({**env, "LOBFLOWS_NEW_MASTER_KEY": NEW_KEY}, "rekey")

    assert rekeyed.returncode == 0, rekeyed.stderr
    assert "Re-encrypted 3 version(s) of 2 secret(s)" in rekeyed.stdout
    assert "crm-token: version 1" in rekeyed.stdout
    assert "erp-api: versions 1, 2" in rekeyed.stdout
    assert "set the new key in LOBFLOWS_MASTER_KEY" in rekeyed.stdout
    output = rekeyed.stdout + rekeyed.stderr
    assert not any(v in output for v in [*VALUES.values(), ROTATED, NEW_KEY])
    # The new key reads every version; the old one no longer does.
    assert await values_under(store, NEW_KEY) == {
        "crm-token": [VALUES["crm-token"]],
        "erp-api": [VALUES["erp-api"], ROTATED],
    }
    with pytest.raises(errors.ConfigurationError, match="cannot be decrypted"):
        await values_under(store, OLD_KEY)
    # and the secrets commands work on with the new key as the current one.
    moved = {**env, "LOBFLOWS_MASTER_KEY": NEW_KEY}
    rotated = secrets_cli(moved, "rotate", "crm-token", stdin="crm-canary-0004")
    assert rotated.returncode == 0, rotated.stderr
    [entry] = await store.audit_entries(action="secret_rekey")
    assert entry.actor.startswith("cli:") and entry.target == "vault"
    assert entry.detail == {"versions": {"crm-token": [1], "erp-api": [1, 2]}}


async def test_rekey_changes_nothing_when_a_version_is_under_another_key(
    env: dict[str, str], store: RunStore
):
    # Given a vault whose last version was stored under a stranger key
    fill_vault(env)
    stranger = Fernet(Fernet.generate_key())
    await store.rotate_secret(
        "erp-api", stranger.encrypt(b"foreign").decode(), grace_seconds=0
    )
    before = await store.secret_versions()

    # When it is rekeyed with the old key as the current one
    refused = secrets_cli({**env, "LOBFLOWS_NEW_MASTER_KEY": NEW_KEY}, "rekey")

    # Then it is refused, naming the version, and no ciphertext changed
    assert refused.returncode == 4
    assert "secret 'erp-api' (version 3) cannot be decrypted" in refused.stderr
    assert "Nothing was re-encrypted" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert await store.secret_versions() == before
    assert await store.audit_entries(action="secret_rekey") == []


async def test_rekey_with_a_wrong_current_key_leaves_the_store_unchanged(
    env: dict[str, str], store: RunStore
):
    fill_vault(env)
    before = await store.secret_versions()
    wrong = {**env, "LOBFLOWS_MASTER_KEY": Fernet.generate_key().decode()}

    refused = secrets_cli({**wrong, "LOBFLOWS_NEW_MASTER_KEY": NEW_KEY}, "rekey")

    assert refused.returncode == 4
    assert "secret 'crm-token' (version 1) cannot be decrypted" in refused.stderr
    assert await store.secret_versions() == before
    assert await values_under(store, OLD_KEY) == {
        "crm-token": [VALUES["crm-token"]],
        "erp-api": [VALUES["erp-api"], ROTATED],
    }


# Refused before the store is touched: one kind of store is enough.
@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    ("new_key", "phrase"),
    [
        (None, "no new master key: set LOBFLOWS_NEW_MASTER_KEY"),  # none given
        (OLD_KEY, "the new master key is the current one"),  # no change
        ("short-new-key", "LOBFLOWS_NEW_MASTER_KEY is malformed"),  # not a key
    ],
)
async def test_rekey_refuses_a_missing_unchanged_or_malformed_new_key(
    env: dict[str, str], store: RunStore, new_key: str | None, phrase: str
):
    fill_vault(env)
    before = await store.secret_versions()
    given = {} if new_key is None else {"LOBFLOWS_NEW_MASTER_KEY": new_key}

    refused = secrets_cli({**env, **given}, "rekey")

    assert refused.returncode == 4 and phrase in refused.stderr
    assert "short-new-key" not in refused.stderr
    assert await store.secret_versions() == before


def test_rekey_refuses_a_new_key_file_beside_the_store(tmp_path: Path):
    store_url = f"sqlite:///{tmp_path / 'runs.db'}"
    beside = tmp_path / "new.key"
    beside.write_text(NEW_KEY)
    env = support.base_env(store_url, LOBFLOWS_MASTER_KEY=OLD_KEY)
    support.create_store(store_url)

    refused = secrets_cli(env, "rekey", "--new-key-file", str(beside))

    assert refused.returncode == 4
    assert "same folder as the run store" in refused.stderr
