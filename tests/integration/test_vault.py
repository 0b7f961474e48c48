"""The encrypted vault on SQLite and PostgreSQL: versions, grace, refresh,
the inventory, and HashiCorp Vault through its stand-in."""

from __future__ import annotations

import asyncio
import stat
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from lobflows import errors, secrets
from lobflows.runtime import Runtime
from lobflows.secrets import SecretStore, backends, env_name, inventory, usage, vault
from lobflows.settings import Settings
from lobflows.store import RunStore, tables
from lobflows.testing.hashicorp_vault import create_hashicorp_vault_app
from lobflows.testing.servers import ServerThread

pytestmark = pytest.mark.integration

OLD, NEW = "api-token-old-0001", "api-token-new-0002"
FLOW = """flow: push
card:
  trigger: by hand
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
"""
CONNECTIONS = """connections:
  api:
    type: http
    base_url: BASE
    allow_networks: ["127.0.0.0/8"]
    auth: {kind: bearer, secret: api-token}
"""


@pytest.fixture(autouse=True)
def master_key(monkeypatch: pytest.MonkeyPatch) -> str:
    key = vault.new_key()
    monkeypatch.setenv(vault.MASTER_KEY_ENV, key)
    monkeypatch.delenv(vault.MASTER_KEY_FILE_ENV, raising=False)
    monkeypatch.delenv(backends.HASHICORP_URL_ENV, raising=False)
    return key


async def open_vault(store: RunStore) -> vault.Vault:
    return await vault.Vault.open(store, store.url)


async def test_vault_stores_ciphertext_only_and_reads_it_back(store: RunStore):
    writer = await open_vault(store)
    await store.add_secret("api-token", writer.encrypt(OLD), rotate_every_days=90)

    reader = await open_vault(store)

    assert reader.lookup("api-token") == OLD
    async with store.engine.connect() as conn:
        rows = (await conn.execute(sa.select(tables.secret_versions))).all()
    assert rows and all(OLD not in str(tuple(row)) for row in rows)
    [record] = await store.secret_records()
    assert (record.name, record.version, record.rotate_every_days) == (
        "api-token",
        1,
        90,
    )


async def test_vault_refuses_a_second_set_and_an_unknown_rotation(store: RunStore):
    v = await open_vault(store)
    await store.add_secret("api-token", v.encrypt(OLD), rotate_every_days=None)

    with pytest.raises(errors.ConfigurationError, match="already in the vault"):
        await store.add_secret("api-token", v.encrypt(NEW), rotate_every_days=None)
    with pytest.raises(errors.SecretNotFoundError, match="'nope' is not in the vault"):
        await store.rotate_secret("nope", v.encrypt(NEW), grace_seconds=1)


async def test_vault_names_the_secret_stored_under_another_key(
    store: RunStore, monkeypatch: pytest.MonkeyPatch
):
    v = await open_vault(store)
    await store.add_secret("api-token", v.encrypt(OLD), rotate_every_days=None)
    monkeypatch.setenv(vault.MASTER_KEY_ENV, vault.new_key())

    with pytest.raises(errors.ConfigurationError) as raised:
        await open_vault(store)

    message = str(raised.value)
    assert message.startswith("the master key does not open the vault")
    assert "secret 'api-token' (version 1)" in message
    assert OLD not in message


async def test_vault_without_a_key_names_what_it_holds(
    store: RunStore, monkeypatch: pytest.MonkeyPatch
):
    v = await open_vault(store)
    await store.add_secret("api-token", v.encrypt(OLD), rotate_every_days=None)
    monkeypatch.delenv(vault.MASTER_KEY_ENV)

    with pytest.raises(
        errors.ConfigurationError, match=r"holds 1 secret\(s\) \(api-token\)"
    ):
        await open_vault(store)


async def test_rotation_keeps_the_old_value_for_runs_started_before_until_grace_ends(
    store: RunStore,
):
    v = await open_vault(store)
    await store.add_secret("api-token", v.encrypt(OLD), rotate_every_days=None)
    before = time.time()
    await asyncio.sleep(0.01)
    await store.rotate_secret("api-token", v.encrypt(NEW), grace_seconds=0.5)
    await v.refresh()

    started = secrets.run_started_at.set(before)
    try:
        in_grace = v.lookup("api-token")
        accepted = v.values_in_grace("api-token")
        await asyncio.sleep(0.6)
        after_grace = v.lookup("api-token")
    finally:
        secrets.run_started_at.reset(started)

    assert in_grace == OLD
    assert accepted == [OLD]
    assert after_grace == NEW
    assert v.lookup("api-token") == NEW  # outside any run
    assert v.values_in_grace("api-token") == []


async def test_a_rotation_in_another_process_is_seen_after_a_refresh(store: RunStore):
    here = await open_vault(store)
    await store.add_secret("api-token", here.encrypt(OLD), rotate_every_days=None)
    await here.refresh()
    elsewhere = await open_vault(store)

    await store.rotate_secret("api-token", elsewhere.encrypt(NEW), grace_seconds=60)
    before_refresh = here.lookup("api-token")
    await here.refresh()

    assert (before_refresh, here.lookup("api-token")) == (OLD, NEW)


async def test_a_key_file_replaced_after_a_rekey_is_read_again_on_refresh(
    store: RunStore,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path_factory: pytest.TempPathFactory,
):
    key_file = tmp_path_factory.mktemp("keys") / "master.key"
    key_file.write_text(vault.new_key())
    key_file.chmod(0o600)
    monkeypatch.delenv(vault.MASTER_KEY_ENV)
    monkeypatch.setenv(vault.MASTER_KEY_FILE_ENV, str(key_file))
    running = await open_vault(store)
    await store.add_secret("api-token", running.encrypt(OLD), rotate_every_days=None)
    await running.refresh()
    new_key = vault.new_key()

    await vault.rekey(store, current=running.cipher, new=Fernet(new_key))
    with pytest.raises(errors.ConfigurationError, match="does not open the vault"):
        await running.refresh()  # the file still holds the old key
    kept = running.lookup("api-token")
    key_file.write_text(new_key + "\n")
    await running.refresh()
    elsewhere = await open_vault(store)
    await store.rotate_secret("api-token", elsewhere.encrypt(NEW), grace_seconds=60)
    await running.refresh()

    assert kept == OLD
    assert running.lookup("api-token") == NEW


async def test_an_inline_master_key_is_not_replaced_on_refresh(store: RunStore):
    running = await open_vault(store)
    await store.add_secret("api-token", running.encrypt(OLD), rotate_every_days=None)
    await running.refresh()
    await vault.rekey(store, current=running.cipher, new=Fernet(vault.new_key()))

    with pytest.raises(errors.ConfigurationError, match="does not open the vault"):
        await running.refresh()

    assert running.lookup("api-token") == OLD


async def test_a_secret_removed_and_set_again_is_seen_after_a_refresh(
    store: RunStore,
):
    # Given a process that has loaded version 1 of a secret
    here = await open_vault(store)
    await store.add_secret("api-token", here.encrypt(OLD), rotate_every_days=None)
    await here.refresh()

    # When another process removes it, then sets it again (version 1 again)
    elsewhere = await open_vault(store)
    await store.remove_secret("api-token")
    await here.refresh()
    while_removed = here.lookup("api-token")
    await store.add_secret("api-token", elsewhere.encrypt(NEW), rotate_every_days=None)
    await here.refresh()

    # Then the removal and the new value are both seen at the next refresh
    assert while_removed is None
    assert here.lookup("api-token") == NEW
    assert here.current_version("api-token") == 1


async def test_a_secret_removed_and_set_again_between_two_refreshes_is_new(
    store: RunStore,
):
    here = await open_vault(store)
    await store.add_secret("api-token", here.encrypt(OLD), rotate_every_days=None)
    await here.refresh()

    await store.remove_secret("api-token")
    await store.add_secret("api-token", here.encrypt(NEW), rotate_every_days=None)
    await here.refresh()

    assert here.lookup("api-token") == NEW


@pytest.mark.parametrize(
    ("held", "added"),
    [
        ("upper", "UPPER"),  # case only
        ("a-b", "a_b"),  # '-' and '_'
        ("a-b", "a.b"),  # '-' and '.'
    ],
)
async def test_vault_refuses_a_name_sharing_another_secrets_environment_variable(
    store: RunStore, held: str, added: str
):
    v = await open_vault(store)
    await store.add_secret(held, v.encrypt(OLD), rotate_every_days=None)

    with pytest.raises(errors.ConfigurationError) as raised:
        await store.add_secret(added, v.encrypt(NEW), rotate_every_days=None)

    message = str(raised.value)
    assert f"secret {added!r} would share the environment variable" in message
    assert env_name(held) in message and f"with secret {held!r}" in message
    assert [r.name for r in await store.secret_records()] == [held]


async def test_sqlite_store_file_is_created_readable_by_its_owner_only(
    tmp_path: Path,
):
    path = tmp_path / "private.db"
    run_store = RunStore(f"sqlite:///{path}")
    try:
        await run_store.migrate()
        v = await open_vault(run_store)
        await run_store.add_secret("api-token", v.encrypt(OLD), rotate_every_days=None)
    finally:
        await run_store.close()

    assert stat.S_IMODE(path.stat().st_mode) == 0o600


async def test_reads_are_flushed_to_the_store_in_one_write(store: RunStore):
    secret_store = SecretStore({"mail-password": "mail-value-123"})
    secret_store.get("mail-password")
    secret_store.get("mail-password")

    await usage.flush_reads(secret_store, store)
    await usage.flush_reads(secret_store, store)  # nothing new: no write

    uses = await store.secret_uses()
    assert uses["mail-password"].last_used_at is not None
    assert uses["mail-password"].used_by == []


class Api:
    """Records the Authorization header of each call."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def app(self) -> Starlette:
        async def handle(request: Request) -> JSONResponse:
            self.seen.append(request.headers.get("authorization", ""))
            return JSONResponse({"ok": True})

        return Starlette(routes=[Route("/orders", handle, methods=["POST"])])


def write_project(folder: Path, base_url: str) -> None:
    (folder / "push.yaml").write_text(FLOW)
    (folder / "connections.yaml").write_text(CONNECTIONS.replace("BASE", base_url))


async def test_a_run_started_before_a_rotation_calls_with_the_old_value(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # Given a secret in the vault, a runtime, and a run stored but not executed
    api = Api()
    monkeypatch.setenv(env_name("push-signing-key"), "push-signing-value")
    with ServerThread(api.app()) as server:
        write_project(tmp_path, server.url)
        setup = RunStore(store_url)
        await setup.migrate()
        v = await open_vault(setup)
        await setup.add_secret("api-token", v.encrypt(OLD), rotate_every_days=None)
        runtime = await Runtime.open(Settings(database_url=store_url), tmp_path)
        try:
            early, _ = await runtime.engine.start_run(
                "push", input={"n": 1}, trigger="manual", claim=True
            )
            await asyncio.sleep(0.01)

            # When another process rotates and this one refreshes
            await setup.rotate_secret("api-token", v.encrypt(NEW), grace_seconds=60)
            await usage.refresh_once(runtime.secrets, runtime.store)
            late, _ = await runtime.engine.start_run(
                "push", input={"n": 2}, trigger="manual", claim=True
            )
            await runtime.engine.execute(early)
            await runtime.engine.execute(late)
            await runtime.store.flush()
            infos = await inventory.secret_inventory(runtime)
        finally:
            await runtime.close()
            await setup.close()

    # Then the early run used the old value, the late one the new
    assert api.seen == [f"Bearer {OLD}", f"Bearer {NEW}"]
    by_name = {i.name: i for i in infos}
    token = by_name["api-token"]
    assert (token.backend, token.version, token.overdue) == ("vault", 2, False)
    assert token.used_by == ["connection api"]
    assert token.last_used_at is not None and token.rotated_at is not None
    signing = by_name["push-signing-key"]
    assert (signing.backend, signing.used_by) == (
        "env",
        ["flow push (webhook signature)"],
    )
    assert "push_signing_key" not in by_name  # the variable's own spelling


async def test_hashicorp_vault_backend_reads_and_refreshes_kv_v2(
    store: RunStore, monkeypatch: pytest.MonkeyPatch
):
    app = create_hashicorp_vault_app(token="hvs.test-token-1234")
    kv = app.state.vault
    kv.put("lobflows/crm-token", {"value": "crm-from-hashicorp-1"})
    kv.put("lobflows/shared", {"value": "shared-from-hashicorp"})
    kv.put("other/ignored", {"value": "not-under-the-path"})
    v = await open_vault(store)
    await store.add_secret(
        "shared", v.encrypt("shared-from-vault"), rotate_every_days=None
    )
    with ServerThread(app) as server:
        monkeypatch.setenv(backends.HASHICORP_URL_ENV, server.url)
        monkeypatch.setenv(env_name("hashicorp-vault-token"), "hvs.test-token-1234")
        secret_store = SecretStore.load()
        await secret_store.attach(store, database_url=store.url)

        first = secret_store.get("crm-token")
        kv.put("lobflows/crm-token", {"value": "crm-from-hashicorp-2"})
        await usage.refresh_once(secret_store, store)
        second = secret_store.get("crm-token")
        shared = (secret_store.get("shared"), secret_store.backend_of("shared"))
        names = secret_store.names()

    assert (first, second) == ("crm-from-hashicorp-1", "crm-from-hashicorp-2")
    assert shared == ("shared-from-vault", "vault")  # the vault comes first
    assert "ignored" not in names and "crm-token" in names


async def test_hashicorp_vault_backend_names_a_refused_token(
    store: RunStore, monkeypatch: pytest.MonkeyPatch
):
    app = create_hashicorp_vault_app(token="hvs.right-token")
    app.state.vault.put("lobflows/crm-token", {"value": "crm-value-1"})
    with ServerThread(app) as server:
        monkeypatch.setenv(backends.HASHICORP_URL_ENV, server.url)
        monkeypatch.setenv(env_name("hashicorp-vault-token"), "hvs.wrong-token")
        secret_store = SecretStore.load()

        with pytest.raises(errors.ConfigurationError) as raised:
            await secret_store.attach(store, database_url=store.url)

    assert f"HashiCorp Vault at {server.url} refused the token" in str(raised.value)
    assert "hvs.wrong-token" not in str(raised.value)
