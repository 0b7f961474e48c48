"""The slack, mattermost_webhook and teams_webhook connectors against their
stand-ins over real HTTP on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from lobflows import errors
from lobflows.connectors import base, chat_webhooks, slack
from lobflows.secrets import SecretStore
from lobflows.testing.chat_webhooks import (
    ChatWebhookState,
    create_mattermost_app,
    create_teams_app,
)
from lobflows.testing.servers import ServerThread
from lobflows.testing.slack import SlackState, create_slack_app

pytestmark = pytest.mark.integration

TOKEN = "xoxb-chat-test-token-42"
HOOK_KEY = "mmhookkey4242424242"
TEAMS_PATH = "tenant-1/IncomingWebhook/abc/def"
FLOW_ID, FLOW_SIG = "wf123", "flow-sig-value-42"
CONTEXT = base.CallContext(
    run_id="r" * 32, flow="notify", step="s", attempt=1, timeout_seconds=5
)


# ------------------------------------------------------------------ servers


@pytest.fixture(scope="module")
def slack_server() -> Iterator[ServerThread]:
    with ServerThread(create_slack_app(bot_token=TOKEN)) as srv:
        yield srv


@pytest.fixture(scope="module")
def mattermost_server() -> Iterator[ServerThread]:
    with ServerThread(create_mattermost_app(hook_key=HOOK_KEY)) as srv:
        yield srv


@pytest.fixture(scope="module")
def teams_server() -> Iterator[ServerThread]:
    app = create_teams_app(
        connector_path=TEAMS_PATH, workflow_id=FLOW_ID, workflow_sig=FLOW_SIG
    )
    with ServerThread(app) as srv:
        yield srv


@pytest.fixture
def slack_state(slack_server: ServerThread) -> SlackState:
    state: SlackState = slack_server.app.state.slack  # type: ignore[attr-defined]
    state.reset()
    return state


@pytest.fixture
def mm_state(mattermost_server: ServerThread) -> ChatWebhookState:
    state: ChatWebhookState = mattermost_server.app.state.chat  # type: ignore[attr-defined]
    state.reset()
    return state


@pytest.fixture
def teams_state(teams_server: ServerThread) -> ChatWebhookState:
    state: ChatWebhookState = teams_server.app.state.chat  # type: ignore[attr-defined]
    state.reset()
    return state


# ------------------------------------------------------------------ connectors


def slack_connector(url: str, token: str = TOKEN) -> slack.SlackConnector:
    settings = slack.SlackSettings.model_validate(
        {"base_url": f"{url}/api", "token_secret": "slack-bot"}
    )
    return slack.SlackConnector("chat", settings, SecretStore({"slack-bot": token}))


@pytest.fixture
async def bot(
    slack_server: ServerThread, slack_state: SlackState
) -> AsyncIterator[slack.SlackConnector]:
    connector = slack_connector(slack_server.url)
    yield connector
    await connector.close()


@pytest.fixture
async def mattermost(
    mattermost_server: ServerThread, mm_state: ChatWebhookState
) -> AsyncIterator[chat_webhooks.MattermostWebhookConnector]:
    settings = chat_webhooks.ChatWebhookSettings.model_validate(
        {"url_secret": "mm-hook"}
    )
    connector = chat_webhooks.MattermostWebhookConnector(
        "mm",
        settings,
        SecretStore({"mm-hook": f"{mattermost_server.url}/hooks/{HOOK_KEY}"}),
    )
    yield connector
    await connector.close()


def teams_connector(
    url: str, payload_format: str = "message_card"
) -> chat_webhooks.TeamsWebhookConnector:
    settings = chat_webhooks.TeamsWebhookSettings.model_validate(
        {"url_secret": "teams-hook", "payload_format": payload_format}
    )
    return chat_webhooks.TeamsWebhookConnector(
        "teams", settings, SecretStore({"teams-hook": url})
    )


@pytest.fixture
async def teams(
    teams_server: ServerThread, teams_state: ChatWebhookState
) -> AsyncIterator[chat_webhooks.TeamsWebhookConnector]:
    connector = teams_connector(f"{teams_server.url}/webhookb2/{TEAMS_PATH}")
    yield connector
    await connector.close()


@pytest.fixture
async def teams_flow(
    teams_server: ServerThread, teams_state: ChatWebhookState
) -> AsyncIterator[chat_webhooks.TeamsWebhookConnector]:
    url = (
        f"{teams_server.url}/workflows/{FLOW_ID}/triggers/manual/paths/invoke"
        f"?api-version=2016-06-01&sig={FLOW_SIG}"
    )
    connector = teams_connector(url, "adaptive_card")
    yield connector
    await connector.close()


async def call(connector: base.Connector, action: str, **params: Any) -> Any:
    return await connector.call(action, params, CONTEXT)


async def failure(
    connector: base.Connector, action: str, **params: Any
) -> errors.RemoteStatusError:
    with pytest.raises(errors.RemoteStatusError) as caught:
        await call(connector, action, **params)
    return caught.value


# ------------------------------------------------------------------ Slack Web API


async def test_slack_post_message_returns_channel_and_ts(
    bot: slack.SlackConnector, slack_state: SlackState
) -> None:
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*hi*"}}]
    answer = await call(
        bot, "post_message", channel="#general", text="New hire: Ada", blocks=blocks
    )
    assert answer["channel"] == "C0GENERAL"
    assert isinstance(answer["ts"], str) and "." in answer["ts"]
    [post] = slack_state.posts
    assert post.ts == answer["ts"]
    assert post.payload == {
        "channel": "#general",
        "text": "New hire: Ada",
        "blocks": blocks,
    }
    assert slack_state.request_counts["POST /api/chat.postMessage"] == 1


async def test_slack_thread_reply_and_update(
    bot: slack.SlackConnector, slack_state: SlackState
) -> None:
    parent = await call(bot, "post_message", channel="C0GENERAL", text="parent")
    reply = await call(
        bot, "post_message", channel="C0GENERAL", text="reply", thread_ts=parent["ts"]
    )
    assert reply["ts"] > parent["ts"]
    assert slack_state.posts[1].payload["thread_ts"] == parent["ts"]
    updated = await call(
        bot, "update_message", channel="C0GENERAL", ts=parent["ts"], text="edited"
    )
    assert updated == {"channel": "C0GENERAL", "ts": parent["ts"]}
    assert slack_state.posts[0].payload["text"] == "edited"
    assert slack_state.posts[0].edits == 1


async def test_slack_update_of_unknown_message_is_permanent(
    bot: slack.SlackConnector,
) -> None:
    error = await failure(
        bot, "update_message", channel="C0GENERAL", ts="1.000001", text="x"
    )
    assert not error.retryable
    assert "message_not_found" in str(error)


async def test_slack_invalid_auth_is_permanent_and_hides_the_token(
    slack_server: ServerThread, slack_state: SlackState
) -> None:
    wrong = "xoxb-wrong-token-not-to-be-shown"
    connector = slack_connector(slack_server.url, token=wrong)
    try:
        error = await failure(connector, "post_message", channel="general", text="x")
    finally:
        await connector.close()
    assert not error.retryable
    assert error.status == 200
    assert "invalid_auth" in str(error)
    assert wrong not in str(error) and wrong not in repr(error.context)
    assert slack_state.posts == []


@pytest.mark.parametrize(
    ("channel", "code"),
    [
        ("C0NOPE", "channel_not_found"),
        ("C0PRIVATE", "not_in_channel"),
        ("old-news", "is_archived"),
    ],
)
async def test_slack_channel_errors_are_permanent(
    bot: slack.SlackConnector, channel: str, code: str
) -> None:
    error = await failure(bot, "post_message", channel=channel, text="x")
    assert not error.retryable
    assert code in str(error)
    assert error.context["code"] == code


async def test_slack_too_long_text_is_permanent(bot: slack.SlackConnector) -> None:
    error = await failure(bot, "post_message", channel="general", text="x" * 40_001)
    assert (error.retryable, error.context["code"]) == (False, "msg_too_long")


async def test_slack_rate_limit_is_retryable_with_retry_after(
    bot: slack.SlackConnector, slack_state: SlackState
) -> None:
    slack_state.rate_limit(retry_after=7)
    error = await failure(bot, "post_message", channel="general", text="x")
    assert error.status == 429
    assert error.retryable
    assert error.retry_after_seconds == 7
    assert "ratelimited" in str(error)
    # The switch counted down: the next post goes through.
    assert (await call(bot, "post_message", channel="general", text="y"))["ts"]
    assert [p.payload["text"] for p in slack_state.posts] == ["y"]


@pytest.mark.parametrize(
    ("code", "retryable"),
    [("rate_limited", True), ("internal_error", True), ("missing_scope", False)],
)
async def test_slack_ok_false_codes_are_classified(
    bot: slack.SlackConnector, slack_state: SlackState, code: str, retryable: bool
) -> None:
    slack_state.add_api_fault(error=code, match="POST /api/chat.postMessage")
    error = await failure(bot, "post_message", channel="general", text="x")
    assert (error.status, error.retryable) == (200, retryable)
    assert code in str(error)


async def test_slack_server_error_is_retryable(
    slack_server: ServerThread, bot: slack.SlackConnector
) -> None:
    async with httpx.AsyncClient(base_url=slack_server.url) as http:
        added = await http.post("/__standin__/api/faults", json={"status": 503})
        assert added.status_code == 200
    error = await failure(bot, "post_message", channel="general", text="x")
    assert (error.status, error.retryable) == (503, True)


async def test_slack_post_message_needs_text_or_blocks(
    bot: slack.SlackConnector,
) -> None:
    with pytest.raises(errors.StepInputError, match="text or blocks"):
        await call(bot, "post_message", channel="general")


def test_slack_settings_default_to_the_public_api() -> None:
    settings = slack.SlackSettings.model_validate({"token_secret": "t"})
    assert settings.base_url == "https://slack.com/api"


# ------------------------------------------------------------------ Mattermost


async def test_mattermost_post_arrives_with_payload(
    mattermost: chat_webhooks.MattermostWebhookConnector, mm_state: ChatWebhookState
) -> None:
    answer = await call(
        mattermost, "post", text="Build green", channel="off-topic", username="ci"
    )
    assert answer == {"status": 200, "answer": "ok"}
    [message] = mm_state.messages
    assert message.path == f"/hooks/{HOOK_KEY}"
    assert message.payload == {
        "text": "Build green",
        "channel": "off-topic",
        "username": "ci",
    }


async def test_mattermost_unknown_channel_is_permanent_without_the_key(
    mattermost: chat_webhooks.MattermostWebhookConnector,
) -> None:
    error = await failure(mattermost, "post", text="x", channel="nowhere")
    assert (error.status, error.retryable) == (404, False)
    assert "web.incoming_webhook.channel.app_error" in str(error)
    assert "127.0.0.1" in str(error)
    assert HOOK_KEY not in str(error)


@pytest.mark.parametrize(
    ("status", "retryable"), [(429, True), (500, True), (403, False)]
)
async def test_mattermost_faults_are_classified(
    mattermost: chat_webhooks.MattermostWebhookConnector,
    mm_state: ChatWebhookState,
    status: int,
    retryable: bool,
) -> None:
    mm_state.add_fault(status, headers={"Retry-After": "4"} if status == 429 else None)
    error = await failure(mattermost, "post", text="x")
    assert (error.status, error.retryable) == (status, retryable)
    if status == 429:
        assert error.retry_after_seconds == 4
    assert mm_state.messages == []


# ------------------------------------------------------------------ Teams


async def test_teams_message_card_arrives(
    teams: chat_webhooks.TeamsWebhookConnector, teams_state: ChatWebhookState
) -> None:
    answer = await call(
        teams, "post", text="Invoice 42 approved", title="AP", theme_color="0076D7"
    )
    assert answer == {"status": 200, "answer": "1"}
    [message] = teams_state.messages
    assert message.payload == {
        "@type": "MessageCard",
        "@context": "https://schema.org/extensions",
        "summary": "AP",
        "title": "AP",
        "text": "Invoice 42 approved",
        "themeColor": "0076D7",
    }


async def test_teams_workflow_gets_an_adaptive_card(
    teams_flow: chat_webhooks.TeamsWebhookConnector, teams_state: ChatWebhookState
) -> None:
    answer = await call(teams_flow, "post", text="Leave approved")
    assert answer["status"] == 202
    [message] = teams_state.messages
    assert message.payload["type"] == "message"
    [attachment] = message.payload["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert attachment["content"]["type"] == "AdaptiveCard"
    assert attachment["content"]["body"][-1]["text"] == "Leave approved"


async def test_teams_workflow_bad_signature_is_permanent_and_hidden(
    teams_server: ServerThread, teams_state: ChatWebhookState
) -> None:
    url = (
        f"{teams_server.url}/workflows/{FLOW_ID}/triggers/manual/paths/invoke"
        "?sig=wrong-signature-value"
    )
    connector = teams_connector(url, "adaptive_card")
    try:
        error = await failure(connector, "post", text="x")
    finally:
        await connector.close()
    assert (error.status, error.retryable) == (401, False)
    assert "DirectApiInvalidAuthorizationSignature" in str(error)
    assert "wrong-signature-value" not in str(error)


@pytest.mark.parametrize(
    ("status", "retryable"), [(429, True), (503, True), (400, False), (404, False)]
)
async def test_teams_faults_are_classified(
    teams: chat_webhooks.TeamsWebhookConnector,
    teams_state: ChatWebhookState,
    status: int,
    retryable: bool,
) -> None:
    teams_state.add_fault(status)
    error = await failure(teams, "post", text="x")
    assert (error.status, error.retryable) == (status, retryable)
    assert TEAMS_PATH not in str(error)
    if status == 429:
        assert error.retry_after_seconds == 1


async def test_teams_delivery_failure_inside_a_200_is_an_error(
    teams: chat_webhooks.TeamsWebhookConnector, teams_state: ChatWebhookState
) -> None:
    teams_state.add_fault(
        200,
        body="Webhook message delivery failed with error: Microsoft Teams endpoint "
        "returned HTTP error 429 with ContextId x.",
    )
    error = await failure(teams, "post", text="x")
    assert error.retryable
    assert teams_state.messages == []


async def test_teams_unknown_webhook_is_permanent(
    teams_server: ServerThread, teams_state: ChatWebhookState
) -> None:
    connector = teams_connector(f"{teams_server.url}/webhookb2/other/path")
    try:
        error = await failure(connector, "post", text="x")
    finally:
        await connector.close()
    assert (error.status, error.retryable) == (404, False)
