"""Chat messages through Slack: incoming webhooks and the Web API.

``slack_webhook``: the webhook URL is the credential, so it is read from a
secret. Answers are plain text: ``ok`` on success, an error code otherwise.

``slack``: the Web API (``chat.postMessage``, ``chat.update``) with a bot
token from a secret. Slack answers application errors with HTTP 200 and
``{"ok": false, "error": "<code>"}``; throttling is HTTP 429 with
``Retry-After`` in seconds.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import pydantic

from lobflows import errors
from lobflows.connectors import _http, base
from lobflows.secrets import redactor


class SlackWebhookSettings(base.NetworkSettings):
    url_secret: str = pydantic.Field(
        description="Secret holding the incoming-webhook URL."
    )
    timeout_seconds: float = pydantic.Field(
        default=15.0, gt=0, description="Limit for each request, in seconds."
    )


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
        url = self._url()
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

    def _url(self) -> str:
        """The webhook URL from its secret; its path is registered as a secret."""
        url = self.secrets.get(self.settings.url_secret)
        parts = urlsplit(url)
        redactor.register(parts.path)
        if parts.scheme not in ("http", "https") or not parts.hostname or " " in url:
            raise errors.ConfigurationError(
                f"secret {self.settings.url_secret!r} does not hold an http(s) webhook URL",
                retryable=False,
            )
        return url

    async def close(self) -> None:
        await self.client.close()


DEFAULT_API_URL = "https://slack.com/api"

# Slack error codes worth another attempt (connector-contracts, Slack 2.7);
# every other code is permanent.
RETRYABLE_CODES = frozenset(
    {
        "ratelimited",
        "rate_limited",
        "internal_error",
        "fatal_error",
        "service_unavailable",
        "request_timeout",
    }
)


class SlackSettings(base.NetworkSettings):
    base_url: str = pydantic.Field(
        default=DEFAULT_API_URL, description="Web API base URL, without the method."
    )
    token_secret: str = pydantic.Field(
        description="Secret holding the bot token (xoxb-...)."
    )
    timeout_seconds: float = pydantic.Field(
        default=15.0, gt=0, description="Limit for each request, in seconds."
    )

    @pydantic.field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("base_url must be an http(s) URL")
        return value.rstrip("/")


class _MessageParams(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    channel: str = pydantic.Field(min_length=1)
    text: str | None = None
    blocks: list[dict[str, Any]] | None = None

    @pydantic.model_validator(mode="after")
    def _something(self) -> _MessageParams:
        if not self.text and not self.blocks:
            raise ValueError("give text or blocks")
        return self


class PostMessageParams(_MessageParams):
    thread_ts: str | None = None


class UpdateMessageParams(_MessageParams):
    ts: str = pydantic.Field(min_length=1)


class SlackConnector(base.Connector):
    """Posts and updates messages through the Slack Web API as a bot."""

    kind = "slack"
    settings_model = SlackSettings
    actions = {
        "post_message": "Post a message (text and/or blocks) to a channel or thread; "
        "returns {channel, ts}.",
        "update_message": "Replace the text and/or blocks of a posted message; "
        "returns {channel, ts}.",
    }

    def __init__(self, name: str, settings: SlackSettings, secrets: Any) -> None:
        super().__init__(name, settings, secrets)
        self.client = _http.GuardedClient(
            connection=name,
            base_url=settings.base_url + "/",
            timeout_seconds=settings.timeout_seconds,
            allow_networks=settings.allow_networks,
        )

    async def action_post_message(
        self, params: dict[str, Any], context: base.CallContext
    ) -> Any:
        p: PostMessageParams = base.parse_params(
            PostMessageParams, params, action=f"{self.name}.post_message"
        )
        answer = await self._call("chat.postMessage", p.model_dump(), context)
        return {"channel": answer.get("channel", p.channel), "ts": answer.get("ts")}

    async def action_update_message(
        self, params: dict[str, Any], context: base.CallContext
    ) -> Any:
        p: UpdateMessageParams = base.parse_params(
            UpdateMessageParams, params, action=f"{self.name}.update_message"
        )
        answer = await self._call("chat.update", p.model_dump(), context)
        return {
            "channel": answer.get("channel", p.channel),
            "ts": answer.get("ts", p.ts),
        }

    async def check(self) -> str:
        """auth.test: the token is valid, and whose it is."""
        context = base.check_context(self.settings.timeout_seconds)
        answer = await self._call("auth.test", {}, context)
        return f"authenticated as {answer.get('user')} in team {answer.get('team')}"

    async def _call(
        self, method: str, payload: dict[str, Any], context: base.CallContext
    ) -> dict[str, Any]:
        """POST one Web API method as JSON; return the answer or raise a classified error."""
        token = self.secrets.get(self.settings.token_secret)
        body = json.dumps({k: v for k, v in payload.items() if v is not None})
        response = await self.client.request(
            "POST",
            method,
            content=body.encode(),
            headers={
                "Authorization": f"Bearer {token}",
                "Content-Type": "application/json; charset=utf-8",
            },
            timeout_seconds=context.timeout_seconds,
        )
        answer = _http.response_body(response)
        if not isinstance(answer, dict):
            answer = {}
        code = str(answer.get("error") or "")
        if response.status_code == 200 and answer.get("ok") is True:
            return answer
        if response.status_code == 200 and answer.get("ok") is False:
            raise errors.RemoteStatusError(
                f"slack {method} failed: {_describe(code or 'unknown_error', answer)}",
                status=200,
                retryable=code in RETRYABLE_CODES,
                retry_after_seconds=_http.retry_after_seconds(response),
                connection=self.name,
                code=code,
            )
        if response.status_code == 200:
            raise errors.RemoteStatusError(
                f"slack {method} answered 200 without an ok field",
                status=200,
                retryable=False,
                connection=self.name,
            )
        # Throttling (429 + Retry-After) and server failures; name the code if any.
        detail = code or response.reason_phrase or "error"
        error = _http.status_error(
            f"slack {method} answered {response.status_code}: {detail}",
            response,
            connection=self.name,
        )
        if code in RETRYABLE_CODES:
            error.retryable = True
        raise error

    async def close(self) -> None:
        await self.client.close()


def _describe(code: str, answer: dict[str, Any]) -> str:
    """The error code, with what Slack adds for scope errors."""
    if code == "missing_scope" and answer.get("needed"):
        return (
            f"{code} (needed {answer.get('needed')}, provided {answer.get('provided')})"
        )
    return code
