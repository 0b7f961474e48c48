"""Fixtures: a fresh run store on SQLite and on PostgreSQL, and the stand-ins."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lobflows.store import RunStore
from lobflows.testing.erpnext import ErpnextState, create_erpnext_app
from lobflows.testing.mailbox import Mailbox
from lobflows.testing.servers import ServerThread
from lobflows.testing.slack import SlackState, create_slack_app
from tests import support

ERPNEXT_KEY, ERPNEXT_SECRET = "test-api-key", "test-api-secret-value"
CHAT_PATH = "T0TEST/B0TEST/test-chat-token"


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A run store URL for an empty database, once per kind of store."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'runs.db'}"
        return
    with support.fresh_postgres_database() as url:
        yield url


@pytest.fixture
def sqlite_store_url(tmp_path: Path) -> str:
    """A SQLite run store, for tests of the command line and the web that
    behave alike on either store (the stores are compared where they differ)."""
    return f"sqlite:///{tmp_path / 'runs.db'}"


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[RunStore]:
    run_store = RunStore(store_url)
    await run_store.migrate()
    yield run_store
    await run_store.close()


@dataclass
class Standins:
    erpnext_url: str
    erpnext: ErpnextState
    chat_url: str
    chat: SlackState
    mailbox: Mailbox

    @property
    def chat_webhook(self) -> str:
        return f"{self.chat_url}/services/{CHAT_PATH}"

    @property
    def erpnext_credentials(self) -> str:
        """The erpnext-api secret value the stand-in accepts."""
        return f"{ERPNEXT_KEY}:{ERPNEXT_SECRET}"


@pytest.fixture
def standins() -> Iterator[Standins]:
    erpnext_app = create_erpnext_app(api_key=ERPNEXT_KEY, api_secret=ERPNEXT_SECRET)
    chat_app = create_slack_app(webhook_path_secret=CHAT_PATH)
    with (
        ServerThread(erpnext_app) as erpnext,
        ServerThread(chat_app) as chat,
        Mailbox() as mailbox,
    ):
        yield Standins(
            erpnext.url,
            erpnext_app.state.erpnext,
            chat.url,
            chat_app.state.slack,
            mailbox,
        )


@pytest.fixture
def onboarding_env(store_url: str, standins: Standins) -> dict[str, str]:
    """Environment for the onboarding example against the stand-ins."""
    return support.base_env(
        store_url,
        ERPNEXT_URL=standins.erpnext_url,
        SMTP_PORT=str(standins.mailbox.port),
        LOBFLOWS_SECRET_ERPNEXT_API=f"{ERPNEXT_KEY}:{ERPNEXT_SECRET}",
        LOBFLOWS_SECRET_HRIS_WEBHOOK_SECRET=support.WEBHOOK_KEY,
        LOBFLOWS_SECRET_FACILITIES_CHAT_WEBHOOK=standins.chat_webhook,
        LOBFLOWS_SECRET_TASK_LINK_KEY="test-task-link-key",
        # The throwaway directory of scripts/slapd.sh, started by services.sh.
        LOBFLOWS_SECRET_LDAP_ADMIN="lobflows-test-admin",
        LOBFLOWS_LEASE_SECONDS="2",
        LOBFLOWS_POLL_INTERVAL="0.1",
    )


@pytest.fixture
def onboarding_server(
    onboarding_env: dict[str, str], tmp_path: Path
) -> Iterator[support.ServerProcess]:
    server = support.ServerProcess(
        onboarding_env, support.ONBOARDING / "flows", tmp_path / "server.log"
    )
    server.start()
    yield server
    server.stop()
