"""Mail sent over SMTP (aiosmtplib).

4xx replies and connection trouble are retryable, 5xx replies are permanent.
Each message carries a Message-ID derived from the run and step, so a
retried send can be recognised downstream.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import re
import unicodedata
from collections.abc import Iterator
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any, Literal

import aiosmtplib
import pydantic

from lobflows import errors
from lobflows.connectors import _http, base

_CONTENT_TYPE = re.compile(r"^[A-Za-z0-9][\w.+-]*/[A-Za-z0-9][\w.+-]*$")
_MAX_FILENAME_CHARS = 120


class SmtpSettings(base.NetworkSettings):
    host: str
    port: int = pydantic.Field(default=587, gt=0, lt=65536)
    security: Literal["none", "starttls", "tls"] = pydantic.Field(
        default="starttls", description="none, starttls (587) or implicit tls (465)."
    )
    username: str | None = None
    password_secret: str | None = pydantic.Field(
        default=None, description="Secret holding the SMTP password."
    )
    from_address: str = pydantic.Field(alias="from", description="Default sender.")
    message_id_domain: str = pydantic.Field(default="lobflows.local")
    max_attachment_bytes: int = pydantic.Field(
        default=10 * 1024 * 1024,
        gt=0,
        description="Largest total size of a message's attachments, in bytes.",
    )


class Attachment(pydantic.BaseModel):
    """One file attached to a message: base64 content or text."""

    model_config = pydantic.ConfigDict(extra="forbid")
    filename: str
    content_base64: str | None = None
    text: str | None = None
    content_type: str | None = pydantic.Field(
        default=None,
        description="MIME type; default text/plain for text, else application/octet-stream.",
    )

    @pydantic.field_validator("filename")
    @classmethod
    def _safe_filename(cls, value: str) -> str:
        return sanitise_filename(value)

    @pydantic.field_validator("content_type")
    @classmethod
    def _mime_type(cls, value: str | None) -> str | None:
        if value is not None and not _CONTENT_TYPE.match(value):
            raise ValueError(f"{value!r} is not a MIME type like text/csv")
        return value

    @pydantic.model_validator(mode="after")
    def _one_content(self) -> Attachment:
        if (self.content_base64 is None) == (self.text is None):
            raise ValueError("give exactly one of content_base64 or text")
        return self

    def content(self) -> bytes:
        if self.text is not None:
            return self.text.encode("utf-8")
        try:
            return base64.b64decode(self.content_base64 or "", validate=True)
        except binascii.Error:
            raise ValueError(
                f"attachment {self.filename!r}: content_base64 is not base64"
            ) from None

    def mime_type(self) -> tuple[str, str]:
        default = "text/plain" if self.text is not None else "application/octet-stream"
        maintype, subtype = (self.content_type or default).lower().split("/", 1)
        return maintype, subtype


def sanitise_filename(name: str) -> str:
    """A bare file name: no folders, controls, quotes or leading dots."""
    name = unicodedata.normalize("NFC", name).replace("\\", "/").split("/")[-1]
    name = "".join(
        c for c in name if unicodedata.category(c)[0] != "C" and c not in '"<>:|?*'
    )
    name = name.strip().lstrip(".").strip()
    if len(name) > _MAX_FILENAME_CHARS:
        stem, dot, suffix = name.rpartition(".")
        keep = _MAX_FILENAME_CHARS - len(suffix) - 1
        name = (
            f"{stem[:keep]}.{suffix}"
            if dot and keep > 0
            else name[:_MAX_FILENAME_CHARS]
        )
    return name or "attachment"


class SendParams(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    to: list[str] | str
    subject: str = pydantic.Field(min_length=1)
    text: str | None = None
    html: str | None = None
    cc: list[str] = pydantic.Field(default_factory=list)
    reply_to: str | None = None
    in_reply_to: str | None = pydantic.Field(
        default=None, description="Message-ID this message answers."
    )
    references: list[str] = pydantic.Field(default_factory=list)
    attachments: list[Attachment] = pydantic.Field(default_factory=list)

    @pydantic.field_validator("in_reply_to", "references")
    @classmethod
    def _one_line(cls, value: Any) -> Any:
        for item in [value] if isinstance(value, str) else value or []:
            if any(c in item for c in "\r\n"):
                raise ValueError("must be one line")
        return value

    @pydantic.field_validator("to")
    @classmethod
    def _recipients(cls, value: list[str] | str) -> list[str]:
        recipients = [value] if isinstance(value, str) else value
        recipients = [r.strip() for r in recipients if r and r.strip()]
        if not recipients:
            raise ValueError("needs at least one recipient")
        for r in recipients:
            if "@" not in r or any(c in r for c in "\r\n"):
                raise ValueError(f"{r!r} is not an email address")
        return recipients

    @pydantic.model_validator(mode="after")
    def _body(self) -> SendParams:
        if self.text is None and self.html is None:
            raise ValueError("give text or html")
        return self


class SmtpConnector(base.Connector):
    """Sends email."""

    kind = "smtp"
    settings_model = SmtpSettings
    actions = {
        "send": "Send one message (text and/or HTML, attachments) to one or more recipients."
    }

    def __init__(self, name: str, settings: SmtpSettings, secrets: Any) -> None:
        super().__init__(name, settings, secrets)
        self.guard = _http.AddressGuard(settings.allow_networks)

    async def action_send(
        self, params: dict[str, Any], context: base.CallContext
    ) -> Any:
        p: SendParams = base.parse_params(
            SendParams, params, action=f"{self.name}.send"
        )
        message = self._message(p, context)
        self._attach(message, p.attachments)
        await self.guard.check(self.settings.host, self.settings.port)
        try:
            refused, reply = await aiosmtplib.send(
                message, **self._smtp_options(context)
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [r.code for r in exc.recipients]
            raise errors.ConnectorError(
                f"{self.name}: every recipient was refused: "
                + "; ".join(
                    f"{r.recipient} ({r.code} {r.message})" for r in exc.recipients
                ),
                retryable=all(400 <= c < 500 for c in codes),
            ) from exc
        except aiosmtplib.SMTPResponseException as exc:
            raise errors.ConnectorError(
                f"{self.name}: server answered {exc.code} {exc.message}",
                retryable=400 <= exc.code < 500,
            ) from exc
        except (
            aiosmtplib.SMTPConnectError,
            aiosmtplib.SMTPServerDisconnected,
            aiosmtplib.SMTPTimeoutError,
            OSError,
        ) as exc:
            raise errors.TransportError(
                f"{self.name}: cannot deliver to {self.settings.host}:{self.settings.port}: {exc}"
            ) from exc
        except aiosmtplib.SMTPException as exc:
            raise errors.ConnectorError(f"{self.name}: {exc}", retryable=False) from exc
        return {
            "message_id": message["Message-ID"],
            "refused": sorted(refused),
            "reply": reply,
        }

    async def check(self) -> str:
        """Connect, EHLO, STARTTLS and log in as configured, NOOP, QUIT; no mail."""
        s = self.settings
        await self.guard.check(s.host, s.port)
        options = self._smtp_options(base.check_context(s.timeout_seconds))
        username, password = options.pop("username"), options.pop("password")
        client = aiosmtplib.SMTP(**options)
        try:
            with self._check_errors(username):
                await client.connect()
                await client.ehlo()
                if username is not None:
                    await client.login(username, password or "")
                await client.noop()
                await client.quit()
        finally:
            if client.is_connected:
                client.close()
        done = ["EHLO"] + (["STARTTLS"] if s.security == "starttls" else [])
        if username is not None:
            done.append(f"login as {username}")
        return f"{s.host}:{s.port} accepted {', '.join(done)}; no mail sent"

    @contextlib.contextmanager
    def _check_errors(self, username: str | None) -> Iterator[None]:
        where = f"{self.settings.host}:{self.settings.port}"
        try:
            yield
        except aiosmtplib.SMTPAuthenticationError as exc:
            raise errors.ConnectorError(
                f"{self.name}: {where} refused the login as {username!r}: "
                f"{exc.code} {exc.message}",
                retryable=False,
                connection=self.name,
            ) from exc
        except aiosmtplib.SMTPResponseException as exc:
            raise errors.ConnectorError(
                f"{self.name}: {where} answered {exc.code} {exc.message}",
                retryable=400 <= exc.code < 500,
                connection=self.name,
            ) from exc
        except (
            aiosmtplib.SMTPConnectError,
            aiosmtplib.SMTPServerDisconnected,
            aiosmtplib.SMTPTimeoutError,
            OSError,
        ) as exc:
            raise errors.TransportError(
                f"{self.name}: cannot talk to {where}: {exc}", connection=self.name
            ) from exc
        except aiosmtplib.SMTPException as exc:
            raise errors.ConnectorError(
                f"{self.name}: {where}: {exc}", retryable=False, connection=self.name
            ) from exc

    def _message(self, p: SendParams, context: base.CallContext) -> EmailMessage:
        message = EmailMessage()
        message["From"] = self.settings.from_address
        message["To"] = ", ".join(p.to)
        if p.cc:
            message["Cc"] = ", ".join(p.cc)
        if p.reply_to:
            message["Reply-To"] = p.reply_to
        message["Subject"] = p.subject
        if p.in_reply_to:
            message["In-Reply-To"] = p.in_reply_to
        references = p.references or ([p.in_reply_to] if p.in_reply_to else [])
        if references:
            message["References"] = " ".join(references)
        message["Date"] = formatdate(localtime=False)
        message["Message-ID"] = (
            f"<{context.idempotency_key}@{self.settings.message_id_domain}>"
        )
        message.set_content(p.text if p.text is not None else "")
        if p.html is not None:
            message.add_alternative(p.html, subtype="html")
        return message

    def _attach(self, message: EmailMessage, attachments: list[Attachment]) -> None:
        total = 0
        for attachment in attachments:
            try:
                content = attachment.content()
            except ValueError as exc:
                raise errors.StepInputError(f"{self.name}.send: {exc}") from None
            total += len(content)
            if total > self.settings.max_attachment_bytes:
                raise errors.StepInputError(
                    f"{self.name}.send: attachments exceed "
                    f"{self.settings.max_attachment_bytes} bytes "
                    f"(at {attachment.filename!r})"
                )
            maintype, subtype = attachment.mime_type()
            if attachment.text is not None and maintype == "text":
                # As str, so the email package declares charset=utf-8.
                message.add_attachment(
                    attachment.text, subtype=subtype, filename=attachment.filename
                )
                continue
            message.add_attachment(
                content,
                maintype=maintype,
                subtype=subtype,
                filename=attachment.filename,
            )

    def _smtp_options(self, context: base.CallContext) -> dict[str, Any]:
        s = self.settings
        password = self.secrets.get(s.password_secret) if s.password_secret else None
        return {
            "hostname": s.host,
            "port": s.port,
            "use_tls": s.security == "tls",
            "start_tls": s.security == "starttls",
            "username": s.username,
            "password": password,
            "timeout": min(s.timeout_seconds, context.timeout_seconds),
        }
