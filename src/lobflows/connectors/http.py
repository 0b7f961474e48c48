"""Generic REST calls over HTTP, with auth from a named secret."""

from __future__ import annotations

import base64
import urllib.parse
from typing import Any, Literal

import pydantic

from lobflows.connectors import _http, base
from lobflows.secrets import redactor


class Auth(base.Settings):
    """How requests authenticate; the value comes from a secret, by name."""

    kind: Literal["bearer", "basic", "header", "token"]
    secret: str = pydantic.Field(
        description="Name of the secret holding the credential."
    )
    header: str = pydantic.Field(
        default="Authorization", description="For kind header: the header name."
    )


class HttpSettings(base.Settings):
    base_url: pydantic.HttpUrl
    auth: Auth | None = None
    headers: dict[str, str] = pydantic.Field(default_factory=dict)
    timeout_seconds: float = pydantic.Field(default=30.0, gt=0)
    allow_networks: list[str] = pydantic.Field(
        default_factory=list, description="CIDRs exempt from the address guard."
    )


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


def auth_headers(auth: Auth | None, secrets: Any) -> dict[str, str]:
    """The header an auth setting produces, reading its secret now."""
    if auth is None:
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
    actions = {"request": "Send one HTTP request; returns status, headers and body."}

    def __init__(self, name: str, settings: HttpSettings, secrets: Any) -> None:
        super().__init__(name, settings, secrets)
        self.client = _http.GuardedClient(
            connection=name,
            base_url=str(settings.base_url),
            headers={"Accept": "application/json", **settings.headers},
            timeout_seconds=settings.timeout_seconds,
            allow_networks=settings.allow_networks,
        )

    async def action_request(
        self, params: dict[str, Any], context: base.CallContext
    ) -> Any:
        p: RequestParams = base.parse_params(
            RequestParams, params, action="http.request"
        )
        headers = {**auth_headers(self.settings.auth, self.secrets), **p.headers}
        if p.method != "GET":
            headers.setdefault("Idempotency-Key", context.idempotency_key)
        response = await self.client.request(
            p.method,
            p.path,
            json=p.json_,
            params=p.params,
            headers=headers,
            timeout_seconds=context.timeout_seconds,
        )
        body = _http.response_body(response)
        if response.is_error:
            raise _http.status_error(
                f"{self.name}: {p.method} {p.path} answered {response.status_code}: {str(body)[:300]}",
                response,
                connection=self.name,
            )
        return {
            "status": response.status_code,
            "headers": dict(response.headers),
            "body": body,
        }

    async def close(self) -> None:
        await self.client.close()
