"""The msgraph connector against the Microsoft Graph stand-in over real HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from lobflows import errors
from lobflows.connectors import base, msgraph
from lobflows.secrets import SecretStore
from lobflows.testing.msgraph import GROUPS, MsGraphState, create_msgraph_app
from lobflows.testing.servers import ServerThread

pytestmark = pytest.mark.integration

CLIENT_ID, CLIENT_SECRET = "graph-app-id", "graph-client-secret-1"
GROUP = next(iter(GROUPS))
CONTEXT = base.CallContext(
    run_id="r" * 32, flow="onboarding", step="s", attempt=1, timeout_seconds=5
)


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    app = create_msgraph_app(client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    with ServerThread(app) as srv:
        yield srv


@pytest.fixture
def state(server: ServerThread) -> MsGraphState:
    tenant: MsGraphState = server.app.state.msgraph  # type: ignore[attr-defined]
    tenant.reset()
    return tenant


@pytest.fixture
async def graph(
    server: ServerThread, state: MsGraphState
) -> AsyncIterator[msgraph.MsGraphConnector]:
    settings = msgraph.MsGraphSettings.model_validate(
        {
            "base_url": f"{server.url}/v1.0",
            "token_url": f"{server.url}/contoso.example/oauth2/v2.0/token",
            "client_id": CLIENT_ID,
            "secret": "graph-app",
        }
    )
    connector = msgraph.MsGraphConnector(
        "graph", settings, SecretStore({"graph-app": CLIENT_SECRET})
    )
    yield connector
    await connector.close()


async def call(connector: base.Connector, action: str, **params: Any) -> Any:
    return await connector.call(action, params, CONTEXT)


async def new_user(connector: msgraph.MsGraphConnector, alias: str) -> Any:
    return await call(
        connector,
        "create_user",
        display_name=alias.title(),
        mail_nickname=alias,
        user_principal_name=f"{alias}@contoso.example",
        password="Str0ng!pass",
        properties={"jobTitle": "Analyst"},
    )


async def test_msgraph_create_user_returns_the_new_user(
    graph: msgraph.MsGraphConnector, state: MsGraphState
) -> None:
    user = await new_user(graph, "ada")

    assert user["created"] is True
    stored = state.users[user["id"]]
    assert (stored["userPrincipalName"], stored["jobTitle"]) == (
        "ada@contoso.example",
        "Analyst",
    )


async def test_msgraph_create_user_again_returns_the_existing_user(
    graph: msgraph.MsGraphConnector, state: MsGraphState
) -> None:
    first = await new_user(graph, "ada")

    again = await new_user(graph, "ada")

    assert (again["id"], again["created"]) == (first["id"], False)
    assert len(state.users) == 1


async def test_msgraph_add_to_group_twice_counts_the_second_as_success(
    graph: msgraph.MsGraphConnector, state: MsGraphState
) -> None:
    user = await new_user(graph, "ada")

    first = await call(graph, "add_to_group", group_id=GROUP, user_id=user["id"])
    second = await call(graph, "add_to_group", group_id=GROUP, user_id=user["id"])

    assert (first["added"], second["added"]) == (True, False)
    assert state.members[GROUP] == [user["id"]]


async def test_msgraph_add_to_unknown_group_fails_for_good_with_its_code(
    graph: msgraph.MsGraphConnector,
) -> None:
    user = await new_user(graph, "ada")

    with pytest.raises(errors.RemoteStatusError) as caught:
        await call(graph, "add_to_group", group_id="nope", user_id=user["id"])

    assert (caught.value.status, caught.value.retryable) == (404, False)
    assert caught.value.context["error_code"] == "Request_ResourceNotFound"
    assert caught.value.context["request_id"]


async def test_msgraph_send_mail_is_recorded_by_the_stand_in(
    graph: msgraph.MsGraphConnector, state: MsGraphState
) -> None:
    await new_user(graph, "ada")

    sent = await call(
        graph,
        "send_mail",
        from_user="ada@contoso.example",
        to="grace@example.com",
        subject="Welcome",
        text="Hello",
    )

    assert sent == {"accepted": True}
    [mail] = state.mail
    assert mail["from"] == "ada@contoso.example"
    assert mail["message"]["subject"] == "Welcome"
    assert mail["message"]["body"] == {"contentType": "Text", "content": "Hello"}
    assert mail["message"]["toRecipients"] == [
        {"emailAddress": {"address": "grace@example.com"}}
    ]


async def test_msgraph_list_follows_next_link_past_the_first_page(
    graph: msgraph.MsGraphConnector,
) -> None:
    for i in range(7):
        await new_user(graph, f"user{i}")

    found = await call(graph, "list", path="/users", params={"$select": "id"})

    assert found["pages"] == 3  # page size 3: 3 + 3 + 1
    assert len({u["id"] for u in found["items"]}) == 7


async def test_msgraph_list_refuses_a_next_link_off_the_base_url(
    graph: msgraph.MsGraphConnector, state: MsGraphState
) -> None:
    page = {"value": [], "@odata.nextLink": "https://evil.test/v1.0/users"}
    state.faults.add(200, body=page, match="GET /v1.0/users")

    with pytest.raises(errors.ConnectorError, match="outside"):
        await call(graph, "list", path="/users")


@pytest.mark.parametrize("status", [429, 503, 504])  # throttled, down, timed out
async def test_msgraph_throttling_is_retryable_with_retry_after_seconds(
    graph: msgraph.MsGraphConnector, state: MsGraphState, status: int
) -> None:
    state.faults.add(status, headers={"Retry-After": "12"}, match="POST /v1.0/users")

    with pytest.raises(errors.RemoteStatusError) as caught:
        await new_user(graph, "ada")

    assert (caught.value.status, caught.value.retryable) == (status, True)
    assert caught.value.retry_after_seconds == 12.0


async def test_msgraph_rejected_token_fetches_a_new_one_once(
    graph: msgraph.MsGraphConnector, state: MsGraphState
) -> None:
    await new_user(graph, "ada")
    state.expire_tokens()

    await new_user(graph, "grace")

    assert state.tokens_issued == 2
    assert len(state.users) == 2


async def test_msgraph_wrong_client_secret_fails_for_good(
    server: ServerThread, state: MsGraphState
) -> None:
    settings = msgraph.MsGraphSettings.model_validate(
        {
            "base_url": f"{server.url}/v1.0",
            "token_url": f"{server.url}/contoso.example/oauth2/v2.0/token",
            "client_id": CLIENT_ID,
            "secret": "graph-app",
        }
    )
    connector = msgraph.MsGraphConnector(
        "graph", settings, SecretStore({"graph-app": "wrong"})
    )

    with pytest.raises(errors.RemoteStatusError, match="invalid_client") as caught:
        await call(connector, "list", path="/users")
    await connector.close()

    assert (caught.value.status, caught.value.retryable) == (401, False)
