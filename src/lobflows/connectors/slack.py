"""Chat messages through Slack-compatible incoming webhooks.

The webhook URL is the credential, so it is read from a secret. Answers are
plain text: ``ok`` on success, an error code otherwise.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pydantic

from lobflows import errors
from lobflows.connectors import _http, base
from lobflows.secrets import redactor


class SlackWebhookSettings(base.Settings):
    url_secret: str = pydantic.Field(
        description="Secret holding the incoming-webhook URL."
    )
    timeout_seconds: float = pydantic.Field(default=15.0, gt=0)
    allow_networks: list[str] = pydantic.Field(default_factory=list)


class PostParams(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    text: str | None = None
    blocks: list[dict[str, Any]] | None = None

    @pydantic.model_validator(mode="after")
    def _something(self) -> PostParams:
        if not self.text and not self.blocks:
            raise ValueError("give text or blocks")
        return self


class SlackWebhookConnector(base.Connector):
    """Posts messages to one chat channel."""

    kind = "slack_webhook"
    settings_model = SlackWebhookSettings
    actions = {"post": "Post a message (text and/or blocks) to the webhook's channel."}

    def __init__(self, name: str, settings: SlackWebhookSettings, secrets: Any) -> None:
        super().__init__(name, settings, secrets)
        self.client = _http.GuardedClient(
            connection=name,
            timeout_seconds=settings.timeout_seconds,
            allow_networks=settings.allow_networks,
            path_is_secret=True,
        )

    async def action_post(
        self, params: dict[str, Any], context: base.CallContext
    ) -> Any:
        p: PostParams = base.parse_params(
            PostParams, params, action=f"{self.name}.post"
        )
        url = self.secrets.get(self.settings.url_secret)
        parts = urlsplit(url)
        redactor.register(parts.path)
        if parts.scheme not in ("http", "https") or not parts.hostname or " " in url:
            raise errors.ConfigurationError(
                f"secret {self.settings.url_secret!r} does not hold an http(s) webhook URL",
                retryable=False,
            )
        payload = p.model_dump(exclude_none=True)
        response = await self.client.request(
            "POST", url, json=payload, timeout_seconds=context.timeout_seconds
        )
        if response.is_error:
            # The path of the URL is the secret; name only the host.
            host = urlsplit(url).hostname
            raise _http.status_error(
                f"chat webhook at {host} answered {response.status_code}: {response.text[:200]}",
                response,
                connection=self.name,
            )
        return {"status": response.status_code, "answer": response.text[:200]}

    async def close(self) -> None:
        await self.client.close()
