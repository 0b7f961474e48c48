"""Connection checks (`Connector.check`) against the real servers and stand-ins:
each proves what it says on success and names what is wrong on failure,
without a secret in the message."""

from __future__ import annotations

import shutil
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lobflows import errors
from lobflows.connectors import (
    base,
    chat_webhooks,
    erpnext,
    imap,
    mqtt,
    msgraph,
    nats,
    rabbitmq,
    redis_streams,
    salesforce,
    slack,
    smtp,
)
from lobflows.secrets import SecretStore
from lobflows.testing import ServerThread, create_erpnext_app
from lobflows.testing.chat_webhooks import create_mattermost_app, create_teams_app
from lobflows.testing.mailbox import Mailbox
from lobflows.testing.msgraph import create_msgraph_app
from lobflows.testing.salesforce import create_salesforce_app
from lobflows.testing.slack import create_slack_app
from tests.integration.connectors import test_files as files_tests
from tests.integration.connectors import test_imap as imap_tests

pytestmark = pytest.mark.integration

SECRET_VALUE = "check-secret-value-9"
BOT_TOKEN = "xoxb-check-token-9"
SLACK_HOOK = "T0CHECK/B0CHECK/check-hook-secret"
MM_HOOK = "mmcheckhooksecret42"
TEAMS_PATH = "tenant-9/IncomingWebhook/check/secret"

# The scripts these fixtures run leave their servers up for later tests.
dovecot = imap_tests.dovecot
sshd = files_tests.sshd


def closed_port() -> int:
    """A loopback port nothing listens on: bound, read, and closed again."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def check(connector: base.Connector) -> str:
    try:
        return await connector.check()
    finally:
        await connector.close()


async def failed_check(connector: base.Connector) -> errors.ConnectorError:
    with pytest.raises(errors.ConnectorError) as caught:
        await check(connector)
    return caught.value


def test_every_built_in_connection_type_has_a_check() -> None:
    kinds = base.connector_classes()

    without = [k for k, cls in kinds.items() if cls.check is base.Connector.check]

    assert without == []
    assert "teams_webhook" in kinds


# ------------------------------------------------------------------ HTTP APIs


@pytest.fixture(scope="module")
def erpnext_server() -> Iterator[ServerThread]:
    app = create_erpnext_app(api_key="check-key", api_secret=SECRET_VALUE)
    with ServerThread(app) as server:
        yield server


def erp(url: str, credentials: str) -> erpnext.ErpnextConnector:
    settings = erpnext.ErpnextSettings.model_validate(
        {"base_url": url, "auth_secret": "erp", "timeout_seconds": 5}
    )
    return erpnext.ErpnextConnector("erp", settings, SecretStore({"erp": credentials}))


async def test_erpnext_check_names_the_user_the_key_logs_in_as(
    erpnext_server: ServerThread,
) -> None:
    text = await check(erp(erpnext_server.url, f"check-key:{SECRET_VALUE}"))

    assert text == f"logged in to {erpnext_server.url}/ as Administrator"


async def test_erpnext_check_fails_on_a_wrong_api_secret(
    erpnext_server: ServerThread,
) -> None:
    error = await failed_check(erp(erpnext_server.url, "check-key:wrong-secret-1"))

    assert isinstance(error, errors.RemoteStatusError)
    assert error.context["status"] == 401
    assert "frappe.auth.get_logged_user" in str(error)
    assert "wrong-secret-1" not in str(error)


@pytest.fixture(scope="module")
def slack_server() -> Iterator[ServerThread]:
    app = create_slack_app(bot_token=BOT_TOKEN, webhook_path_secret=SLACK_HOOK)
    with ServerThread(app) as server:
        yield server


def slack_api(url: str, token: str) -> slack.SlackConnector:
    settings = slack.SlackSettings.model_validate(
        {"base_url": f"{url}/api", "token_secret": "bot", "timeout_seconds": 5}
    )
    return slack.SlackConnector("chat", settings, SecretStore({"bot": token}))


async def test_slack_check_runs_auth_test_and_names_the_bot(
    slack_server: ServerThread,
) -> None:
    text = await check(slack_api(slack_server.url, BOT_TOKEN))

    assert text == "authenticated as lobflows-bot in team Stand-in"
    state = slack_server.app.state.slack  # type: ignore[attr-defined]
    assert state.posts == []


async def test_slack_check_fails_on_a_wrong_token(slack_server: ServerThread) -> None:
    error = await failed_check(slack_api(slack_server.url, "xoxb-wrong-token"))

    assert "auth.test failed: invalid_auth" in str(error)
    assert error.context["code"] == "invalid_auth"
    assert "xoxb-wrong-token" not in str(error)


@pytest.fixture(scope="module")
def salesforce_server() -> Iterator[ServerThread]:
    app = create_salesforce_app(client_id="sf-check", client_secret=SECRET_VALUE)
    with ServerThread(app) as server:
        yield server


def sf(url: str, secret: str) -> salesforce.SalesforceConnector:
    settings = salesforce.SalesforceSettings.model_validate(
        {
            "instance_url": url,
            "token_url": f"{url}/services/oauth2/token",
            "client_id": "sf-check",
            "secret": "sf",
            "timeout_seconds": 5,
        }
    )
    return salesforce.SalesforceConnector("crm", settings, SecretStore({"sf": secret}))


async def test_salesforce_check_gets_a_token_and_reads_the_daily_allowance(
    salesforce_server: ServerThread,
) -> None:
    state = salesforce_server.app.state.salesforce  # type: ignore[attr-defined]
    issued = state.tokens_issued

    text = await check(sf(salesforce_server.url, SECRET_VALUE))

    assert text.startswith("token obtained; ")
    assert text.endswith(" of 15000 daily API requests left")
    assert state.tokens_issued == issued + 1
    assert state.requests["GET /services/data/v60.0/limits"] >= 1


async def test_salesforce_check_fails_when_the_client_secret_is_refused(
    salesforce_server: ServerThread,
) -> None:
    error = await failed_check(sf(salesforce_server.url, "wrong-sf-secret"))

    assert "refused the client credentials (invalid_client)" in str(error)
    assert "wrong-sf-secret" not in str(error)


@pytest.fixture(scope="module")
def graph_server() -> Iterator[ServerThread]:
    app = create_msgraph_app(client_id="graph-check", client_secret=SECRET_VALUE)
    with ServerThread(app) as server:
        yield server


def graph(url: str, secret: str) -> msgraph.MsGraphConnector:
    settings = msgraph.MsGraphSettings.model_validate(
        {
            "base_url": f"{url}/v1.0",
            "token_url": f"{url}/contoso.example/oauth2/v2.0/token",
            "client_id": "graph-check",
            "secret": "graph",
            "timeout_seconds": 5,
        }
    )
    return msgraph.MsGraphConnector("graph", settings, SecretStore({"graph": secret}))


async def test_msgraph_check_gets_a_token_and_reads_one_user(
    graph_server: ServerThread,
) -> None:
    text = await check(graph(graph_server.url, SECRET_VALUE))

    assert text == "token obtained; GET /users answered 200"
    state = graph_server.app.state.msgraph  # type: ignore[attr-defined]
    assert state.requests["GET /v1.0/users"] >= 1


async def test_msgraph_check_fails_when_the_client_secret_is_refused(
    graph_server: ServerThread,
) -> None:
    error = await failed_check(graph(graph_server.url, "wrong-graph-secret"))

    assert "Entra token endpoint refused the client credentials" in str(error)
    assert "wrong-graph-secret" not in str(error)


# ------------------------------------------------------------------ chat webhooks


@pytest.fixture(scope="module")
def mattermost_server() -> Iterator[ServerThread]:
    with ServerThread(create_mattermost_app(hook_key=MM_HOOK)) as server:
        yield server


@pytest.fixture(scope="module")
def teams_server() -> Iterator[ServerThread]:
    with ServerThread(create_teams_app(connector_path=TEAMS_PATH)) as server:
        yield server


def webhook(kind: str, url: str) -> base.Connector:
    classes: dict[str, Any] = {
        "slack_webhook": (slack.SlackWebhookSettings, slack.SlackWebhookConnector),
        "mattermost_webhook": (
            chat_webhooks.ChatWebhookSettings,
            chat_webhooks.MattermostWebhookConnector,
        ),
        "teams_webhook": (
            chat_webhooks.TeamsWebhookSettings,
            chat_webhooks.TeamsWebhookConnector,
        ),
    }
    settings_model, connector = classes[kind]
    settings = settings_model.model_validate(
        {"url_secret": "hook", "timeout_seconds": 5}
    )
    return connector("alerts", settings, SecretStore({"hook": url}))  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("kind", "server", "path"),
    [
        ("slack_webhook", "slack_server", f"/services/{SLACK_HOOK}"),
        ("mattermost_webhook", "mattermost_server", f"/hooks/{MM_HOOK}"),
        ("teams_webhook", "teams_server", f"/webhookb2/{TEAMS_PATH}"),
    ],
)
async def test_chat_webhook_check_reaches_the_host_and_posts_nothing(
    kind: str, server: str, path: str, request: pytest.FixtureRequest
) -> None:
    thread: ServerThread = request.getfixturevalue(server)
    state = getattr(thread.app.state, "slack", None) or thread.app.state.chat  # type: ignore[attr-defined]
    state.reset()
    port = thread.url.rsplit(":", 1)[1]

    text = await check(webhook(kind, f"{thread.url}{path}"))

    assert text == (
        f"127.0.0.1:{port} accepts TCP connections; "
        "nothing posted, so the webhook itself is not proven"
    )
    assert state.messages == []
    assert sum(state.request_counts.values()) == 0


@pytest.mark.parametrize(
    "kind", ["slack_webhook", "mattermost_webhook", "teams_webhook"]
)
async def test_chat_webhook_check_fails_on_a_closed_port_naming_only_the_host(
    kind: str,
) -> None:
    port = closed_port()

    error = await failed_check(webhook(kind, f"http://127.0.0.1:{port}/{MM_HOOK}"))

    assert isinstance(error, errors.TransportError)
    assert f"alerts: cannot reach 127.0.0.1:{port}" in str(error)
    assert MM_HOOK not in str(error)


async def test_chat_webhook_check_fails_when_an_https_host_speaks_no_tls(
    mattermost_server: ServerThread,
) -> None:
    url = mattermost_server.url.replace("http://", "https://")

    error = await failed_check(webhook("mattermost_webhook", f"{url}/hooks/{MM_HOOK}"))

    assert "alerts: the TLS handshake with 127.0.0.1:" in str(error)
    assert not error.retryable
    assert MM_HOOK not in str(error)


# ------------------------------------------------------------------ mail


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    with Mailbox(credentials=("flows", SECRET_VALUE)) as server:
        yield server


def smtp_connection(port: int, password: str) -> smtp.SmtpConnector:
    settings = smtp.SmtpSettings.model_validate(
        {
            "host": "127.0.0.1",
            "port": port,
            "security": "none",
            "username": "flows",
            "password_secret": "mail",
            "from": "flows@example.com",
            "timeout_seconds": 5,
        }
    )
    return smtp.SmtpConnector("mail", settings, SecretStore({"mail": password}))


async def test_smtp_check_logs_in_and_sends_no_mail(mailbox: Mailbox) -> None:
    text = await check(smtp_connection(mailbox.port, SECRET_VALUE))

    assert text == (
        f"127.0.0.1:{mailbox.port} accepted EHLO, login as flows; no mail sent"
    )
    assert mailbox.messages == []


async def test_smtp_check_fails_on_a_wrong_password(mailbox: Mailbox) -> None:
    error = await failed_check(smtp_connection(mailbox.port, "wrong-mail-pass"))

    assert f"127.0.0.1:{mailbox.port} refused the login as 'flows': 535" in str(error)
    assert not error.retryable
    assert "wrong-mail-pass" not in str(error)


async def test_smtp_check_fails_on_a_closed_port() -> None:
    error = await failed_check(smtp_connection(closed_port(), SECRET_VALUE))

    assert isinstance(error, errors.TransportError)
    assert "mail: cannot talk to 127.0.0.1:" in str(error)


def imap_connection(password: str, mailbox: str = "INBOX") -> imap.ImapConnector:
    settings = imap.ImapSettings.model_validate(
        {
            "host": imap_tests.HOST,
            "port": imap_tests.PORT,
            "security": "none",
            "username": imap_tests.USER,
            "password_secret": "imap",
            "mailbox": mailbox,
            "timeout_seconds": 10,
        }
    )
    return imap.ImapConnector("inbox", settings, SecretStore({"imap": password}))


async def test_imap_check_logs_in_and_selects_the_mailbox(folder: str) -> None:
    text = await check(imap_connection(imap_tests.PASSWORD, folder))

    assert text == f"logged in as {imap_tests.USER}; {folder} holds 0 messages"


async def test_imap_check_fails_on_a_wrong_password(dovecot: None) -> None:
    error = await failed_check(imap_connection("wrong-imap-pass"))

    assert f"login as {imap_tests.USER!r} was refused" in str(error)
    assert "wrong-imap-pass" not in str(error)


async def test_imap_check_fails_when_the_mailbox_is_missing(dovecot: None) -> None:
    error = await failed_check(imap_connection(imap_tests.PASSWORD, "no-such-box"))

    assert "inbox: server refused" in str(error)


@pytest.fixture
def folder(dovecot: None) -> Iterator[str]:
    """A fresh, empty mailbox of the test user."""
    name = f"check-{uuid.uuid4().hex[:12]}"
    with imap_tests.session() as client:
        assert client.create(name)[0] == "OK"
    yield name
    with imap_tests.session() as client:
        client.delete(name)


# ------------------------------------------------------------------ brokers


def rabbit(port: int, password: str) -> rabbitmq.RabbitmqConnector:
    settings = rabbitmq.RabbitmqSettings.model_validate(
        {
            "host": "127.0.0.1",
            "port": port,
            "user": "guest",
            "password_secret": "mq",
            "timeout_seconds": 5,
        }
    )
    return rabbitmq.RabbitmqConnector("mq", settings, SecretStore({"mq": password}))


async def test_rabbitmq_check_connects_with_the_credentials() -> None:
    text = await check(rabbit(5672, "guest"))

    assert text == "connected to 127.0.0.1:5672, virtual host '/', as guest"


async def test_rabbitmq_check_fails_on_a_wrong_password() -> None:
    error = await failed_check(rabbit(5672, "wrong-mq-pass"))

    assert "mq: check: the broker refused the credentials" in str(error)
    assert not error.retryable
    assert "wrong-mq-pass" not in str(error)


async def test_rabbitmq_check_fails_on_a_closed_port() -> None:
    error = await failed_check(rabbit(closed_port(), "guest"))

    assert isinstance(error, errors.TransportError)


def nats_bus(port: int) -> nats.NatsConnector:
    settings = nats.NatsSettings.model_validate(
        {"url": f"nats://127.0.0.1:{port}", "timeout_seconds": 5}
    )
    return nats.NatsConnector("bus", settings, SecretStore())


async def test_nats_check_connects_and_reaches_jetstream() -> None:
    text = await check(nats_bus(4222))

    assert text.startswith("connected to nats://127.0.0.1:4222; JetStream answers")


async def test_nats_check_fails_on_a_closed_port() -> None:
    error = await failed_check(nats_bus(closed_port()))

    assert isinstance(error, errors.TransportError)
    assert str(error).startswith("bus: check failed:")


def redis_bus(port: int) -> redis_streams.RedisStreamConnector:
    settings = redis_streams.RedisStreamSettings.model_validate(
        {"url": f"redis://127.0.0.1:{port}/0", "timeout_seconds": 5}
    )
    return redis_streams.RedisStreamConnector("cache", settings, SecretStore())


async def test_redis_stream_check_pings_the_server() -> None:
    text = await check(redis_bus(6379))

    assert text == "PING answered by 127.0.0.1:6379, database 0"


async def test_redis_stream_check_fails_on_a_closed_port() -> None:
    error = await failed_check(redis_bus(closed_port()))

    assert isinstance(error, errors.TransportError)
    assert str(error).startswith("cache: check failed:")


def mqtt_bus(port: int) -> mqtt.MqttConnector:
    settings = mqtt.MqttSettings.model_validate(
        {"host": "127.0.0.1", "port": port, "timeout_seconds": 5}
    )
    return mqtt.MqttConnector("plant", settings, SecretStore())


async def test_mqtt_check_connects_and_disconnects() -> None:
    text = await check(mqtt_bus(1883))

    assert text == "connected to 127.0.0.1:1883 anonymously"


async def test_mqtt_check_fails_on_a_closed_port() -> None:
    error = await failed_check(mqtt_bus(closed_port()))

    assert isinstance(error, errors.TransportError)
    assert str(error).startswith("plant: check failed:")


# ------------------------------------------------------------------ files


async def test_files_check_lists_the_local_folder(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("id\n1\n")
    (tmp_path / "b.csv").write_text("id\n2\n")
    (tmp_path / "sub").mkdir()

    text = await check(files_tests.folder_connector(tmp_path))

    assert text == f"listed {tmp_path}: 2 files"


async def test_files_check_fails_when_the_local_folder_is_missing(
    tmp_path: Path,
) -> None:
    error = await failed_check(files_tests.folder_connector(tmp_path / "gone"))

    assert f"inbox: cannot list the folder {tmp_path / 'gone'}" in str(error)


async def test_files_check_logs_in_over_sftp_and_lists_the_root(
    sftp_root: str,
) -> None:
    (files_tests.SFTP_HOME / sftp_root / "one.csv").write_text("id\n1\n")

    text = await check(files_tests.sftp_connector(sftp_root))

    assert text == (
        f"logged in to 127.0.0.1:{files_tests.SSHD_PORT} as {files_tests.SFTP_USER}; "
        f"listed {files_tests.SFTP_HOME / sftp_root}: 1 files"
    )


async def test_files_check_fails_over_sftp_on_a_closed_port(sshd: None) -> None:
    connector = files_tests.sftp_connector(".", port=closed_port())

    error = await failed_check(connector)

    assert isinstance(error, errors.TransportError)
    assert str(error).startswith("drop: connect to 127.0.0.1:")


@pytest.fixture
def sftp_root(sshd: None) -> Iterator[str]:
    """A fresh folder in the SFTP user's home, removed afterwards."""
    name = f"check-{uuid.uuid4().hex[:10]}"
    folder = files_tests.SFTP_HOME / name
    folder.mkdir()
    shutil.chown(folder, files_tests.SFTP_USER, files_tests.SFTP_USER)
    yield name
    shutil.rmtree(folder, ignore_errors=True)
