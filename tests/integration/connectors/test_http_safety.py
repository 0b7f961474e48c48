"""Outbound calls cannot be steered by run data to other hosts or metadata services."""

from __future__ import annotations

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from lobflows import errors
from lobflows.connectors import base, http, slack, smtp
from lobflows.secrets import SecretStore
from lobflows.testing.servers import ServerThread
from tests import support

pytestmark = pytest.mark.integration
CONTEXT = base.CallContext(
    run_id="r" * 32, flow="f", step="s", attempt=1, timeout_seconds=5
)


def echo_app() -> Starlette:
    async def echo(request: Request) -> JSONResponse:
        return JSONResponse(
            {
                "path": request.url.path,
                "authorization": request.headers.get("authorization"),
            }
        )

    return Starlette(routes=[Route("/{path:path}", echo, methods=["GET", "POST"])])


def http_connection(base_url: str, **settings) -> http.HttpConnector:
    secrets = SecretStore({"api-token": "tok-http-safety-123456"})
    return http.HttpConnector(
        "api",
        http.HttpSettings.model_validate(
            {
                "base_url": base_url,
                "auth": {"kind": "bearer", "secret": "api-token"},
                **settings,
            }
        ),
        secrets,
    )


def refuse_any_request(request: httpx.Request) -> httpx.Response:
    raise AssertionError(f"a request to {request.url} was sent")


@pytest.mark.parametrize(
    ("path", "phrase"),
    [
        ("http://127.0.0.1:9/steal", "relative to the connection's base_url"),
        ("//127.0.0.1:9/steal", "relative to the connection's base_url"),
        ("https://example.org/x", "relative to the connection's base_url"),
        ("/../../x", "'..' segments"),  # up and out of the base path
        ("/%2e%2e/x", "'..' segments"),  # the same, percent-encoded
        ("/x?a=b", "query values in params"),  # would be dropped silently
    ],
)
async def test_http_request_refuses_paths_that_leave_the_base_url(
    path: str, phrase: str
):
    connector = http_connection("http://127.0.0.1:9/api")
    connector.client.client._transport = httpx.MockTransport(refuse_any_request)

    with pytest.raises(errors.StepInputError, match=phrase):
        await connector.call("request", {"path": path}, CONTEXT)
    await connector.close()


async def test_http_request_sends_credentials_to_its_own_base_url():
    with ServerThread(echo_app()) as server:
        connector = http_connection(server.url)
        result = await connector.call(
            "request", {"method": "POST", "path": "/orders", "json": {}}, CONTEXT
        )
        await connector.close()

    assert result["body"] == {
        "path": "/orders",
        "authorization": "Bearer tok-http-safety-123456",
    }


@pytest.mark.parametrize(
    "base_url",
    [
        "http://169.254.169.254/latest/meta-data",  # link-local cloud metadata
        "http://[fd00:ec2::254]/",  # the same over IPv6
        "http://100.100.100.200/",  # another cloud's metadata address
        "http://[::ffff:169.254.169.254]/",  # IPv4-mapped IPv6
        "http://0.0.0.0:80/",
    ],
)
async def test_http_request_refuses_metadata_addresses_before_connecting(base_url: str):
    connector = http_connection(base_url)
    connector.client.client._transport = httpx.MockTransport(refuse_any_request)

    with pytest.raises(errors.BlockedAddressError, match="link-local or metadata"):
        await connector.call("request", {"path": "/"}, CONTEXT)
    await connector.close()


async def test_http_request_allows_a_listed_network():
    connector = http_connection(
        "http://169.254.10.10/", allow_networks=["169.254.10.0/24"]
    )
    connector.client.client._transport = httpx.MockTransport(
        lambda request: httpx.Response(200, json={"ok": True})
    )

    result = await connector.call("request", {"path": "/"}, CONTEXT)
    await connector.close()

    assert result["body"] == {"ok": True}


async def test_smtp_send_refuses_a_metadata_host_before_connecting(
    monkeypatch: pytest.MonkeyPatch,
):
    async def no_send(*args, **kwargs):
        raise AssertionError("aiosmtplib.send was called")

    monkeypatch.setattr(smtp.aiosmtplib, "send", no_send)
    settings = smtp.SmtpSettings.model_validate(
        {
            "host": "169.254.169.254",
            "port": 25,
            "security": "none",
            "from": "a@example.com",
        }
    )
    connector = smtp.SmtpConnector("mail", settings, SecretStore())

    with pytest.raises(errors.BlockedAddressError):
        await connector.call(
            "send", {"to": "b@example.com", "subject": "s", "text": "t"}, CONTEXT
        )


async def test_chat_webhook_refuses_a_secret_that_is_not_a_url():
    settings = slack.SlackWebhookSettings(url_secret="chat-url")
    connector = slack.SlackWebhookConnector(
        "chat", settings, SecretStore({"chat-url": "SECRETTOKEN"})
    )

    with pytest.raises(
        errors.ConfigurationError, match="'chat-url' does not hold an http"
    ):
        await connector.call("post", {"text": "hi"}, CONTEXT)
    await connector.close()


async def test_chat_webhook_errors_name_the_host_but_never_the_secret_path():
    port = support.free_port()  # nothing listens there
    url = f"http://127.0.0.1:{port}/services/T1/B1/SuperSecretHookToken42"
    settings = slack.SlackWebhookSettings(url_secret="chat-url")
    connector = slack.SlackWebhookConnector(
        "chat", settings, SecretStore({"chat-url": url})
    )

    with pytest.raises(errors.TransportError) as caught:
        await connector.call("post", {"text": "hi"}, CONTEXT)
    await connector.close()

    assert "127.0.0.1" in str(caught.value)
    assert "SuperSecretHookToken42" not in str(caught.value) and "/services" not in str(
        caught.value
    )
