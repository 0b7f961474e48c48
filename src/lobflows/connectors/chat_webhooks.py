"""Chat messages through Mattermost and Microsoft Teams incoming webhooks.

As with Slack, the webhook URL is the credential: it is read from a secret,
registered with the redactor, and errors name only its host.

``mattermost_webhook`` posts ``{"text", "channel"?, "username"?, ...}`` to a
Mattermost incoming webhook (``/hooks/<key>``), which answers ``ok`` as
plain text, or an error object ``{"id", "message", "status_code", ...}``.

``teams_webhook`` posts either an Office 365 connector *MessageCard*
(``{"@type": "MessageCard", "text": ...}``; the incoming-webhook connector
answers ``1`` as plain text) or, for a Workflows (Power Automate) webhook, a
``message`` activity carrying an Adaptive Card, which is answered ``202``.
The connector-contracts reference does not describe Mattermost or Teams;
these shapes follow the vendors' public documentation.
"""

from __future__ import annotations

import re
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
import pydantic

from lobflows import errors
from lobflows.connectors import _http, base
from lobflows.secrets import redactor

ADAPTIVE_CARD = "application/vnd.microsoft.card.adaptive"
# The Office 365 connector has been seen answering HTTP 200 with this text
# when delivery actually failed (throttling among others).
_TEAMS_FAILED_PREFIX = "webhook message delivery failed"


class ChatWebhookSettings(base.NetworkSettings):
    url_secret: str = pydantic.Field(
        description="Secret holding the incoming-webhook URL."
    )
    timeout_seconds: float = pydantic.Field(
        default=15.0, gt=0, description="Limit for each request, in seconds."
    )


class TeamsWebhookSettings(ChatWebhookSettings):
    payload_format: Literal["message_card", "adaptive_card"] = pydantic.Field(
        default="message_card",
        description="message_card for an Office 365 connector webhook, "
        "adaptive_card for a Workflows webhook.",
    )


class MattermostPostParams(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    text: str | None = None
    channel: str | None = None
    username: str | None = None
    icon_url: str | None = None
    icon_emoji: str | None = None
    attachments: list[dict[str, Any]] | None = None
    props: dict[str, Any] | None = None

    @pydantic.model_validator(mode="after")
    def _something(self) -> MattermostPostParams:
        if not self.text and not self.attachments:
            raise ValueError("give text or attachments")
        return self


class TeamsPostParams(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    text: str | None = None
    title: str | None = None
    summary: str | None = None
    theme_color: str | None = None
    # A complete card to send instead of one built from text/title: a
    # MessageCard object, or the content of an Adaptive Card.
    card: dict[str, Any] | None = None

    @pydantic.model_validator(mode="after")
    def _something(self) -> TeamsPostParams:
        if not self.text and not self.card:
            raise ValueError("give text or card")
        return self


class _ChatWebhookConnector(base.Connector):
    """Shared plumbing: the secret URL, the guarded client, error classes."""

    label: str

    def __init__(self, name: str, settings: ChatWebhookSettings, secrets: Any) -> None:
        super().__init__(name, settings, secrets)
        self.client = _http.GuardedClient(
            connection=name,
            timeout_seconds=settings.timeout_seconds,
            allow_networks=settings.allow_networks,
            path_is_secret=True,
        )

    def _url(self) -> str:
        url = self.secrets.get(self.settings.url_secret)
        parts = urlsplit(url)
        for piece in (parts.path, parts.query):
            if piece:
                redactor.register(piece)
        if parts.scheme not in ("http", "https") or not parts.hostname or " " in url:
            raise errors.ConfigurationError(
                f"secret {self.settings.url_secret!r} does not hold an http(s) webhook URL",
                retryable=False,
            )
        return url

    async def _post(
        self, payload: dict[str, Any], context: base.CallContext
    ) -> tuple[str, httpx.Response]:
        url = self._url()
        response = await self.client.request(
            "POST", url, json=payload, timeout_seconds=context.timeout_seconds
        )
        return urlsplit(url).hostname or "?", response

    async def check(self) -> str:
        """That the webhook's host accepts connections (TCP, and TLS for
        https); posting would send a message, so the webhook is not called."""
        reached = await _http.reach(
            self._url(),
            guard=self.client.guard,
            timeout_seconds=self.settings.timeout_seconds,
            connection=self.name,
        )
        return f"{reached}; nothing posted, so the webhook itself is not proven"

    def _error(
        self, host: str, response: httpx.Response, detail: str
    ) -> errors.RemoteStatusError:
        # The path (and query) of the URL is the secret; name only the host.
        return _http.status_error(
            f"{self.label} webhook at {host} answered {response.status_code}: "
            f"{redactor.redact(detail)[:200]}",
            response,
            connection=self.name,
        )

    async def close(self) -> None:
        await self.client.close()


class MattermostWebhookConnector(_ChatWebhookConnector):
    """Posts messages through a Mattermost incoming webhook."""

    kind = "mattermost_webhook"
    label = "mattermost"
    settings_model = ChatWebhookSettings
    actions = {
        "post": "Post a message (text, optional channel/username override) "
        "through the webhook."
    }

    async def action_post(
        self, params: dict[str, Any], context: base.CallContext
    ) -> Any:
        p: MattermostPostParams = base.parse_params(
            MattermostPostParams, params, action=f"{self.name}.post"
        )
        host, response = await self._post(p.model_dump(exclude_none=True), context)
        if response.is_error:
            raise self._error(host, response, _mattermost_detail(response))
        return {"status": response.status_code, "answer": response.text[:200]}


def _mattermost_detail(response: httpx.Response) -> str:
    body = _http.response_body(response)
    if isinstance(body, dict):
        return " ".join(str(body[k]) for k in ("id", "message") if body.get(k)) or str(
            body
        )
    return str(body)


class TeamsWebhookConnector(_ChatWebhookConnector):
    """Posts messages through a Microsoft Teams incoming or Workflows webhook."""

    kind = "teams_webhook"
    label = "teams"
    settings_model = TeamsWebhookSettings
    actions = {
        "post": "Post a message (text, optional title) or a whole card "
        "through the webhook."
    }

    async def action_post(
        self, params: dict[str, Any], context: base.CallContext
    ) -> Any:
        p: TeamsPostParams = base.parse_params(
            TeamsPostParams, params, action=f"{self.name}.post"
        )
        if self.settings.payload_format == "adaptive_card":
            payload = adaptive_card_message(p)
        else:
            payload = message_card(p)
        host, response = await self._post(payload, context)
        if response.is_error:
            raise self._error(host, response, _teams_detail(response))
        text = response.text
        if text.strip().lower().startswith(_TEAMS_FAILED_PREFIX):
            error = self._error(host, response, text)
            inner = re.search(r"HTTP error (\d{3})", text)
            status = int(inner.group(1)) if inner else 0
            error.retryable = status in _http.RETRYABLE_STATUSES
            raise error
        return {"status": response.status_code, "answer": text[:200]}


def message_card(p: TeamsPostParams) -> dict[str, Any]:
    """An Office 365 connector MessageCard for the parameters."""
    if p.card is not None:
        return {
            "@type": "MessageCard",
            "@context": "https://schema.org/extensions",
            **p.card,
        }
    card: dict[str, Any] = {
        "@type": "MessageCard",
        "@context": "https://schema.org/extensions",
        "summary": p.summary or p.title or (p.text or "")[:80],
        "text": p.text,
    }
    if p.title:
        card["title"] = p.title
    if p.theme_color:
        card["themeColor"] = p.theme_color
    return card


def adaptive_card_message(p: TeamsPostParams) -> dict[str, Any]:
    """A ``message`` activity carrying one Adaptive Card, as Workflows webhooks take."""
    content = p.card
    if content is None:
        body: list[dict[str, Any]] = []
        if p.title:
            body.append(
                {
                    "type": "TextBlock",
                    "text": p.title,
                    "weight": "Bolder",
                    "size": "Medium",
                    "wrap": True,
                }
            )
        body.append({"type": "TextBlock", "text": p.text, "wrap": True})
        content = {
            "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
            "type": "AdaptiveCard",
            "version": "1.4",
            "body": body,
        }
    return {
        "type": "message",
        "attachments": [
            {"contentType": ADAPTIVE_CARD, "contentUrl": None, "content": content}
        ],
    }


def _teams_detail(response: httpx.Response) -> str:
    body = _http.response_body(response)
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        err = body["error"]
        return " ".join(str(err[k]) for k in ("code", "message") if err.get(k))
    return str(body)
