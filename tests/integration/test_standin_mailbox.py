"""The SMTP mailbox records real mail and injects SMTP replies on demand."""

from __future__ import annotations

import asyncio
import contextlib
import mailbox as stdlib_mailbox
import smtplib
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import httpx
import pytest

from lobflows.testing import Mailbox, ServerThread, create_mailbox_app, serve_standins
from lobflows.testing.servers import bind_socket

pytestmark = pytest.mark.integration


@pytest.fixture
def box() -> Iterator[Mailbox]:
    with Mailbox() as running:
        yield running


def make_message(
    subject: str = "Welcome aboard", to: str = "ada@example.com"
) -> EmailMessage:
    message = EmailMessage()
    message["From"] = "hr@example.com"
    message["To"] = to
    message["Subject"] = subject
    message.set_content("Your account is ready.\n")
    return message


async def send(box: Mailbox, message: EmailMessage, **kwargs: object) -> None:
    await aiosmtplib.send(
        message, hostname=box.host, port=box.port, timeout=10, **kwargs
    )


def free_port() -> int:
    with contextlib.closing(bind_socket()) as sock:
        return sock.getsockname()[1]


async def test_mailbox_records_mail_sent_with_aiosmtplib(box: Mailbox) -> None:
    await send(box, make_message())
    [mail] = box.messages
    assert mail.subject == "Welcome aboard"
    assert mail.mail_from == "hr@example.com"
    assert mail.rcpt_tos == ("ada@example.com",)
    assert mail.text == "Your account is ready.\n"
    assert isinstance(mail.message, EmailMessage)
    assert mail.message["To"] == "ada@example.com"


def test_mailbox_records_mail_sent_with_smtplib(box: Mailbox) -> None:
    assert box.host == "127.0.0.1"
    assert box.port > 0
    with smtplib.SMTP(box.host, box.port, timeout=10) as client:
        client.send_message(
            make_message("Bcc test"), to_addrs=["ada@example.com", "boss@example.com"]
        )
    [mail] = box.wait_for(1)
    assert mail.subject == "Bcc test"
    assert mail.rcpt_tos == ("ada@example.com", "boss@example.com")


async def test_mailbox_data_fault_451_raises_response_exception(
    box: Mailbox,
) -> None:
    box.add_fault("DATA", "451 4.3.0 try later")
    with pytest.raises(aiosmtplib.SMTPResponseException) as raised:
        await send(box, make_message())
    assert raised.value.code == 451
    assert "try later" in raised.value.message
    assert box.messages == []
    await send(box, make_message())
    assert len(box.messages) == 1


async def test_mailbox_rcpt_fault_refuses_only_that_recipient(box: Mailbox) -> None:
    box.add_fault("RCPT", "550 5.1.1 unknown user", address="ghost@example.com")
    message = make_message(to="ada@example.com, ghost@example.com")
    refused, _ = await aiosmtplib.send(
        message, hostname=box.host, port=box.port, timeout=10
    )
    assert refused["ghost@example.com"].code == 550
    [mail] = box.messages
    assert mail.rcpt_tos == ("ada@example.com",)


async def test_mailbox_rcpt_fault_on_every_recipient_refuses_all(
    box: Mailbox,
) -> None:
    box.add_fault("RCPT", "451 4.3.0 try later")
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as raised:
        await send(box, make_message())
    [refusal] = raised.value.recipients
    assert refusal.code == 451
    assert box.faults == []


async def test_mailbox_mail_fault_refuses_sender(box: Mailbox) -> None:
    box.add_fault("MAIL", "421 4.7.0 closing", count=2)
    for _ in range(2):
        with pytest.raises(aiosmtplib.SMTPResponseException) as raised:
            await send(box, make_message())
        assert raised.value.code == 421
    await send(box, make_message())
    assert len(box.messages) == 1


def test_mailbox_fault_needs_error_reply(box: Mailbox) -> None:
    with pytest.raises(ValueError, match="4xx or 5xx"):
        box.add_fault("DATA", "250 fine")
    with pytest.raises(ValueError, match="command must be"):
        box.add_fault("QUIT", "421 bye")  # type: ignore[arg-type]


async def test_mailbox_writes_maildir(tmp_path: Path) -> None:
    with Mailbox(maildir=tmp_path / "Maildir") as box:
        await send(box, make_message("Stored"))
    folder = stdlib_mailbox.Maildir(tmp_path / "Maildir", create=False)
    [stored] = list(folder)
    assert stored["Subject"] == "Stored"
    assert stored["Return-Path"] == "<hr@example.com>"
    assert stored["Delivered-To"] == "ada@example.com"


async def test_mailbox_credentials_require_auth(box: Mailbox) -> None:
    with Mailbox(credentials=("robot", "pw")) as guarded:
        with pytest.raises(aiosmtplib.SMTPResponseException) as raised:
            await send(guarded, make_message())
        assert raised.value.code == 530
        with pytest.raises(aiosmtplib.SMTPAuthenticationError):
            await send(guarded, make_message(), username="robot", password="no")
        await send(guarded, make_message(), username="robot", password="pw")
        assert len(guarded.messages) == 1


async def test_mailbox_clear_forgets_mail(box: Mailbox) -> None:
    await send(box, make_message())
    box.clear()
    assert box.messages == []


def test_mailbox_wait_for_times_out(box: Mailbox) -> None:
    with pytest.raises(TimeoutError):
        box.wait_for(1, timeout=0.1)


async def test_mailbox_app_lists_resets_and_queues_faults(box: Mailbox) -> None:
    await send(box, make_message("Over HTTP"))
    with ServerThread(create_mailbox_app(box)) as web:
        async with httpx.AsyncClient(base_url=web.url, timeout=10) as http:
            [listed] = (await http.get("/__standin__/messages")).json()
            assert listed["subject"] == "Over HTTP"
            assert listed["to"] == "ada@example.com"
            assert listed["from"] == "hr@example.com"
            assert listed["envelope"] == {
                "from": "hr@example.com",
                "to": ["ada@example.com"],
            }
            assert listed["text"] == "Your account is ready.\n"
            fault = {"command": "DATA", "reply": "552 5.3.4 too big"}
            assert (await http.post("/__standin__/faults", json=fault)).is_success
            bad = {"command": "DATA", "reply": "ok"}
            assert (await http.post("/__standin__/faults", json=bad)).status_code == 400
            assert (await http.post("/__standin__/reset")).is_success
            assert (await http.get("/__standin__/messages")).json() == []
    assert box.faults == []


async def test_mailbox_serve_standins_exposes_all_three(tmp_path: Path) -> None:
    erp, slack, smtp = free_port(), free_port(), free_port()
    task = asyncio.create_task(
        serve_standins(
            erpnext_port=erp,
            slack_port=slack,
            smtp_port=smtp,
            api_key="k",
            api_secret="s",
            slack_path="T1/B1/x",
            maildir=tmp_path / "mail",
        )
    )
    try:
        await _wait_until_listening(smtp)
        await aiosmtplib.send(
            make_message("Joined"), hostname="127.0.0.1", port=smtp, timeout=10
        )
        async with httpx.AsyncClient(timeout=10) as http:
            ping = await http.get(
                f"http://127.0.0.1:{erp}/api/method/ping",
                headers={"Authorization": "token k:s"},
            )
            assert ping.json() == {"message": "pong"}
            posted = await http.post(
                f"http://127.0.0.1:{slack}/services/T1/B1/x", json={"text": "hi"}
            )
            assert posted.text == "ok"
            mail = await http.get(f"http://127.0.0.1:{slack}/__standin__/mail/messages")
            assert [m["subject"] for m in mail.json()] == ["Joined"]
            stats = await http.get(f"http://127.0.0.1:{slack}/__standin__/stats")
            assert stats.json()["messages"] == 1
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert len(list(stdlib_mailbox.Maildir(tmp_path / "mail", create=False))) == 1
    with contextlib.closing(bind_socket(port=erp)):
        pass  # the port was released


async def _wait_until_listening(port: int) -> None:
    for _ in range(200):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.02)
            continue
        writer.close()
        await writer.wait_closed()
        return
    raise TimeoutError(f"nothing listening on {port}")
