"""The http connection against a local API of the tests' own: OAuth2 client
credentials with refresh, and every page of a list by offset, cursor, Link
header and next-URL field."""

from __future__ import annotations

import urllib.parse
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from lobflows import errors
from lobflows.connectors import base
from lobflows.connectors.http import HttpConnector, HttpSettings
from lobflows.secrets import SecretStore
from lobflows.testing.servers import ServerThread

pytestmark = pytest.mark.integration

ITEMS = [{"id": n} for n in range(1, 8)]


class Api:
    """Seven items behind a client-credentials token that the test may revoke."""

    def __init__(self) -> None:
        self.tokens_issued = 0
        self.valid: set[str] = set()
        self.pages: list[str] = []

    def app(self) -> Starlette:
        async def token(request: Request) -> JSONResponse:
            form = dict(urllib.parse.parse_qsl((await request.body()).decode()))
            if (
                form.get("client_secret") != "s3cret"
                or form.get("client_id") != "flows"
            ):
                return JSONResponse({"error": "invalid_client"}, status_code=401)
            self.tokens_issued += 1
            issued = f"tok{self.tokens_issued}"
            self.valid.add(issued)
            return JSONResponse({"access_token": issued, "expires_in": 3600})

        def authorized(request: Request) -> bool:
            given = request.headers.get("authorization", "").removeprefix("Bearer ")
            return given in self.valid

        async def items(request: Request) -> JSONResponse:
            if not authorized(request):
                return JSONResponse({"error": "expired"}, status_code=401)
            q = request.query_params
            self.pages.append(str(request.url.path) + "?" + str(q))
            limit = int(q.get("limit", 3))
            style = request.path_params["style"]
            if style == "offset":
                start = int(q.get("offset", 0))
                return JSONResponse({"data": ITEMS[start : start + limit]})
            start = int(q.get("cursor") or q.get("from") or 0)
            page = ITEMS[start : start + limit]
            following = start + limit if start + limit < len(ITEMS) else None
            if style == "cursor":
                return JSONResponse({"data": page, "meta": {"next": following}})
            base_url = str(request.base_url).rstrip("/")
            if style == "link":
                headers = (
                    {
                        "Link": f'<{base_url}/api/items/link?from={following}&limit={limit}>; rel="next"'
                    }
                    if following
                    else {}
                )
                return JSONResponse({"data": page}, headers=headers)
            if style == "escape":
                return JSONResponse({"data": page, "next": "http://127.0.0.1:9/steal"})
            nxt = (
                f"/api/items/next?from={following}&limit={limit}" if following else None
            )
            return JSONResponse({"data": page, "next": nxt})

        return Starlette(
            routes=[
                Route("/oauth/token", token, methods=["POST"]),
                Route("/api/items/{style}", items),
            ]
        )


@pytest.fixture
def api():
    service = Api()
    with ServerThread(service.app()) as server:
        yield service, server.url


def connector(url: str, **auth: Any) -> HttpConnector:
    settings = HttpSettings.model_validate(
        {
            "base_url": f"{url}/api",
            "auth": {
                "kind": "oauth2_client_credentials",
                "token_url": f"{url}/oauth/token",
                "client_id": "flows",
                "secret": "crm-client-secret",
                **auth,
            },
        }
    )
    return HttpConnector("crm", settings, SecretStore({"crm-client-secret": "s3cret"}))


CONTEXT = base.CallContext(
    run_id="r1", flow="f", step="s", attempt=1, timeout_seconds=10
)


@pytest.mark.parametrize(
    ("style", "paging"),
    [
        ("offset", {"style": "offset", "items": "data", "limit": 3}),
        (
            "cursor",
            {
                "style": "cursor",
                "items": "data",
                "limit": 3,
                "cursor_field": "meta.next",
            },
        ),
        ("link", {"style": "link", "items": "data", "limit": 3}),
        ("next", {"style": "next_url", "items": "data", "limit": 3}),
    ],
)
async def test_every_page_is_fetched_in_order(api, style: str, paging: dict):
    service, url = api
    crm = connector(url)
    try:
        result = await crm.call(
            "fetch_all", {"path": f"/items/{style}", "paging": paging}, CONTEXT
        )
    finally:
        await crm.close()

    assert result["items"] == ITEMS
    assert result["pages"] == 3
    assert service.tokens_issued == 1  # one token for all pages


async def test_an_expired_token_is_fetched_again_once(api):
    service, url = api
    crm = connector(url)
    try:
        first = await crm.call("request", {"path": "/items/offset"}, CONTEXT)
        service.valid.clear()  # the server forgets the token before it expires
        second = await crm.call("request", {"path": "/items/offset"}, CONTEXT)
    finally:
        await crm.close()

    assert first["status"] == second["status"] == 200
    assert service.tokens_issued == 2


async def test_wrong_client_credentials_are_a_permanent_error_without_the_secret(api):
    _, url = api
    crm = connector(url, client_id="someone-else")
    try:
        with pytest.raises(errors.RemoteStatusError) as refused:
            await crm.call("request", {"path": "/items/offset"}, CONTEXT)
    finally:
        await crm.close()
    assert not refused.value.retryable
    assert "invalid_client" in str(refused.value) and "s3cret" not in str(refused.value)


async def test_a_next_page_outside_the_base_url_is_refused(api):
    _, url = api
    crm = connector(url)
    try:
        with pytest.raises(errors.ConnectorError, match="points outside"):
            await crm.call(
                "fetch_all",
                {
                    "path": "/items/escape",
                    "paging": {"style": "next_url", "items": "data"},
                },
                CONTEXT,
            )
    finally:
        await crm.close()
