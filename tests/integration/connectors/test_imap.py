"""The imap connector against a throwaway Dovecot, and smtp attachments.

scripts/dovecot.sh starts the server (127.0.0.1:1143, plain IMAP); each test
works in a mailbox of its own, created here and deleted afterwards.
"""

from __future__ import annotations

import base64
import imaplib
import socket
import subprocess
import uuid
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from lobflows import errors
from lobflows.connectors import imap, smtp
from lobflows.connectors.base import CallContext
from lobflows.runtime import Runtime
from lobflows.secrets import SecretStore
from lobflows.settings import Settings
from lobflows.triggers.poll import Poller
from tests import support
from tests.conftest import Standins

pytestmark = pytest.mark.integration

HOST, PORT = "127.0.0.1", 1143
USER, PASSWORD = "flows@example.com", "lobflows-test-mail"
SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "dovecot.sh"
CONTEXT = CallContext(
    run_id="r-1", flow="mail", step="fetch", attempt=1, timeout_seconds=10
)


def is_up() -> bool:
    try:
        with socket.create_connection((HOST, PORT), timeout=2) as sock:
            return sock.recv(4) == b"* OK"
    except OSError:
        return False


@pytest.fixture(scope="session")
def dovecot() -> None:
    if not is_up():
        subprocess.run(["bash", str(SCRIPT)], check=True, timeout=600)


@pytest.fixture
def folder(dovecot: None) -> Iterator[str]:
    """A fresh mailbox of the test user."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    with session() as client:
        assert client.create(name)[0] == "OK"
    yield name
    with session() as client:
        client.delete(name)


class session:
    """An imaplib session as the test user."""

    def __enter__(self) -> imaplib.IMAP4:
        self.client = imaplib.IMAP4(HOST, PORT, timeout=10)
        self.client.login(USER, PASSWORD)
        return self.client

    def __exit__(self, *exc: object) -> None:
        self.client.logout()


def deliver(folder: str, message: EmailMessage) -> None:
    with session() as client:
        status, _ = client.append(folder, None, None, message.as_bytes())
        assert status == "OK"


def mail(subject: str, *, sender: str = "Ann <ann@example.com>") -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = USER
    message["Subject"] = subject
    message["Date"] = "Tue, 02 Dec 2025 09:30:00 +0000"
    message["Message-ID"] = f"<{uuid.uuid4().hex}@example.com>"
    message.set_content(f"Body of {subject}\n")
    return message


def connector(folder: str, **overrides: Any) -> imap.ImapConnector:
    password = overrides.pop("password", PASSWORD)
    settings = imap.ImapSettings.model_validate(
        {
            "host": HOST,
            "port": PORT,
            "security": "none",
            "username": USER,
            "password_secret": "imap-password",
            "mailbox": folder,
            "timeout_seconds": 5,
            **overrides,
        }
    )
    secrets = SecretStore({"imap-password": password})
    return imap.ImapConnector("mail", settings, secrets)


async def test_imap_fetch_new_returns_messages_with_their_fields(folder: str):
    message = mail("Invoice 42")
    message.add_alternative("<p>Body of Invoice 42</p>", subtype="html")
    message.add_attachment(
        b"%PDF-1.4 test", maintype="application", subtype="pdf", filename="inv.pdf"
    )
    deliver(folder, message)

    found = await connector(folder).call("fetch_new", {"since_uid": 0}, CONTEXT)

    assert len(found) == 1
    got = found[0]
    assert got["uid"] == 1 and got["uidvalidity"] > 0
    assert got["message_id"] == message["Message-ID"]
    assert got["from"] == "Ann <ann@example.com>" and got["to"] == USER
    assert got["subject"] == "Invoice 42"
    assert got["date"] == "2025-12-02T09:30:00+00:00"
    assert got["text"] == "Body of Invoice 42\n"
    assert "<p>Body of Invoice 42</p>" in got["html"]
    assert got["attachments"] == [
        {"filename": "inv.pdf", "content_type": "application/pdf", "size": 13}
    ]


async def test_imap_fetch_new_lists_only_messages_above_the_watermark(folder: str):
    for subject in ("one", "two", "three"):
        deliver(folder, mail(subject))
    mailbox = connector(folder)

    newer = await mailbox.call("fetch_new", {"since_uid": 1}, CONTEXT)
    limited = await mailbox.call("fetch_new", {"since_uid": 0, "limit": 2}, CONTEXT)
    # "4:*" matches the highest message on the server; it must not come back.
    none = await mailbox.call("fetch_new", {"since_uid": 3}, CONTEXT)

    assert [m["subject"] for m in newer] == ["two", "three"]
    assert [m["uid"] for m in limited] == [1, 2]
    assert none == []


async def test_imap_fetch_new_resets_the_watermark_when_uidvalidity_changes(
    folder: str,
):
    deliver(folder, mail("one"))
    mailbox = connector(folder)
    [first] = await mailbox.call("fetch_new", {"since_uid": 0}, CONTEXT)

    stale = {"since_uid": 1, "uidvalidity": first["uidvalidity"] - 1}
    again = await mailbox.call("fetch_new", stale, CONTEXT)

    assert [m["uid"] for m in again] == [1]


async def test_imap_mark_seen_and_move(folder: str):
    deliver(folder, mail("one"))
    deliver(folder, mail("two"))
    archive = f"{folder}-archive"
    with session() as client:
        client.create(archive)
    mailbox = connector(folder)
    try:
        await mailbox.call("mark_seen", {"uid": 1}, CONTEXT)
        await mailbox.call("move", {"uid": 2, "mailbox": archive}, CONTEXT)
        with session() as client:
            client.select(folder, readonly=True)
            _, seen = client.uid("SEARCH", "SEEN")
            _, left = client.uid("SEARCH", "ALL")
            client.select(archive, readonly=True)
            _, moved = client.uid("SEARCH", "ALL")
    finally:
        with session() as client:
            client.delete(archive)

    assert seen == [b"1"] and left == [b"1"] and moved == [b"1"]


async def test_imap_refuses_a_uid_from_another_uidvalidity(folder: str):
    deliver(folder, mail("one"))

    with pytest.raises(errors.ConnectorError) as caught:
        await connector(folder).call("mark_seen", {"uid": 1, "uidvalidity": 1}, CONTEXT)

    assert not caught.value.retryable


async def test_imap_wrong_password_is_permanent_and_never_shown(folder: str):
    wrong = "not-the-password-" + uuid.uuid4().hex
    mailbox = connector(folder, password=wrong)

    with pytest.raises(errors.ConnectorError) as caught:
        await mailbox.call("fetch_new", {}, CONTEXT)

    assert not caught.value.retryable
    assert "refused" in str(caught.value)
    assert wrong not in str(caught.value) and PASSWORD not in str(caught.value)


async def test_imap_closed_port_is_retryable(folder: str):
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        closed_port = probe.getsockname()[1]
    mailbox = connector(folder, port=closed_port)

    with pytest.raises(errors.TransportError) as caught:
        await mailbox.call("fetch_new", {}, CONTEXT)

    assert caught.value.retryable
    assert PASSWORD not in str(caught.value)


@pytest.mark.parametrize(
    ("raised", "retryable"),
    [
        (imaplib.IMAP4.abort("socket error: EOF"), True),  # connection dropped
        (TimeoutError("timed out"), True),  # server too slow
        (ConnectionRefusedError(111, "refused"), True),  # nobody listening
        (EOFError(), True),  # closed mid-answer
        (imaplib.IMAP4.error("NO [NONEXISTENT] no mailbox"), False),  # refusal
        (imap._AuthFailed("[AUTHENTICATIONFAILED] failed"), False),  # login
        (imaplib.IMAP4.readonly("mailbox is read-only"), False),  # refusal
    ],
)
def test_imap_translates_every_foreign_error(raised: Exception, retryable: bool):
    translated = connector("INBOX")._translate(raised)

    assert isinstance(translated, errors.ConnectorError)
    assert translated.retryable is retryable


REPLY_FLOW = """flow: answer-mail
card:
  trigger: a new message in the support mailbox
  data: {entity: email, sensitivity: internal}
  transform: none
  target: the sender, by email
  on_failure: poll again next interval
  owner: support@example.com
trigger:
  poll:
    every_seconds: 60
    call: mail.fetch_new
    with: {since_uid: "{{ watermark }}"}
    items: "{{ result }}"
    id: "{{ item.uidvalidity }}-{{ item.uid }}"
    watermark: "{{ item.uid }}"
    start: 0
steps:
  - id: reply
    call: outbox.send
    with:
      to: "{{ input.from }}"
      subject: "Re: {{ input.subject }}"
      text: "We have your message and answer within a day."
      in_reply_to: "{{ input.message_id }}"
  - id: seen
    call: mail.mark_seen
    with: {uid: "{{ input.uid }}", uidvalidity: "{{ input.uidvalidity }}"}
"""


class Clock:
    def __init__(self) -> None:
        self.current = 1_000_000.0

    def __call__(self) -> float:
        return self.current


async def test_an_imap_poll_flow_answers_each_new_message_once(
    folder: str,
    standins: Standins,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
):
    # given a message in the mailbox and a flow that answers new mail
    question = mail("Where is my order?", sender="Bo <bo@example.com>")
    deliver(folder, question)
    monkeypatch.setenv("LOBFLOWS_SECRET_IMAP_PASSWORD", PASSWORD)
    (tmp_path / "answer.yaml").write_text(REPLY_FLOW)
    (tmp_path / "connections.yaml").write_text(
        "connections:\n"
        f"  mail: {{type: imap, host: {HOST}, port: {PORT}, security: none,\n"
        f"    username: {USER}, password_secret: imap-password, mailbox: {folder}}}\n"
        f"  outbox: {{type: smtp, host: 127.0.0.1, port: {standins.mailbox.port},\n"
        "    security: none, from: support@example.com}\n"
    )
    clock = Clock()
    store = f"sqlite:///{tmp_path / 'runs.db'}"
    runtime = await Runtime.open(Settings(database_url=store), tmp_path)

    # when it polls, runs, and polls again
    try:
        poller = Poller(runtime.engine, now=clock)
        first = await poller.tick()
        await support.drain(runtime)
        clock.current += 61
        second = await poller.tick()
        runs = await runtime.store.list_runs(flow="answer-mail")
    finally:
        await runtime.close()

    # then one run answered the message and marked it seen
    assert len(first) == 1 and second == []
    assert [run.status for run in runs] == ["succeeded"]
    [reply] = standins.mailbox.wait_for(1)
    assert reply.rcpt_tos == ("bo@example.com",)
    assert reply.message["Subject"] == "Re: Where is my order?"
    assert reply.message["In-Reply-To"] == question["Message-ID"]
    with session() as client:
        client.select(folder, readonly=True)
        assert client.uid("SEARCH", "SEEN")[1] == [b"1"]


def outbox(standins: Standins, **overrides: Any) -> smtp.SmtpConnector:
    settings = smtp.SmtpSettings.model_validate(
        {
            "host": "127.0.0.1",
            "port": standins.mailbox.port,
            "security": "none",
            "from": "flows@example.com",
            **overrides,
        }
    )
    return smtp.SmtpConnector("outbox", settings, SecretStore({}))


async def test_smtp_send_attaches_files_with_safe_names(standins: Standins):
    pdf = b"%PDF-1.4 a tiny file"
    params = {
        "to": "ann@example.com",
        "subject": "Your documents",
        "text": "Attached.",
        "html": "<p>Attached.</p>",
        "attachments": [
            {
                "filename": "../../etc/report.pdf",
                "content_base64": base64.b64encode(pdf).decode(),
                "content_type": "application/pdf",
            },
            {"filename": "notes\r\n.txt", "text": "größe: 3"},
        ],
    }

    await outbox(standins).call("send", params, CONTEXT)

    [received] = standins.mailbox.wait_for(1)
    files = list(received.message.iter_attachments())
    assert [f.get_filename() for f in files] == ["report.pdf", "notes.txt"]
    assert files[0].get_content_type() == "application/pdf"
    assert files[0].get_content() == pdf
    assert files[1].get_content_type() == "text/plain"
    assert files[1].get_content() == "größe: 3\n"  # MIME text ends a line
    assert received.message.get_body(("html",)).get_content() == "<p>Attached.</p>\n"


@pytest.mark.parametrize(
    ("attachment", "max_bytes", "problem"),
    [
        # too large for the connection's limit
        ({"filename": "big.bin", "text": "x" * 200}, 100, "exceed 100 bytes"),
        # not base64
        ({"filename": "a.bin", "content_base64": "%%%"}, 1000, "not base64"),
        # both contents at once
        ({"filename": "a", "text": "x", "content_base64": "eA=="}, 1000, "exactly"),
        # a content type that could inject a header
        (
            {"filename": "a", "text": "x", "content_type": "text/x\nBcc: e"},
            1000,
            "(?i)mime type",
        ),
    ],
)
async def test_smtp_send_refuses_bad_attachments(
    standins: Standins, attachment: dict[str, Any], max_bytes: int, problem: str
):
    params = {"to": "a@example.com", "subject": "s", "text": "t"}
    params["attachments"] = [attachment]
    sender = outbox(standins, max_attachment_bytes=max_bytes)

    with pytest.raises(errors.StepInputError, match=problem):
        await sender.call("send", params, CONTEXT)

    assert standins.mailbox.messages == []
