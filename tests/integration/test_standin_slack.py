"""The Slack stand-in answers like an incoming webhook: plain-text codes."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from lobflows.testing import ServerThread, SlackState, create_slack_app

pytestmark = pytest.mark.integration

HOOK = "/services/T123/B456/s3cret"


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    app = create_slack_app(webhook_path_secret="T123/B456/s3cret")
    with ServerThread(app) as srv:
        yield srv


@pytest.fixture
def state(server: ServerThread) -> SlackState:
    slack: SlackState = server.app.state.slack  # type: ignore[attr-defined]
    slack.reset()
    return slack


@pytest.fixture
def client(server: ServerThread, state: SlackState) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10) as http:
        yield http


def test_slack_post_returns_plain_ok_and_records_message(
    client: httpx.Client, state: SlackState
) -> None:
    response = client.post(HOOK, json={"text": "New hire: Ada"})
    assert response.status_code == 200
    assert response.text == "ok"
    assert response.headers["content-type"] == "text/html"
    [message] = state.messages
    assert message.payload == {"text": "New hire: Ada"}
    assert message.path == HOOK
    assert message.received_at.tzinfo is not None


@pytest.mark.parametrize(
    "payload",
    [
        {"blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "hi"}}]},
        {"attachments": [{"fallback": "hi", "text": "hi"}]},
    ],
)
def test_slack_blocks_or_attachments_alone_are_enough(
    client: httpx.Client, payload: dict[str, object]
) -> None:
    assert client.post(HOOK, json=payload).text == "ok"


def test_slack_form_encoded_payload_is_accepted(
    client: httpx.Client, state: SlackState
) -> None:
    response = client.post(HOOK, data={"payload": json.dumps({"text": "form"})})
    assert response.text == "ok"
    assert state.messages[0].payload["text"] == "form"


def test_slack_unknown_webhook_is_404_no_service(
    client: httpx.Client, state: SlackState
) -> None:
    response = client.post("/services/T123/B456/wrong", json={"text": "x"})
    assert (response.status_code, response.text) == (404, "no_service")
    assert state.messages == []


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b""])
def test_slack_unreadable_body_is_400_invalid_payload(
    client: httpx.Client, body: bytes
) -> None:
    response = client.post(
        HOOK, content=body, headers={"content-type": "application/json"}
    )
    assert (response.status_code, response.text) == (400, "invalid_payload")


@pytest.mark.parametrize("payload", [{}, {"text": ""}, {"username": "bot"}])
def test_slack_nothing_to_post_is_400_no_text(
    client: httpx.Client, payload: dict[str, str]
) -> None:
    response = client.post(HOOK, json=payload)
    assert (response.status_code, response.text) == (400, "no_text")
    assert response.headers["content-type"] == "text/html"


@pytest.mark.parametrize(
    ("blocks", "code"),
    [
        ("not a list", "invalid_blocks_format"),
        ([{"text": "no type"}], "invalid_blocks"),
    ],
)
def test_slack_bad_blocks_are_refused(
    client: httpx.Client, blocks: object, code: str
) -> None:
    response = client.post(HOOK, json={"text": "t", "blocks": blocks})
    assert (response.status_code, response.text) == (400, code)


def test_slack_rate_limit_fault_sends_retry_after_and_counts_down(
    client: httpx.Client, state: SlackState
) -> None:
    fault = {"status": 429, "count": 2, "headers": {"Retry-After": "3"}}
    assert client.post("/__standin__/faults", json=fault).status_code == 200
    answers = [client.post(HOOK, json={"text": f"m{i}"}) for i in range(3)]
    assert [a.status_code for a in answers] == [429, 429, 200]
    assert answers[0].headers["Retry-After"] == "3"
    assert answers[0].text == "rate_limited"
    assert [m.payload["text"] for m in state.messages] == ["m2"]
    stats = client.get("/__standin__/stats").json()
    assert stats["requests"][f"POST {HOOK}"] == 3
    assert stats["messages"] == 1
    assert stats["faults"] == []


@pytest.mark.parametrize(
    ("status", "text"), [(404, "channel_not_found"), (500, "rollup_error")]
)
def test_slack_fault_default_bodies_are_plain_codes(
    client: httpx.Client, status: int, text: str
) -> None:
    client.post("/__standin__/faults", json={"status": status})
    response = client.post(HOOK, json={"text": "x"})
    assert (response.status_code, response.text) == (status, text)


def test_slack_fault_with_custom_body_and_match(
    client: httpx.Client, state: SlackState
) -> None:
    state.add_fault(410, body="channel_is_archived", match="POST /services/T9/*")
    assert client.post(HOOK, json={"text": "x"}).text == "ok"
    client.post("/__standin__/faults", json={"status": 403, "body": "invalid_token"})
    response = client.post(HOOK, json={"text": "x"})
    assert (response.status_code, response.text) == (403, "invalid_token")
    assert len(state.faults) == 1


def test_slack_fault_body_must_be_text(client: httpx.Client) -> None:
    bad = {"status": 500, "body": {"error": "x"}}
    assert client.post("/__standin__/faults", json=bad).status_code == 400


def test_slack_drop_records_message_but_cuts_connection(
    client: httpx.Client, state: SlackState
) -> None:
    client.post("/__standin__/drop", json={"count": 1})
    with pytest.raises(httpx.RemoteProtocolError):
        client.post(HOOK, json={"text": "did it post?"})
    assert [m.payload["text"] for m in state.messages] == ["did it post?"]


def test_slack_messages_endpoint_lists_payloads(client: httpx.Client) -> None:
    client.post(HOOK, json={"text": "one"})
    client.post(HOOK, json={"text": "two"})
    listed = client.get("/__standin__/messages").json()
    assert [m["payload"]["text"] for m in listed] == ["one", "two"]
    assert all(m["received_at"] for m in listed)


def test_slack_reset_clears_messages_counters_and_faults(
    client: httpx.Client, state: SlackState
) -> None:
    client.post(HOOK, json={"text": "one"})
    state.add_fault(500, count=3)
    assert client.post("/__standin__/reset").status_code == 200
    assert client.get("/__standin__/stats").json() == {
        "requests": {},
        "messages": 0,
        "faults": [],
    }
