"""Microsoft Graph v1.0: Entra users, group membership, Exchange mail.

Auth is the app-only OAuth2 client-credentials flow with the
``https://graph.microsoft.com/.default`` scope; the token is reused until
shortly before ``expires_in`` runs out and fetched again once on a 401.
Errors arrive as ``{"error": {"code", "message"}}``; 429, 503 and 504 carry
``Retry-After`` and are retryable. See the Graph section of the connector
contracts.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

import httpx
import pydantic

from lobflows import errors
from lobflows.connectors import _http, _oauth, base, http

DEFAULT_SCOPE = "https://graph.microsoft.com/.default"
# Graph answers a membership that already exists with this 400; a retried
# add must count it as done.
_ALREADY_MEMBER = "added object references already exist"
_DUPLICATE_UPN = "same value for property userPrincipalName"
# 409 Directory_ConcurrencyViolation clears when repeated after a delay.
_RETRYABLE_CODES = frozenset({"Directory_ConcurrencyViolation"})


class MsGraphSettings(base.NetworkSettings):
    base_url: pydantic.HttpUrl = pydantic.Field(
        default=pydantic.HttpUrl("https://graph.microsoft.com/v1.0"),
        description="Graph root with its version.",
    )
    token_url: pydantic.HttpUrl = pydantic.Field(
        description="e.g. https://login.microsoftonline.com/<tenant>/oauth2/v2.0/token"
    )
    client_id: str = pydantic.Field(min_length=1, description="Application id.")
    secret: str = pydantic.Field(
        description="Name of the secret holding the client secret."
    )
    scope: str = DEFAULT_SCOPE


class _Params(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)


class CreateUserParams(_Params):
    display_name: str = pydantic.Field(min_length=1)
    mail_nickname: str = pydantic.Field(min_length=1)
    user_principal_name: str = pydantic.Field(
        min_length=3, pattern=r"^[^@\s]+@[^@\s]+$"
    )
    password: str = pydantic.Field(min_length=1, description="The first password.")
    force_change_password: bool = True
    account_enabled: bool = True
    properties: dict[str, Any] = pydantic.Field(
        default_factory=dict,
        description="Further Graph user properties, e.g. givenName, jobTitle.",
    )


class AddToGroupParams(_Params):
    group_id: str = pydantic.Field(min_length=1, pattern=r"^[\w-]+$")
    user_id: str = pydantic.Field(min_length=1, pattern=r"^[\w-]+$")


class SendMailParams(_Params):
    from_user: str = pydantic.Field(min_length=1, description="Sender id or UPN.")
    to: list[str] = pydantic.Field(min_length=1)
    cc: list[str] = pydantic.Field(default_factory=list)
    subject: str
    text: str | None = None
    html: str | None = None
    save_to_sent_items: bool = False

    @pydantic.field_validator("to", "cc", mode="before")
    @classmethod
    def _listed(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @pydantic.model_validator(mode="after")
    def _one_body(self) -> SendMailParams:
        if (self.text is None) == (self.html is None):
            raise ValueError("give exactly one of text and html")
        return self


class ListParams(_Params):
    path: str = pydantic.Field(description="Relative to base_url, e.g. /users.")
    params: dict[str, Any] = pydantic.Field(
        default_factory=dict, description="e.g. {'$select': 'id,displayName'}."
    )
    max_pages: int = pydantic.Field(default=100, ge=1, le=10_000)

    @pydantic.field_validator("path")
    @classmethod
    def _relative(cls, path: str) -> str:
        return http.relative_path(path)


class MsGraphConnector(base.Connector):
    """Manages Entra users and groups and sends mail through Microsoft Graph."""

    kind = "msgraph"
    settings_model = MsGraphSettings
    actions = {
        "create_user": "Create a user; one already there with that UPN is "
        "returned with created false.",
        "add_to_group": "Add a user to a group; an existing membership counts as added.",
        "send_mail": "Send a mail from a user's mailbox (accepted for delivery).",
        "list": "GET every page of a collection, following @odata.nextLink; returns items and pages.",
    }

    def __init__(self, name: str, settings: MsGraphSettings, secrets: Any) -> None:
        super().__init__(name, settings, secrets)
        self._base_url = str(settings.base_url).rstrip("/")
        self.client = _http.GuardedClient(
            connection=name,
            base_url=self._base_url,
            headers={"Accept": "application/json"},
            timeout_seconds=settings.timeout_seconds,
            allow_networks=settings.allow_networks,
        )
        self.credentials = _oauth.ClientCredentials(
            self.client,
            secrets,
            connection=name,
            issuer="the Entra token endpoint",
            token_url=str(settings.token_url),
            client_id=settings.client_id,
            secret=settings.secret,
            scope=settings.scope,
            default_lifetime=300.0,
        )

    async def action_create_user(
        self, params: dict[str, Any], context: base.CallContext
    ) -> Any:
        p: CreateUserParams = base.parse_params(
            CreateUserParams, params, action=f"{self.name}.create_user"
        )
        user = {
            **p.properties,
            "accountEnabled": p.account_enabled,
            "displayName": p.display_name,
            "mailNickname": p.mail_nickname,
            "userPrincipalName": p.user_principal_name,
            "passwordProfile": {
                "password": p.password,
                "forceChangePasswordNextSignIn": p.force_change_password,
            },
        }
        response = await self._send("POST", "/users", context, json=user)
        if response.is_success:
            return {**response.json(), "created": True}
        # POST /users is not idempotent: a retry after an ambiguous failure
        # meets the user the first try made, so look it up and go on.
        if response.status_code == 400 and _DUPLICATE_UPN in response.text:
            upn = urllib.parse.quote(p.user_principal_name, safe="@")
            found = await self._send("GET", f"/users/{upn}", context)
            if found.is_success:
                return {**found.json(), "created": False}
        raise self._error(response, "create user")

    async def action_add_to_group(
        self, params: dict[str, Any], context: base.CallContext
    ) -> Any:
        p: AddToGroupParams = base.parse_params(
            AddToGroupParams, params, action=f"{self.name}.add_to_group"
        )
        reference = {"@odata.id": f"{self._base_url}/directoryObjects/{p.user_id}"}
        path = f"/groups/{p.group_id}/members/$ref"
        response = await self._send("POST", path, context, json=reference)
        result = {"group_id": p.group_id, "user_id": p.user_id}
        if response.is_success:
            return {**result, "added": True}
        if response.status_code == 400 and _ALREADY_MEMBER in response.text:
            return {**result, "added": False}
        raise self._error(response, f"add to group {p.group_id}")

    async def action_send_mail(
        self, params: dict[str, Any], context: base.CallContext
    ) -> Any:
        p: SendMailParams = base.parse_params(
            SendMailParams, params, action=f"{self.name}.send_mail"
        )
        body = {"contentType": "Text", "content": p.text}
        if p.html is not None:
            body = {"contentType": "HTML", "content": p.html}
        message = {
            "subject": p.subject,
            "body": body,
            "toRecipients": _recipients(p.to),
            "ccRecipients": _recipients(p.cc),
        }
        payload = {"message": message, "saveToSentItems": p.save_to_sent_items}
        sender = urllib.parse.quote(p.from_user, safe="@")
        # sendMail has no de-duplication key: a retry after a timeout may send twice.
        response = await self._send(
            "POST", f"/users/{sender}/sendMail", context, json=payload
        )
        if not response.is_success:
            raise self._error(response, f"send mail from {p.from_user}")
        return {"accepted": True}

    async def action_list(
        self, params: dict[str, Any], context: base.CallContext
    ) -> Any:
        p: ListParams = base.parse_params(
            ListParams, params, action=f"{self.name}.list"
        )
        items: list[Any] = []
        url = p.path
        query: dict[str, Any] | None = dict(p.params)
        for page in range(1, p.max_pages + 1):
            response = await self._send("GET", url, context, params=query)
            if not response.is_success:
                raise self._error(response, f"list {p.path}")
            body = response.json()
            items.extend(body.get("value") or [])
            link = body.get("@odata.nextLink")
            if not link:
                return {"items": items, "pages": page}
            # Followed verbatim: it keeps the other query options.
            url, query = self._within_base(str(link)), None
        raise errors.ConnectorError(
            f"{self.name}: {p.path} has more than {p.max_pages} pages; raise max_pages",
            retryable=False,
            connection=self.name,
        )

    async def check(self) -> str:
        """A fresh token, then one user id (``GET /users?$top=1``); the app
        needs User.Read.All, as the ``list`` of users does."""
        context = base.check_context(self.settings.timeout_seconds)
        await self.credentials.token(fresh=True)
        query = {"$top": "1", "$select": "id"}
        response = await self._send("GET", "/users", context, params=query)
        if not response.is_success:
            raise self._error(response, "check (GET /users)")
        return f"token obtained; GET /users answered {response.status_code}"

    def _within_base(self, link: str) -> str:
        """A next-page URL, refused unless it stays under base_url (the token goes with it)."""
        absolute = urllib.parse.urljoin(self._base_url + "/", link)
        if not absolute.startswith(self._base_url + "/"):
            raise errors.ConnectorError(
                f"{self.name}: the next page points outside {self._base_url}; refused",
                retryable=False,
                connection=self.name,
            )
        return absolute

    async def _send(
        self, method: str, url: str, context: base.CallContext, **kwargs: Any
    ) -> httpx.Response:
        """One call with the app token; a 401 fetches a new token once."""
        for fresh_token in (False, True):
            headers = {
                "Authorization": f"Bearer {await self.credentials.token(fresh=fresh_token)}"
            }
            response = await self.client.request(
                method,
                url,
                headers=headers,
                timeout_seconds=context.timeout_seconds,
                **kwargs,
            )
            if response.status_code != 401 or fresh_token:
                break
        return response

    def _error(self, response: httpx.Response, what: str) -> errors.RemoteStatusError:
        body = _http.response_body(response)
        error = body.get("error") if isinstance(body, dict) else None
        error = error if isinstance(error, dict) else {}
        code = error.get("code")
        detail = error.get("message") or str(body)[:300] or response.reason_phrase
        kind = f" {code}" if code else ""
        message = f"Graph {what} failed with {response.status_code}{kind}: {detail}"
        failure = _http.status_error(message, response, connection=self.name)
        if code in _RETRYABLE_CODES:
            failure.retryable = True
        inner = error.get("innerError")
        request_id = inner.get("request-id") if isinstance(inner, dict) else None
        failure.context.update(error_code=code, request_id=request_id)
        return failure

    async def close(self) -> None:
        await self.client.close()


def _recipients(addresses: list[str]) -> list[dict[str, Any]]:
    return [{"emailAddress": {"address": a}} for a in addresses]
