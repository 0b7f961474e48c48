"""Generic REST calls over HTTP, with auth from a named secret.

Auth kinds: a bearer token, basic credentials, a token header, any header,
or OAuth2 client credentials (the token is fetched when first needed, reused
until shortly before it expires, and fetched again once on a 401). The
``fetch_all`` action follows pages by offset, cursor, ``Link`` header or a
next-URL field, never leaving the connection's base URL.
"""

from __future__ import annotations

import base64
import urllib.parse
from typing import Any, Literal

import httpx
import pydantic

from lobflows import errors
from lobflows.connectors import _http, _oauth, base
from lobflows.secrets import redactor


class Auth(base.Settings):
    """How requests authenticate; the value comes from a secret, by name."""

    kind: Literal["bearer", "basic", "header", "token", "oauth2_client_credentials"]
    secret: str = pydantic.Field(
        description="Name of the secret holding the credential (the client secret for OAuth2)."
    )
    header: str = pydantic.Field(
        default="Authorization", description="For kind header: the header name."
    )
    token_url: pydantic.HttpUrl | None = pydantic.Field(
        default=None, description="OAuth2: the token endpoint."
    )
    client_id: str | None = pydantic.Field(
        default=None, description="OAuth2 client id."
    )
    scope: str | None = pydantic.Field(default=None, description="OAuth2 scope.")

    @pydantic.model_validator(mode="after")
    def _oauth2(self) -> Auth:
        wants = self.kind == "oauth2_client_credentials"
        if wants and (self.token_url is None or not self.client_id):
            raise ValueError("oauth2_client_credentials needs token_url and client_id")
        return self


class HttpSettings(base.NetworkSettings):
    base_url: pydantic.HttpUrl
    auth: Auth | None = None
    headers: dict[str, str] = pydantic.Field(default_factory=dict)


class RequestParams(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "GET"
    path: str = pydantic.Field(
        default="/", description="Relative to the connection's base_url."
    )
    json_: Any = pydantic.Field(default=None, alias="json")
    params: dict[str, Any] = pydantic.Field(default_factory=dict)
    headers: dict[str, str] = pydantic.Field(default_factory=dict)

    @pydantic.field_validator("path")
    @classmethod
    def _relative(cls, path: str) -> str:
        return relative_path(path)


def relative_path(path: str) -> str:
    """A path under the connection's base URL, or ValueError saying why not."""
    # An absolute URL, or a way up out of the base path, would carry the
    # connection's credentials to whatever the run data names.
    if "://" in path or path.lstrip().startswith("//") or "\\" in path:
        raise ValueError(
            "must be a path relative to the connection's base_url, not a URL"
        )
    segments = urllib.parse.unquote(path).split("/")
    if ".." in segments or "." in segments:
        raise ValueError("must not contain '.' or '..' segments")
    if "?" in path or "#" in path:
        raise ValueError(
            "must not carry a query or fragment: give query values in params"
        )
    return path


class Paging(pydantic.BaseModel):
    """How ``fetch_all`` finds the next page."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)
    style: Literal["offset", "cursor", "link", "next_url"]
    items: str = pydantic.Field(
        default="",
        description="Dotted path to the list of items in the body; empty: the body is the list.",
    )
    limit: int = pydantic.Field(default=100, ge=1, le=10_000)
    limit_param: str = "limit"
    offset_param: str = "offset"
    cursor_param: str = "cursor"
    cursor_field: str = pydantic.Field(
        default="next_cursor", description="Dotted path to the next cursor in the body."
    )
    next_field: str = pydantic.Field(
        default="next", description="Dotted path to the next page's URL in the body."
    )
    max_pages: int = pydantic.Field(default=100, ge=1, le=10_000)


class FetchAllParams(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    path: str = "/"
    params: dict[str, Any] = pydantic.Field(default_factory=dict)
    headers: dict[str, str] = pydantic.Field(default_factory=dict)
    paging: Paging

    @pydantic.field_validator("path")
    @classmethod
    def _relative(cls, path: str) -> str:
        return relative_path(path)


def auth_headers(auth: Auth | None, secrets: Any) -> dict[str, str]:
    """The header an auth setting produces, reading its secret now."""
    if auth is None or auth.kind == "oauth2_client_credentials":
        return {}
    value = secrets.get(auth.secret)
    if auth.kind == "bearer":
        return {"Authorization": f"Bearer {value}"}
    if auth.kind == "token":
        return {"Authorization": f"token {value}"}
    if auth.kind == "basic":
        encoded = base64.b64encode(value.encode()).decode()
        redactor.register(encoded)  # an echo of the header must not reveal it
        return {"Authorization": f"Basic {encoded}"}
    return {auth.header: value}


class HttpConnector(base.Connector):
    """Calls any REST API."""

    kind = "http"
    settings_model = HttpSettings
    actions = {
        "request": "Send one HTTP request; returns status, headers and body.",
        "fetch_all": "GET every page of a list (offset, cursor, Link header or next URL); returns items and pages.",
    }

    def __init__(self, name: str, settings: HttpSettings, secrets: Any) -> None:
        super().__init__(name, settings, secrets)
        self.client = _http.GuardedClient(
            connection=name,
            base_url=str(settings.base_url),
            headers={"Accept": "application/json", **settings.headers},
            timeout_seconds=settings.timeout_seconds,
            allow_networks=settings.allow_networks,
        )
        auth = settings.auth
        self.credentials: _oauth.ClientCredentials | None = None
        if auth is not None and auth.kind == "oauth2_client_credentials":
            self.credentials = _oauth.ClientCredentials(
                self.client,
                secrets,
                connection=name,
                issuer="the OAuth2 token endpoint",
                token_url=str(auth.token_url),
                client_id=auth.client_id or "",
                secret=auth.secret,
                scope=auth.scope or None,
                default_lifetime=300.0,
            )

    async def action_request(
        self, params: dict[str, Any], context: base.CallContext
    ) -> Any:
        p: RequestParams = base.parse_params(
            RequestParams, params, action="http.request"
        )
        headers = dict(p.headers)
        if p.method != "GET":
            headers.setdefault("Idempotency-Key", context.idempotency_key)
        response, body = await self._send(
            p.method, p.path, context, json=p.json_, params=p.params, headers=headers
        )
        return {
            "status": response.status_code,
            "headers": dict(response.headers),
            "body": body,
        }

    async def action_fetch_all(
        self, params: dict[str, Any], context: base.CallContext
    ) -> Any:
        p: FetchAllParams = base.parse_params(
            FetchAllParams, params, action="http.fetch_all"
        )
        paging = p.paging
        items: list[Any] = []
        url: str = p.path
        query: dict[str, Any] | None = {paging.limit_param: paging.limit, **p.params}
        if paging.style == "offset":
            query.setdefault(paging.offset_param, 0)
        for page in range(1, paging.max_pages + 1):
            response, body = await self._send(
                "GET",
                url,
                context,
                headers=p.headers,
                **({} if query is None else {"params": query}),
            )
            found = _at(body, paging.items)
            if not isinstance(found, list):
                raise errors.ConnectorError(
                    f"{self.name}: page {page} of {p.path} has no list at {paging.items or 'the top'}",
                    retryable=False,
                )
            items.extend(found)
            following = self._next_page(
                paging, response, body, p.path, query, len(found)
            )
            if following is None:
                return {"items": items, "pages": page}
            url, query = following
        raise errors.ConnectorError(
            f"{self.name}: {p.path} has more than {paging.max_pages} pages; raise paging.max_pages",
            retryable=False,
        )

    def _next_page(
        self,
        paging: Paging,
        response: httpx.Response,
        body: Any,
        path: str,
        query: dict[str, Any],
        count: int,
    ) -> tuple[str, dict[str, Any] | None] | None:
        """The next page's path and query (None: the URL carries its own), or
        None after the last page."""
        if paging.style == "offset":
            if count < int(query[paging.limit_param]):
                return None
            offset = int(query[paging.offset_param]) + count
            return path, {**query, paging.offset_param: offset}
        if paging.style == "cursor":
            cursor = _at(body, paging.cursor_field)
            if cursor in (None, ""):
                return None
            return path, {**query, paging.cursor_param: cursor}
        link = (
            response.links.get("next", {}).get("url")
            if paging.style == "link"
            else _at(body, paging.next_field)
        )
        if not link:
            return None
        return self._within_base(str(link)), None

    def _within_base(self, link: str) -> str:
        """A next-page URL, refused unless it stays under the base URL (credentials go with it)."""
        base_url = str(self.settings.base_url)
        absolute = urllib.parse.urljoin(base_url, link)
        if not absolute.startswith(base_url.rstrip("/") + "/") and absolute != base_url:
            raise errors.ConnectorError(
                f"{self.name}: the next page points outside {base_url}; refused",
                retryable=False,
            )
        return absolute

    async def check(self) -> str:
        """GET the base URL with the connection's auth: any answer below 500
        other than 401/403 shows the system is there and lets us in."""
        response = await self.client.request(
            "GET", "", headers=await self._auth(False), timeout_seconds=10
        )
        if response.status_code in (401, 403) or response.status_code >= 500:
            raise _http.status_error(
                f"{self.name}: {self.settings.base_url} answered {response.status_code}",
                response,
                connection=self.name,
            )
        return f"{self.settings.base_url} answered {response.status_code}"

    async def _send(
        self, method: str, url: str, context: base.CallContext, **kwargs: Any
    ) -> tuple[httpx.Response, Any]:
        """One request with the connection's auth; an OAuth2 401 fetches a new token once."""
        for fresh_token in (False, True):
            headers = {**(await self._auth(fresh_token)), **kwargs.pop("headers", {})}
            response = await self.client.request(
                method,
                url,
                headers=headers,
                timeout_seconds=context.timeout_seconds,
                **kwargs,
            )
            kwargs["headers"] = {
                k: v for k, v in headers.items() if k != "Authorization"
            }
            oauth2 = (
                self.settings.auth
                and self.settings.auth.kind == "oauth2_client_credentials"
            )
            if response.status_code != 401 or not oauth2 or fresh_token:
                break
        body = _http.response_body(response)
        if response.is_error:
            raise _http.status_error(
                f"{self.name}: {method} {url or 'next page'} answered {response.status_code}: {str(body)[:300]}",
                response,
                connection=self.name,
            )
        return response, body

    async def _auth(self, fresh: bool) -> dict[str, str]:
        if self.credentials is None:
            return auth_headers(self.settings.auth, self.secrets)
        return {"Authorization": f"Bearer {await self.credentials.token(fresh=fresh)}"}

    async def close(self) -> None:
        await self.client.close()


def _at(body: Any, path: str) -> Any:
    """The value at a dotted path of a JSON body; the body itself for an empty path."""
    node = body
    for part in [p for p in path.split(".") if p]:
        node = node.get(part) if isinstance(node, dict) else None
    return node
