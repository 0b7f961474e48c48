"""The Frappe v1 REST routes and control routes of the stand-in."""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from lobflows.testing.erpnext.doctypes import without_nulls
from lobflows.testing.erpnext.errors import FrappeError, error_for_status
from lobflows.testing.erpnext.filters import cint, select_fields
from lobflows.testing.erpnext.state import API_USER, ErpnextState
from lobflows.testing.faults import Fault, apply_faults, fault_routes
from lobflows.testing.servers import hide_simulated_disconnects

DEFAULT_PAGE_LENGTH = 20
NO_CACHE = "no-store,no-cache,must-revalidate,max-age=0"
ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
_WRITE_METHODS = frozenset({"frappe.client.cancel"})


def _json(
    body: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    return JSONResponse(
        body, status_code=status, headers={"Cache-Control": NO_CACHE, **(headers or {})}
    )


def _loads(text: str | bytes, what: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, UnicodeDecodeError):
        raise FrappeError("ValidationError", f"Invalid JSON in {what}") from None


def _param(params: Mapping[str, str], key: str, default: Any) -> Any:
    raw = params.get(key)
    if raw is None or raw == "":
        return default
    return _loads(raw, f"parameter {key!r}")


class _Api:
    """HTTP handlers bound to one `ErpnextState`."""

    def __init__(self, state: ErpnextState, *, tracebacks: bool) -> None:
        self.state = state
        self.tracebacks = tracebacks

    async def handle(self, request: Request) -> Response:
        """Count, apply faults, then serve one request."""
        self.state.count_request(request.method, request.url.path)
        return await apply_faults(
            self.state.faults, request, lambda: self._serve(request), self._forced
        )

    def _forced(self, fault: Fault) -> Response:
        assert fault.status is not None
        headers = fault.response_headers()
        if isinstance(fault.body, str):
            return PlainTextResponse(fault.body, fault.status, headers=headers)
        body = fault.body
        if body is None:
            body = error_for_status(fault.status).body()
        return _json(body, fault.status, headers)

    async def _serve(self, request: Request) -> Response:
        path = request.url.path
        if path != "/api" and not path.startswith("/api/"):
            return PlainTextResponse("Not Found", 404)
        user: str | None = None
        try:
            user = self._authenticate(request.headers.get("authorization"))
            return await self._route(request, user)
        except FrappeError as error:
            # Frappe shows tracebacks to signed-in system users only, never on 404.
            traced = self.tracebacks and user is not None and error.status != 404
            return _json(error.body(with_traceback=traced), error.status)

    def _authenticate(self, header: str | None) -> str | None:
        parts = (header or "").split(" ")
        if len(parts) != 2:
            return None
        scheme, credentials = parts[0].lower(), parts[1]
        if scheme == "basic":
            try:
                credentials = base64.b64decode(credentials, validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                raise FrappeError(
                    "InvalidAuthorizationToken", "Invalid Authorization Token"
                ) from None
        if scheme in ("token", "basic") and self._valid_pair(credentials):
            return API_USER
        raise FrappeError("AuthenticationError", "Invalid Authentication")

    def _valid_pair(self, credentials: str) -> bool:
        key, sep, secret = credentials.partition(":")
        return bool(sep) and all(
            (
                hmac.compare_digest(key.encode(), self.state.api_key.encode()),
                hmac.compare_digest(secret.encode(), self.state.api_secret.encode()),
            )
        )

    async def _route(self, request: Request, user: str | None) -> Response:
        parts = request.url.path.rstrip("/").split("/")[2:]
        if parts[:1] == ["v1"]:
            parts = parts[1:]
        if len(parts) >= 2 and parts[0] == "resource" and parts[1]:
            return await self._resource(request, user, parts[1], "/".join(parts[2:]))
        if len(parts) == 2 and parts[0] == "method":
            return await self._method(request, user, parts[1])
        raise FrappeError("DoesNotExistError", "Page not found", title="Not Found")

    async def _resource(
        self, request: Request, user: str | None, doctype: str, name: str
    ) -> Response:
        method = request.method
        allowed = ("GET", "PUT", "DELETE") if name else ("GET", "POST")
        if method not in allowed:
            return PlainTextResponse(
                "Method Not Allowed", 405, headers={"Allow": ", ".join(allowed)}
            )
        if user is None:
            raise FrappeError("PermissionError", "Not permitted", title="Not Permitted")
        if not name:
            if method == "GET":
                return _json({"data": self._list(doctype, request.query_params)})
            doc = self.state.insert(doctype, await _read_doc(request))
            return _json({"data": without_nulls(doc)})
        if method == "GET":
            return _json({"data": without_nulls(self.state.get(doctype, name))})
        if method == "PUT":
            doc = self.state.update(doctype, name, await _read_doc(request))
            return _json({"data": without_nulls(doc)})
        self.state.delete(doctype, name)
        return _json({"data": "ok"}, 202)

    def _list(self, doctype: str, params: Mapping[str, str]) -> list[Any]:
        docs = self.state.query(
            doctype,
            filters=_param(params, "filters", None),
            or_filters=_param(params, "or_filters", None),
            order_by=params.get("order_by") or "modified desc",
        )
        columns = self.state.columns(doctype)
        projection = select_fields(_param(params, "fields", ["name"]), columns)
        start = max(cint(params.get("limit_start"), 0), 0)
        length = params.get("limit_page_length", params.get("limit"))
        page_length = cint(length, DEFAULT_PAGE_LENGTH)
        page = docs[start : start + page_length] if page_length > 0 else docs[start:]
        as_dict = str(params.get("as_dict", "1")).lower() not in ("0", "false")
        if as_dict:
            return [{alias: d.get(src) for src, alias in projection} for d in page]
        return [[d.get(src) for src, _ in projection] for d in page]

    async def _method(
        self, request: Request, user: str | None, dotted: str
    ) -> Response:
        if dotted in ("ping", "frappe.ping"):
            return _json({"message": "pong"})
        handler = {
            "frappe.auth.get_logged_user": self._logged_user,
            "frappe.client.get_count": self._get_count,
            "frappe.client.get_list": self._get_list,
            "frappe.client.cancel": self._cancel,
        }.get(dotted)
        if handler is None:
            raise FrappeError(
                "ValidationError", f"Failed to get method for command {dotted}"
            )
        # Frappe whitelists its write methods for POST and PUT only.
        refused = dotted in _WRITE_METHODS and request.method not in ("POST", "PUT")
        if user is None or refused:
            raise FrappeError("PermissionError", "Not permitted", title="Not Permitted")
        params = dict(request.query_params)
        if request.method in ("POST", "PUT"):
            params.update(await _read_args(request))
        return _json({"message": handler(params)})

    def _logged_user(self, params: Mapping[str, str]) -> Any:
        return API_USER

    def _get_count(self, params: Mapping[str, str]) -> Any:
        doctype = _required_arg(params, "doctype")
        return len(self.state.query(doctype, filters=_param(params, "filters", None)))

    def _get_list(self, params: Mapping[str, str]) -> Any:
        return self._list(_required_arg(params, "doctype"), params)

    def _cancel(self, params: Mapping[str, str]) -> Any:
        doctype = _required_arg(params, "doctype")
        # Methods answer with the document as a dict, nulls included.
        return self.state.cancel(doctype, _required_arg(params, "name"))


def _required_arg(params: Mapping[str, str], key: str) -> str:
    value = params.get(key)
    if not value:
        raise FrappeError("ValidationError", f"Missing argument: {key}")
    return value


async def _read_args(request: Request) -> dict[str, str]:
    raw = await request.body()
    if request.headers.get("content-type", "").startswith("application/json"):
        parsed = _loads(raw, "request body") if raw.strip() else {}
        if not isinstance(parsed, dict):
            raise FrappeError("ValidationError", "Request body must be a JSON object")
        return {
            k: v if isinstance(v, str) else json.dumps(v) for k, v in parsed.items()
        }
    return dict(parse_qsl(raw.decode("utf-8", "replace")))


async def _read_doc(request: Request) -> dict[str, Any]:
    """Read a document from a JSON body or from a form field `data`."""
    raw = await request.body()
    content_type = request.headers.get("content-type", "")
    parsed: Any
    if content_type.startswith("application/x-www-form-urlencoded"):
        form = dict(parse_qsl(raw.decode("utf-8", "replace")))
        parsed = _loads(form["data"], "field 'data'") if "data" in form else form
    else:
        parsed = _loads(raw, "request body") if raw.strip() else {}
        if isinstance(parsed, dict) and "data" in parsed:
            inner = parsed["data"]
            parsed = _loads(inner, "field 'data'") if isinstance(inner, str) else inner
    if not isinstance(parsed, dict):
        raise FrappeError("ValidationError", "Document data must be a JSON object")
    return parsed


def _control_routes(state: ErpnextState) -> list[Route]:
    async def stats(request: Request) -> Response:
        return JSONResponse(state.stats())

    async def docs(request: Request) -> Response:
        doctype = request.path_params["doctype"]
        with state.lock:
            found = state.docs.get(doctype)
            listed = None if found is None else [dict(d) for d in found.values()]
        if listed is None:
            return JSONResponse({"error": f"unknown doctype {doctype}"}, 404)
        return JSONResponse(listed)

    async def reset(request: Request) -> Response:
        state.reset()
        return JSONResponse({"ok": True})

    return [
        *fault_routes(state.faults),
        Route("/__standin__/stats", stats, methods=["GET"]),
        Route("/__standin__/docs/{doctype:path}", docs, methods=["GET"]),
        Route("/__standin__/reset", reset, methods=["POST"]),
    ]


def create_erpnext_app(
    *, api_key: str, api_secret: str, tracebacks: bool = False
) -> Starlette:
    """Build a stateful Frappe v1 REST stand-in accepting one API key pair.

    Control endpoints (no auth): ``POST /__standin__/faults`` and
    ``POST /__standin__/drop`` queue faults, ``GET /__standin__/stats``,
    ``GET /__standin__/docs/{doctype}`` and ``POST /__standin__/reset``.
    A fault's ``match`` is ``"[METHOD] /path-glob"``; without it the fault
    applies to any ``/api`` request. The state is on ``app.state.erpnext``.
    With `tracebacks`, errors also carry ``exception`` and ``exc`` as on a site
    that allows error tracebacks.
    """
    hide_simulated_disconnects()
    state = ErpnextState(api_key=api_key, api_secret=api_secret)
    api = _Api(state, tracebacks=tracebacks)
    routes = [
        *_control_routes(state),
        Route("/{path:path}", api.handle, methods=ALL_METHODS),
    ]
    app = Starlette(routes=routes)
    app.router.redirect_slashes = False
    app.state.erpnext = state
    return app
