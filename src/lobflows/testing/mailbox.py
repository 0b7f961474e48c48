"""Loopback SMTP server that records mail, with fault injection and HTTP access."""

from __future__ import annotations

import asyncio
import email.policy
import hmac
import socket
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.parser import BytesParser
from mailbox import Maildir
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from lobflows.testing.servers import bind_socket

__all__ = ["Mailbox", "ReceivedMail", "SmtpFault", "create_mailbox_app"]

SmtpCommand = Literal["MAIL", "RCPT", "DATA"]
_COMMANDS: tuple[SmtpCommand, ...] = ("MAIL", "RCPT", "DATA")
_PARSER = BytesParser(policy=email.policy.default)


@dataclass(frozen=True)
class ReceivedMail:
    """One accepted message with its SMTP envelope (`raw` is as received)."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    message: EmailMessage
    raw: bytes
    received_at: datetime

    @property
    def subject(self) -> str | None:
        """Return the decoded Subject header."""
        value = self.message["Subject"]
        return None if value is None else str(value)

    @property
    def text(self) -> str | None:
        """Return the plain-text body, if the message has one."""
        part = self.message.get_body(preferencelist=("plain",))
        return None if part is None else part.get_content()

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready summary."""
        html = self.message.get_body(preferencelist=("html",))
        return {
            "envelope": {"from": self.mail_from, "to": list(self.rcpt_tos)},
            "from": _header(self.message, "From"),
            "to": _header(self.message, "To"),
            "cc": _header(self.message, "Cc"),
            "subject": self.subject,
            "message_id": _header(self.message, "Message-ID"),
            "text": self.text,
            "html": None if html is None else html.get_content(),
            "received_at": self.received_at.isoformat(),
        }


def _header(message: EmailMessage, name: str) -> str | None:
    value = message[name]
    return None if value is None else str(value)


@dataclass
class SmtpFault:
    """Reply `reply` to the next `remaining` matching commands."""

    command: SmtpCommand
    reply: str
    remaining: int = 1
    address: str | None = None

    def matches(self, command: str, address: str | None) -> bool:
        """Tell whether this fault applies to a command (and its address)."""
        if command != self.command:
            return False
        return self.address is None or (address or "").lower() == self.address.lower()

    def describe(self) -> dict[str, Any]:
        """Return a JSON-ready summary."""
        return {
            "command": self.command,
            "reply": self.reply,
            "remaining": self.remaining,
            "address": self.address,
        }


class _Handler:
    """aiosmtpd hooks that delegate to a `Mailbox`."""

    def __init__(self, mailbox: Mailbox) -> None:
        self.mailbox = mailbox

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        if self.mailbox.credentials is not None and not session.authenticated:
            return "530 5.7.0 Authentication required"
        reply = self.mailbox.take_fault("MAIL", address)
        if reply is not None:
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        reply = self.mailbox.take_fault("RCPT", address)
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        reply = self.mailbox.take_fault("DATA", None)
        if reply is not None:
            return reply
        content = envelope.original_content or envelope.content or b""
        if isinstance(content, str):
            content = content.encode("utf-8", "surrogateescape")
        self.mailbox.deliver(envelope.mail_from or "", envelope.rcpt_tos, content)
        return "250 2.0.0 Message accepted for delivery"


class _MailboxController(Controller):
    """Threaded controller serving a `Mailbox`, port 0 included."""

    def __init__(self, mailbox: Mailbox) -> None:
        super().__init__(_Handler(mailbox), hostname=mailbox.host, port=mailbox.port)
        self._mailbox = mailbox

    def factory(self) -> SMTP:
        """Build the SMTP protocol with the mailbox's settings."""
        return self._mailbox.smtp_protocol()

    def _trigger_server(self) -> None:
        # The base class connects to self.port to finish startup; with port 0
        # that would fail, so read the bound port first.
        if self.server is not None and self.server.sockets:
            self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


class Mailbox:
    """SMTP server on loopback that records every message it accepts.

    Use `start`/`stop` (or ``with``) to serve from a background thread, or
    ``await serve()`` to serve in the running event loop. With `credentials`,
    clients must AUTH (PLAIN or LOGIN, no TLS needed) before MAIL FROM. With
    `maildir`, each message is also written there, with ``Return-Path`` and
    ``Delivered-To`` headers added, so another process can read it.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        maildir: Path | None = None,
        credentials: tuple[str, str] | None = None,
        server_hostname: str = "mailbox.localhost",
    ) -> None:
        self.host = host
        self.port = port
        self.maildir = maildir
        self.credentials = credentials
        self.server_hostname = server_hostname
        self._lock = threading.Condition()
        self._messages: list[ReceivedMail] = []
        self._faults: list[SmtpFault] = []
        self._controller: Controller | None = None
        self._maildir = Maildir(maildir, create=True) if maildir else None

    # recorded mail -----------------------------------------------------------

    @property
    def messages(self) -> list[ReceivedMail]:
        """Return a snapshot of the messages received so far, oldest first."""
        with self._lock:
            return list(self._messages)

    @property
    def faults(self) -> list[SmtpFault]:
        """Return a snapshot of the pending SMTP faults."""
        with self._lock:
            return list(self._faults)

    def clear(self) -> None:
        """Forget received messages and pending faults (the Maildir is kept)."""
        with self._lock:
            self._messages.clear()
            self._faults.clear()

    def wait_for(self, count: int = 1, timeout: float = 5.0) -> list[ReceivedMail]:
        """Block until at least `count` messages arrived; raise on timeout."""
        with self._lock:
            if not self._lock.wait_for(lambda: len(self._messages) >= count, timeout):
                got = len(self._messages)
                raise TimeoutError(f"expected {count} message(s), got {got}")
            return list(self._messages)

    def add_fault(
        self,
        command: SmtpCommand,
        reply: str,
        *,
        count: int = 1,
        address: str | None = None,
    ) -> SmtpFault:
        """Answer the next `count` MAIL, RCPT or DATA commands with `reply`.

        For MAIL and RCPT, `address` limits the fault to that address.
        """
        if command not in _COMMANDS:
            raise ValueError(f"command must be one of {', '.join(_COMMANDS)}")
        code = reply[:3]
        if not (code.isdigit() and code[0] in "45"):
            raise ValueError("reply must start with a 4xx or 5xx code")
        fault = SmtpFault(command, reply, count, address)
        with self._lock:
            self._faults.append(fault)
        return fault

    def take_fault(self, command: str, address: str | None) -> str | None:
        """Consume one use of a matching fault and return its reply."""
        with self._lock:
            for fault in self._faults:
                if fault.matches(command, address):
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                    return fault.reply
        return None

    def deliver(self, mail_from: str, rcpt_tos: Iterable[str], raw: bytes) -> None:
        """Record one message (called by the SMTP handler)."""
        # SMTP carries CRLF; the email package works with plain newlines.
        message = _PARSER.parsebytes(raw.replace(b"\r\n", b"\n"))
        assert isinstance(message, EmailMessage)
        mail = ReceivedMail(mail_from, tuple(rcpt_tos), message, raw, datetime.now(UTC))
        if self._maildir is not None:
            self._maildir.add(_maildir_bytes(mail))
        with self._lock:
            self._messages.append(mail)
            self._lock.notify_all()

    # serving -----------------------------------------------------------------

    def smtp_protocol(self) -> SMTP:
        """Create one SMTP protocol instance (a factory for ``create_server``)."""
        options: dict[str, Any] = {}
        if self.credentials is not None:
            options = {"authenticator": self._authenticate, "auth_require_tls": False}
        return SMTP(
            _Handler(self),
            hostname=self.server_hostname,
            enable_SMTPUTF8=True,
            **options,
        )

    def start(self) -> None:
        """Serve from a background thread; block until accepting."""
        if self._controller is not None:
            raise RuntimeError("mailbox already running")
        controller = _MailboxController(self)
        controller.start()
        self.port = controller.port
        self._controller = controller

    def stop(self) -> None:
        """Stop the background server."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    async def serve(self, sock: socket.socket | None = None) -> None:
        """Serve in the running loop until cancelled, on `sock` if given."""
        if sock is None:
            sock = bind_socket(self.host, self.port)
        self.port = sock.getsockname()[1]
        loop = asyncio.get_running_loop()
        server = await loop.create_server(self.smtp_protocol, sock=sock)
        try:
            await asyncio.Future()
        finally:
            server.close()

    def _authenticate(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        mechanism: str,
        auth_data: Any,
    ) -> AuthResult:
        if not isinstance(auth_data, LoginPassword) or self.credentials is None:
            return AuthResult(success=False, handled=False)
        user, password = self.credentials
        ok = hmac.compare_digest(auth_data.login, user.encode()) and (
            hmac.compare_digest(auth_data.password, password.encode())
        )
        return AuthResult(success=ok, handled=False)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _maildir_bytes(mail: ReceivedMail) -> bytes:
    lines = [f"Return-Path: <{mail.mail_from}>"]
    lines += [f"Delivered-To: {rcpt}" for rcpt in mail.rcpt_tos]
    head = "".join(f"{line}\n" for line in lines).encode("utf-8")
    return head + mail.raw.replace(b"\r\n", b"\n")


def create_mailbox_app(mailbox: Mailbox, *, prefix: str = "/__standin__") -> Starlette:
    """Expose a mailbox's received mail and fault knobs over HTTP.

    Routes: ``GET {prefix}/messages``, ``POST {prefix}/faults`` with
    ``{"command": "RCPT", "reply": "451 4.3.0 try later", "count": 1}`` and
    ``POST {prefix}/reset``. Use ``prefix=""`` when mounting under a path.
    """

    async def messages(request: Request) -> Response:
        return JSONResponse([m.to_json() for m in mailbox.messages])

    async def faults(request: Request) -> Response:
        try:
            payload = await request.json()
            fault = mailbox.add_fault(
                payload["command"],
                str(payload["reply"]),
                count=int(payload.get("count", 1)),
                address=payload.get("address"),
            )
        except (ValueError, KeyError, TypeError) as exc:
            return JSONResponse({"error": f"bad fault: {exc}"}, 400)
        return JSONResponse(fault.describe())

    async def reset(request: Request) -> Response:
        mailbox.clear()
        return JSONResponse({"ok": True})

    app = Starlette(
        routes=[
            Route(f"{prefix}/messages", messages, methods=["GET"]),
            Route(f"{prefix}/faults", faults, methods=["POST"]),
            Route(f"{prefix}/reset", reset, methods=["POST"]),
        ]
    )
    app.state.mailbox = mailbox
    return app
