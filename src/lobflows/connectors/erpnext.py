"""ERPNext (Frappe) through its REST API, v1 routes.

Frappe answers errors with ``exc_type`` and a double-encoded
``_server_messages`` list (see the connector contracts); both are turned
into one readable message. Documents named by a series (Employee) have no
natural key, so ``create`` can look a document up by a unique field first,
which makes a retried create safe.

Submittable documents (orders, invoices, payments) move from draft
(``docstatus`` 0) to submitted (1) to cancelled (2). A retried ``submit`` or
``delete`` is safe: Frappe accepts a repeated submit as an update that
changes nothing, and ``delete`` counts a document already gone as deleted.
A repeated ``cancel`` is refused by Frappe ("Cannot edit cancelled
document") and fails for good.
"""

from __future__ import annotations

import html
import json
import logging
import re
from typing import Annotated, Any, Literal
from urllib.parse import quote

import httpx
import pydantic

from lobflows import errors
from lobflows.connectors import _http, base

logger = logging.getLogger(__name__)


class ErpnextSettings(base.NetworkSettings):
    base_url: pydantic.HttpUrl
    auth_secret: str = pydantic.Field(
        description="Secret holding 'api_key:api_secret'."
    )


MAX_PAGE_LENGTH = 1000


class _Params(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)


class CreateParams(_Params):
    doctype: str = pydantic.Field(min_length=1)
    doc: dict[str, Any]
    unique_field: str | None = pydantic.Field(
        default=None, description="Look up by this field before creating."
    )


class DocumentParams(_Params):
    """Names one document: its doc type and name."""

    doctype: str = pydantic.Field(min_length=1, description="e.g. 'Purchase Order'.")
    name: str = pydantic.Field(min_length=1, description="e.g. 'PUR-ORD-2025-00001'.")


class GetParams(DocumentParams):
    """Parameters of ``get``."""


class UpdateParams(DocumentParams):
    """Parameters of ``update``."""

    doc: dict[str, Any] = pydantic.Field(
        min_length=1,
        description="Fields to change; the others keep their values. A child "
        "table sent replaces the stored one.",
    )


# [field, operator, value], or [doctype, field, operator, value] for a
# child table column.
Filter = Annotated[list[Any], pydantic.Field(min_length=3, max_length=4)]


class MethodParams(_Params):
    """Parameters of ``call_method``."""

    method: str = pydantic.Field(
        pattern=r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)+$",
        description="Dotted path of a whitelisted method, e.g. frappe.client.get_count.",
    )
    args: dict[str, Any] = pydantic.Field(default_factory=dict)
    http_method: Literal["GET", "POST"] = pydantic.Field(
        default="POST", description="GET for read-only methods; POST for the rest."
    )


class ListParams(_Params):
    """Parameters of ``list``."""

    doctype: str = pydantic.Field(min_length=1)
    filters: list[Filter] | dict[str, Any] | None = pydantic.Field(
        default=None,
        description="AND conditions: a list of [field, operator, value] or a "
        "mapping of field to value (or to [operator, value]).",
    )
    or_filters: list[Filter] | dict[str, Any] | None = pydantic.Field(
        default=None, description="OR conditions, in the same forms as filters."
    )
    fields: list[str] = pydantic.Field(
        default_factory=lambda: ["name"],
        min_length=1,
        description="Columns to return; ['*'] is every column. Default ['name'].",
    )
    order_by: str | None = pydantic.Field(
        default=None,
        description="e.g. 'creation asc, name asc'; default is the doc type's sort.",
    )
    limit: int = pydantic.Field(
        default=20, ge=1, le=MAX_PAGE_LENGTH, description="Rows in this page."
    )
    limit_start: int = pydantic.Field(
        default=0, ge=0, description="Rows to skip: the offset of this page."
    )


class SubmitParams(DocumentParams):
    """Parameters of ``submit``."""


class CancelParams(DocumentParams):
    """Parameters of ``cancel``."""


class DeleteParams(DocumentParams):
    """Parameters of ``delete``."""


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
        "update": "Change some fields of a document (PUT); returns it.",
        "call_method": "Call a whitelisted method (POST, or GET for reads); returns its message.",
        "list": "List documents matching filters, one page at a time; returns rows.",
        "submit": "Submit a draft (docstatus 0 to 1); returns it. An already "
        "submitted document is returned as it is.",
        "cancel": "Cancel a submitted document (docstatus 1 to 2); returns it.",
        "delete": "Delete a document; one already gone counts as deleted.",
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
        response = await self._send("POST", _list_path(p.doctype), context, json=p.doc)
        return self._data(response, f"create {p.doctype}")

    async def action_get(
        self, params: dict[str, Any], context: base.CallContext
    ) -> Any:
        p: GetParams = base.parse_params(GetParams, params, action=f"{self.name}.get")
        response = await self._send("GET", _doc_path(p.doctype, p.name), context)
        return self._data(response, f"get {p.doctype} {p.name}")

    async def action_update(
        self, params: dict[str, Any], context: base.CallContext
    ) -> Any:
        p: UpdateParams = base.parse_params(
            UpdateParams, params, action=f"{self.name}.update"
        )
        path = _doc_path(p.doctype, p.name)
        response = await self._send("PUT", path, context, json=p.doc)
        return self._data(response, f"update {p.doctype} {p.name}")

    async def action_list(
        self, params: dict[str, Any], context: base.CallContext
    ) -> Any:
        p: ListParams = base.parse_params(
            ListParams, params, action=f"{self.name}.list"
        )
        # List parameters travel as JSON text in the query string.
        query: dict[str, Any] = {
            "fields": json.dumps(p.fields),
            "limit_start": p.limit_start,
            "limit_page_length": p.limit,
        }
        if p.filters:
            query["filters"] = json.dumps(p.filters)
        if p.or_filters:
            query["or_filters"] = json.dumps(p.or_filters)
        if p.order_by:
            query["order_by"] = p.order_by
        response = await self._send("GET", _list_path(p.doctype), context, params=query)
        return self._data(response, f"list {p.doctype}")

    async def action_call_method(
        self, params: dict[str, Any], context: base.CallContext
    ) -> Any:
        p: MethodParams = base.parse_params(
            MethodParams, params, action=f"{self.name}.call_method"
        )
        path = f"/api/method/{p.method}"
        if p.http_method == "GET":
            query = {
                k: v if isinstance(v, str) else json.dumps(v) for k, v in p.args.items()
            }
            response = await self._send("GET", path, context, params=query)
        else:
            response = await self._send("POST", path, context, json=p.args)
        if response.is_success:
            return response.json().get("message")
        raise self._error(response, f"call {p.method}")

    async def action_submit(
        self, params: dict[str, Any], context: base.CallContext
    ) -> Any:
        p: SubmitParams = base.parse_params(
            SubmitParams, params, action=f"{self.name}.submit"
        )
        # Setting docstatus through PUT submits without sending the whole
        # document, which frappe.client.submit would need (it saves what it
        # is given). Frappe treats a repeat as an update after submit that
        # changes nothing, so a retried submit returns the submitted document.
        path = _doc_path(p.doctype, p.name)
        response = await self._send("PUT", path, context, json={"docstatus": 1})
        doc = self._data(response, f"submit {p.doctype} {p.name}")
        if not isinstance(doc, dict) or doc.get("docstatus") != 1:
            found = doc.get("docstatus") if isinstance(doc, dict) else doc
            raise errors.StepInputError(
                f"ERPNext did not submit {p.doctype} {p.name}: it answered with "
                f"docstatus {found!r}, expected 1; is {p.doctype} a submittable "
                "doc type?"
            )
        return doc

    async def action_cancel(
        self, params: dict[str, Any], context: base.CallContext
    ) -> Any:
        p: CancelParams = base.parse_params(
            CancelParams, params, action=f"{self.name}.cancel"
        )
        response = await self._send(
            "POST",
            "/api/method/frappe.client.cancel",
            context,
            json={"doctype": p.doctype, "name": p.name},
        )
        doc = self._data(response, f"cancel {p.doctype} {p.name}", key="message")
        # Methods return the document with its nulls; resources omit them.
        return _without_nulls(doc)

    async def action_delete(
        self, params: dict[str, Any], context: base.CallContext
    ) -> Any:
        p: DeleteParams = base.parse_params(
            DeleteParams, params, action=f"{self.name}.delete"
        )
        what = f"delete {p.doctype} {p.name}"
        response = await self._send("DELETE", _doc_path(p.doctype, p.name), context)
        target = {"doctype": p.doctype, "name": p.name}
        if response.is_success:
            return {**target, "deleted": True}
        # A retried undo finds the document gone; a misspelt doc type is 404
        # too, so the doc type is checked before calling that a success.
        if response.status_code == 404 and await self._doctype_exists(
            p.doctype, context
        ):
            logger.debug("ERPNext %s: already gone", what)
            return {**target, "deleted": False}
        raise self._error(response, what)

    async def check(self) -> str:
        """An authenticated read: the user the API key logs in as."""
        context = base.check_context(self.settings.timeout_seconds)
        method = "frappe.auth.get_logged_user"
        response = await self._send("GET", f"/api/method/{method}", context)
        if not response.is_success:
            raise self._error(response, f"check ({method})")
        body = _http.response_body(response)
        user = body.get("message") if isinstance(body, dict) else None
        if not isinstance(user, str) or not user:
            raise errors.ConnectorError(
                f"{self.name}: {method} answered without a user; "
                f"is {self.settings.base_url} a Frappe site?",
                retryable=False,
                connection=self.name,
            )
        return f"logged in to {self.settings.base_url} as {user}"

    async def _send(
        self,
        method: str,
        path: str,
        context: base.CallContext,
        **kwargs: Any,
    ) -> httpx.Response:
        return await self.client.request(
            method,
            path,
            headers=self._headers(),
            timeout_seconds=context.timeout_seconds,
            **kwargs,
        )

    async def _doctype_exists(self, doctype: str, context: base.CallContext) -> bool:
        """Tell whether the site knows `doctype`, by listing one of its names."""
        query = {"limit_page_length": 1}
        response = await self._send("GET", _list_path(doctype), context, params=query)
        if response.status_code == 404:
            return False
        self._data(response, f"list {doctype}")
        return True

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
        response = await self._send("GET", _list_path(doctype), context, params=query)
        rows = self._data(response, f"look up {doctype} by {field}")
        return rows[0] if rows else None

    def _data(self, response: httpx.Response, what: str, key: str = "data") -> Any:
        if response.is_success:
            return response.json().get(key)
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


def _list_path(doctype: str) -> str:
    return f"/api/resource/{quote(doctype, safe='')}"


def _doc_path(doctype: str, name: str) -> str:
    return f"{_list_path(doctype)}/{quote(name, safe='')}"


def _without_nulls(doc: Any) -> Any:
    if isinstance(doc, dict):
        return {k: _without_nulls(v) for k, v in doc.items() if v is not None}
    if isinstance(doc, list):
        return [_without_nulls(item) for item in doc]
    return doc


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
