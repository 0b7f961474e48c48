"""Mail sent over SMTP (aiosmtplib).

4xx replies and connection trouble are retryable, 5xx replies are permanent.
Each message carries a Message-ID derived from the run and step, so a
retried send can be recognised downstream.
"""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import formatdate
from typing import Any, Literal

import aiosmtplib
import pydantic

from lobflows import errors
from lobflows.connectors import _http, base


class SmtpSettings(base.Settings):
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
    timeout_seconds: float = pydantic.Field(default=30.0, gt=0)
    message_id_domain: str = pydantic.Field(default="lobflows.local")
    allow_networks: list[str] = pydantic.Field(
        default_factory=list, description="CIDRs exempt from the address guard."
    )


class SendParams(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    to: list[str] | str
    subject: str = pydantic.Field(min_length=1)
    text: str | None = None
    html: str | None = None
    cc: list[str] = pydantic.Field(default_factory=list)
    reply_to: str | None = None

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
    actions = {"send": "Send one message (text and/or HTML) to one or more recipients."}

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

    def _message(self, p: SendParams, context: base.CallContext) -> EmailMessage:
        message = EmailMessage()
        message["From"] = self.settings.from_address
        message["To"] = ", ".join(p.to)
        if p.cc:
            message["Cc"] = ", ".join(p.cc)
        if p.reply_to:
            message["Reply-To"] = p.reply_to
        message["Subject"] = p.subject
        message["Date"] = formatdate(localtime=False)
        message["Message-ID"] = (
            f"<{context.idempotency_key}@{self.settings.message_id_domain}>"
        )
        message.set_content(p.text if p.text is not None else "")
        if p.html is not None:
            message.add_alternative(p.html, subtype="html")
        return message

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
