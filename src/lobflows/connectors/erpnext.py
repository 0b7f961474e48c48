"""ERPNext (Frappe) through its REST API, v1 routes.

Frappe answers errors with ``exc_type`` and a double-encoded
``_server_messages`` list (see the connector contracts); both are turned
into one readable message. Documents named by a series (Employee) have no
natural key, so ``create`` can look a document up by a unique field first,
which makes a retried create safe.
"""

from __future__ import annotations

import html
import json
import re
from typing import Any
from urllib.parse import quote

import httpx
import pydantic

from lobflows import errors
from lobflows.connectors import _http, base


class ErpnextSettings(base.Settings):
    base_url: pydantic.HttpUrl
    auth_secret: str = pydantic.Field(
        description="Secret holding 'api_key:api_secret'."
    )
    timeout_seconds: float = pydantic.Field(default=30.0, gt=0)
    allow_networks: list[str] = pydantic.Field(default_factory=list)


class CreateParams(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    doctype: str = pydantic.Field(min_length=1)
    doc: dict[str, Any]
    unique_field: str | None = pydantic.Field(
        default=None, description="Look up by this field before creating."
    )


class GetParams(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    doctype: str = pydantic.Field(min_length=1)
    name: str = pydantic.Field(min_length=1)


# 409 on a retried create means the first try got through; TimestampMismatch
# means a concurrent save, worth a fresh try.
_RETRYABLE_EXC_TYPES = frozenset(
    {
        "TimestampMismatchError",
        "TooManyRequestsError",
        "SessionStopped",
        "InReadOnlyMode",
    }
)
_TAGS = re.compile(r"<[^>]+>")


class ErpnextConnector(base.Connector):
    """Reads and writes ERPNext documents."""

    kind = "erpnext"
    settings_model = ErpnextSettings
    actions = {
        "create": "Create a document (POST /api/resource/{doctype}); returns it.",
        "get": "Read one document by name.",
    }

    def __init__(self, name: str, settings: ErpnextSettings, secrets: Any) -> None:
        super().__init__(name, settings, secrets)
        self.client = _http.GuardedClient(
            connection=name,
            base_url=str(settings.base_url).rstrip("/"),
            headers={"Accept": "application/json"},
            timeout_seconds=settings.timeout_seconds,
            allow_networks=settings.allow_networks,
        )

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"token {self.secrets.get(self.settings.auth_secret)}"}

    async def action_create(
        self, params: dict[str, Any], context: base.CallContext
    ) -> Any:
        p: CreateParams = base.parse_params(
            CreateParams, params, action=f"{self.name}.create"
        )
        if p.unique_field:
            existing = await self._find(
                p.doctype, p.unique_field, p.doc.get(p.unique_field), context
            )
            if existing is not None:
                return existing
        path = f"/api/resource/{quote(p.doctype, safe='')}"
        response = await self.client.request(
            "POST",
            path,
            json=p.doc,
            headers=self._headers(),
            timeout_seconds=context.timeout_seconds,
        )
        return self._data(response, f"create {p.doctype}")

    async def action_get(
        self, params: dict[str, Any], context: base.CallContext
    ) -> Any:
        p: GetParams = base.parse_params(GetParams, params, action=f"{self.name}.get")
        path = f"/api/resource/{quote(p.doctype, safe='')}/{quote(p.name, safe='')}"
        response = await self.client.request(
            "GET",
            path,
            headers=self._headers(),
            timeout_seconds=context.timeout_seconds,
        )
        return self._data(response, f"get {p.doctype} {p.name}")

    async def _find(
        self, doctype: str, field: str, value: Any, context: base.CallContext
    ) -> Any:
        if value is None:
            raise errors.StepInputError(
                f"unique_field {field!r} has no value in the document"
            )
        query = {
            "fields": json.dumps(["*"]),
            "filters": json.dumps([[field, "=", value]]),
            "limit_page_length": 1,
        }
        response = await self.client.request(
            "GET",
            f"/api/resource/{quote(doctype, safe='')}",
            params=query,
            headers=self._headers(),
            timeout_seconds=context.timeout_seconds,
        )
        rows = self._data(response, f"look up {doctype} by {field}")
        return rows[0] if rows else None

    def _data(self, response: httpx.Response, what: str) -> Any:
        if response.is_success:
            return response.json().get("data")
        raise self._error(response, what)

    def _error(self, response: httpx.Response, what: str) -> errors.RemoteStatusError:
        body = _http.response_body(response)
        exc_type = body.get("exc_type") if isinstance(body, dict) else None
        messages = server_messages(body) if isinstance(body, dict) else []
        detail = "; ".join(messages) or (
            str(body)[:300] if body else response.reason_phrase
        )
        kind = f" {exc_type}" if exc_type else ""
        message = f"ERPNext {what} failed with {response.status_code}{kind}: {detail}"
        error = _http.status_error(message, response, connection=self.name)
        if exc_type in _RETRYABLE_EXC_TYPES:
            error.retryable = True
        error.context.update(exc_type=exc_type, server_messages=messages)
        return error

    async def close(self) -> None:
        await self.client.close()


def server_messages(body: dict[str, Any]) -> list[str]:
    """Decode Frappe's double-encoded ``_server_messages`` into plain texts."""
    raw = body.get("_server_messages")
    if not raw:
        return []
    try:
        items = json.loads(raw)
        decoded = [
            json.loads(item) if isinstance(item, str) else item for item in items
        ]
    except (TypeError, ValueError):
        return [str(raw)[:300]]
    texts = [d.get("message", "") if isinstance(d, dict) else str(d) for d in decoded]
    return [html.unescape(_TAGS.sub("", t)).strip() for t in texts if t]
