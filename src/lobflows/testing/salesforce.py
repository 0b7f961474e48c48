"""In-memory stand-in for the Salesforce REST API: records, SOQL, composite.

Speaks what the connector contracts describe: the client-credentials token
endpoint (``POST /services/oauth2/token``, no ``expires_in``), sObject create,
read, update and external-ID upsert under ``/services/data/vNN.N/``, a tiny
SOQL subset (``SELECT f, g FROM Obj [WHERE f = 'v'] [LIMIT n]``) paged with
``nextRecordsUrl`` at a small batch size, ``/composite/sobjects`` collections,
``/composite`` with ``allOrNone`` rollback, and ``/limits`` (the daily API
allowance only). Errors are JSON arrays of
``{"errorCode", "message", "fields"}``.

Control endpoints live under ``/__standin__/`` and need no authentication;
see `create_salesforce_app`.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from lobflows.testing.faults import Fault, FaultQueue, apply_faults, fault_routes, under
from lobflows.testing.oauth import IssuedTokens, client_credentials_problem
from lobflows.testing.servers import hide_simulated_disconnects

__all__ = ["SalesforceError", "SalesforceState", "create_salesforce_app"]

DEFAULT_BATCH_SIZE = 3
# Fields each seeded sObject knows, with the required ones and the external-ID
# (unique) ones; Id is implicit.
SCHEMA: dict[str, dict[str, Any]] = {
    "Account": {
        "prefix": "001",
        "fields": {"Name", "Phone", "Industry", "External_Id__c"},
        "required": {"Name"},
        "external_ids": {"External_Id__c"},
    },
    "Contact": {
        "prefix": "003",
        "fields": {"FirstName", "LastName", "Email", "AccountId", "External_Id__c"},
        "required": {"LastName"},
        "external_ids": {"External_Id__c"},
    },
}
_DEFAULT_ERRORS: dict[int, tuple[str, str]] = {
    400: ("INVALID_FIELD", "Bad request"),
    403: ("REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded."),
    404: ("NOT_FOUND", "The requested resource does not exist"),
    429: ("REQUEST_LIMIT_EXCEEDED", "ConcurrentPerOrgLongTxn Limit exceeded."),
    500: ("UNKNOWN_EXCEPTION", "An unexpected error occurred."),
    503: ("SERVER_UNAVAILABLE", "Server temporarily unavailable."),
}
_SOQL = re.compile(
    r"^\s*SELECT\s+(?P<fields>.+?)\s+FROM\s+(?P<sobject>\w+)"
    r"(?:\s+WHERE\s+(?P<field>\w+)\s*=\s*'(?P<value>(?:[^'\\]|\\.)*)')?"
    r"(?:\s+LIMIT\s+(?P<limit>\d+))?\s*$",
    re.IGNORECASE,
)
_VERSION = re.compile(r"^v\d+\.\d+$")
# The org's rolling 24-hour API allowance, as /limits and Sforce-Limit-Info report it.
DAILY_API_REQUESTS = 15000


class SalesforceError(Exception):
    """An error answer: HTTP status and one Salesforce error entry."""

    def __init__(
        self, status: int, code: str, message: str, fields: list[str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields or []

    def entry(self) -> dict[str, Any]:
        """Return the error as an item of a REST error array."""
        return {"message": self.message, "errorCode": self.code, "fields": self.fields}

    def collection_entry(self) -> dict[str, Any]:
        """Return the error as sObject Collections reports it (``statusCode``)."""
        return {
            "statusCode": self.code,
            "message": self.message,
            "fields": self.fields,
        }


@dataclass
class _Cursor:
    records: list[dict[str, Any]]
    version: str


class SalesforceState(IssuedTokens):
    """Records, issued tokens, query cursors, faults and counters of one org."""

    token_prefix = "00D"

    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.batch_size = batch_size
        self.lock = threading.RLock()
        self.faults = FaultQueue(under("/services/data"))
        self.reset()

    def reset(self) -> None:
        """Forget records, tokens, cursors, faults and counters."""
        with self.lock:
            self.records: dict[str, dict[str, dict[str, Any]]] = {
                name: {} for name in SCHEMA
            }
            self.forget_tokens()
            self.cursors: dict[str, _Cursor] = {}
            self.api_usage = 0
            self._ids = itertools.count(1)
        self.faults.clear()

    def stats(self) -> dict[str, Any]:
        """Return JSON-ready counters."""
        with self.lock:
            return {
                "requests": dict(self.requests),
                "tokens_issued": self.tokens_issued,
                "records": {k: len(v) for k, v in self.records.items()},
                "faults": self.faults.describe(),
            }

    # ---------------------------------------------------------------- records

    def create(self, sobject: str, fields: dict[str, Any]) -> str:
        """Insert a record after validation; return its 18-character id."""
        schema = _schema(sobject)
        _check_fields(sobject, fields)
        missing = sorted(schema["required"] - {k for k, v in fields.items() if v})
        if missing:
            raise SalesforceError(
                400,
                "REQUIRED_FIELD_MISSING",
                f"Required fields are missing: [{', '.join(missing)}]",
                missing,
            )
        with self.lock:
            self._check_unique(sobject, fields, None)
            record_id = f"{schema['prefix']}{next(self._ids):012d}AAA"
            self.records[sobject][record_id] = {"Id": record_id, **fields}
        return record_id

    def update(self, sobject: str, record_id: str, fields: dict[str, Any]) -> None:
        """Change some fields of a record."""
        _check_fields(sobject, fields)
        with self.lock:
            record = self.get(sobject, record_id)
            self._check_unique(sobject, fields, record_id)
            required = _schema(sobject)["required"]
            cleared = sorted(k for k in required if k in fields and not fields[k])
            if cleared:
                raise SalesforceError(
                    400,
                    "REQUIRED_FIELD_MISSING",
                    f"Required fields are missing: [{', '.join(cleared)}]",
                    cleared,
                )
            record.update(fields)

    def upsert(
        self, sobject: str, field: str, value: str, fields: dict[str, Any]
    ) -> tuple[str, bool]:
        """Create or update by an external-ID field; return the id and whether it was created."""
        if field not in _schema(sobject)["external_ids"]:
            raise SalesforceError(
                404,
                "NOT_FOUND",
                f"Provided external ID field does not exist or is not accessible: {field}",
            )
        if field in fields and fields[field] != value:
            raise SalesforceError(
                400,
                "INVALID_FIELD",
                f"The field {field} in the body does not match the URL value",
                [field],
            )
        with self.lock:
            matches = [
                r["Id"]
                for r in self.records[sobject].values()
                if str(r.get(field)) == value
            ]
            if len(matches) > 1:
                raise SalesforceError(
                    300, "MULTIPLE_CHOICES", f"{field} {value} matches many records"
                )
            if matches:
                self.update(sobject, matches[0], fields)
                return matches[0], False
            return self.create(sobject, {**fields, field: value}), True

    def get(self, sobject: str, record_id: str) -> dict[str, Any]:
        _schema(sobject)
        with self.lock:
            record = self.records[sobject].get(record_id)
        if record is None:
            raise SalesforceError(
                404, "NOT_FOUND", "The requested resource does not exist"
            )
        return record

    def _check_unique(
        self, sobject: str, fields: dict[str, Any], own_id: str | None
    ) -> None:
        for field in _schema(sobject)["external_ids"] & set(fields):
            value = fields[field]
            for record in self.records[sobject].values():
                if record["Id"] != own_id and value and record.get(field) == value:
                    raise SalesforceError(
                        400,
                        "DUPLICATE_VALUE",
                        f"duplicate value found: {field} duplicates value on "
                        f"record with id: {record['Id']}",
                        [field],
                    )

    def transaction(self) -> _Transaction:
        """A snapshot of the records that `rollback` restores."""
        return _Transaction(self)

    # ---------------------------------------------------------------- queries

    def query(self, soql: str, version: str) -> dict[str, Any]:
        """Run a SOQL query of the supported subset; return its first batch."""
        match = _SOQL.match(soql)
        if match is None:
            raise SalesforceError(
                400, "MALFORMED_QUERY", f"unexpected token in query: {soql[:80]}"
            )
        sobject = match["sobject"]
        if sobject not in SCHEMA:
            raise SalesforceError(
                400,
                "INVALID_TYPE",
                f"sObject type '{sobject}' is not supported.",
            )
        columns = [c.strip() for c in match["fields"].split(",")]
        _check_fields(sobject, {c: None for c in columns if c != "Id"}, status=400)
        with self.lock:
            rows = list(self.records[sobject].values())
        if match["field"]:
            wanted = match["value"].replace("\\'", "'")
            rows = [r for r in rows if str(r.get(match["field"], "")) == wanted]
        if match["limit"]:
            rows = rows[: int(match["limit"])]
        selected = [_project(sobject, r, columns, version) for r in rows]
        return self._page(_Cursor(selected, version), 0, None)

    def more(self, locator: str, version: str) -> dict[str, Any]:
        """The batch a ``nextRecordsUrl`` names."""
        cursor_id, _, offset = locator.rpartition("-")
        with self.lock:
            cursor = self.cursors.get(cursor_id)
        if cursor is None or not offset.isdigit():
            raise SalesforceError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        return self._page(cursor, int(offset), cursor_id)

    def _page(
        self, cursor: _Cursor, offset: int, cursor_id: str | None
    ) -> dict[str, Any]:
        batch = cursor.records[offset : offset + self.batch_size]
        following = offset + len(batch)
        done = following >= len(cursor.records)
        page: dict[str, Any] = {
            "totalSize": len(cursor.records),
            "done": done,
            "records": batch,
        }
        if not done:
            if cursor_id is None:
                cursor_id = "01g" + secrets.token_hex(6)
                with self.lock:
                    self.cursors[cursor_id] = cursor
            page["nextRecordsUrl"] = (
                f"/services/data/{cursor.version}/query/{cursor_id}-{following}"
            )
        return page


class _Transaction:
    def __init__(self, state: SalesforceState) -> None:
        self.state = state
        with state.lock:
            self.snapshot = copy.deepcopy(state.records)

    def rollback(self) -> None:
        with self.state.lock:
            self.state.records = self.snapshot


def _schema(sobject: str) -> dict[str, Any]:
    schema = SCHEMA.get(sobject)
    if schema is None:
        raise SalesforceError(
            404, "NOT_FOUND", f"The requested resource does not exist: {sobject}"
        )
    return schema


def _check_fields(sobject: str, fields: dict[str, Any], *, status: int = 400) -> None:
    known = _schema(sobject)["fields"]
    for field in fields:
        if field not in known and field != "attributes":
            raise SalesforceError(
                status,
                "INVALID_FIELD",
                f"No such column '{field}' on sobject of type {sobject}",
                [field],
            )


def _project(
    sobject: str, record: dict[str, Any], columns: list[str], version: str
) -> dict[str, Any]:
    url = f"/services/data/{version}/sobjects/{sobject}/{record['Id']}"
    return {
        "attributes": {"type": sobject, "url": url},
        **{c: record.get(c) for c in columns},
    }


def _errors(error: SalesforceError) -> Response:
    return JSONResponse([error.entry()], error.status)


class _Api:
    """HTTP handlers bound to one `SalesforceState`."""

    def __init__(self, state: SalesforceState) -> None:
        self.state = state

    async def token(self, request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode("utf-8", "replace")))
        self.state.count_request(request.method, request.url.path)
        problem = client_credentials_problem(
            form,
            client_id=self.state.client_id,
            client_secret=self.state.client_secret,
        )
        if problem is not None:
            description = {
                "unsupported_grant_type": "grant type not supported",
                "invalid_client": "invalid client credentials",
            }[problem]
            return JSONResponse(
                {"error": problem, "error_description": description}, 400
            )
        instance_url = str(request.base_url).rstrip("/")
        return JSONResponse(
            {
                "access_token": self.state.issue_token(),
                "instance_url": instance_url,
                "id": f"{instance_url}/id/00D000000000001EAA/005000000000001AAA",
                "token_type": "Bearer",
                "issued_at": str(int(time.time() * 1000)),
                "signature": secrets.token_urlsafe(16),
            }
        )

    async def handle(self, request: Request) -> Response:
        """Count, apply faults, then serve one data request."""
        self.state.count_request(request.method, request.url.path)
        response = await apply_faults(
            self.state.faults, request, lambda: self._serve(request), _forced
        )
        with self.state.lock:
            self.state.api_usage += 1
            usage = self.state.api_usage
        response.headers["Sforce-Limit-Info"] = (
            f"api-usage={usage}/{DAILY_API_REQUESTS}"
        )
        return response

    async def _serve(self, request: Request) -> Response:
        header = request.headers.get("authorization", "")
        token = header.removeprefix("Bearer ").strip()
        with self.state.lock:
            known = token in self.state.tokens
        if not header.startswith("Bearer ") or not known:
            return _errors(
                SalesforceError(401, "INVALID_SESSION_ID", "Session expired or invalid")
            )
        version = request.path_params["version"]
        if not _VERSION.match(version):
            return _errors(SalesforceError(404, "NOT_FOUND", "unknown API version"))
        try:
            return await self._route(request, version, request.path_params["rest"])
        except SalesforceError as error:
            return _errors(error)

    async def _route(self, request: Request, version: str, rest: str) -> Response:
        parts = [p for p in rest.split("/") if p]
        method = request.method
        if parts == ["query"] and method == "GET":
            soql = request.query_params.get("q", "")
            return JSONResponse(self.state.query(soql, version))
        if len(parts) == 2 and parts[0] == "query" and method == "GET":
            return JSONResponse(self.state.more(parts[1], version))
        if parts == ["limits"] and method == "GET":
            with self.state.lock:
                left = DAILY_API_REQUESTS - self.state.api_usage - 1
            daily = {"Max": DAILY_API_REQUESTS, "Remaining": left}
            return JSONResponse({"DailyApiRequests": daily})
        if parts == ["composite", "sobjects"] and method == "POST":
            return JSONResponse(self._collection(await _body(request)))
        if parts == ["composite"] and method == "POST":
            return JSONResponse(self._composite(await _body(request), version))
        if parts[:1] == ["sobjects"] and len(parts) in (2, 3, 4):
            status, body = self._sobject(method, parts[1:], await _body(request))
            if body is None:
                return Response(status_code=status)
            return JSONResponse(body, status)
        raise SalesforceError(404, "NOT_FOUND", "The requested resource does not exist")

    def _sobject(self, method: str, parts: list[str], body: Any) -> tuple[int, Any]:
        sobject = parts[0]
        if len(parts) == 1 and method == "POST":
            record_id = self.state.create(sobject, _fields(body))
            return 201, {"id": record_id, "success": True, "errors": []}
        if len(parts) == 2 and method == "GET":
            return 200, self.state.get(sobject, parts[1])
        if len(parts) == 2 and method == "PATCH":
            self.state.update(sobject, parts[1], _fields(body))
            return 204, None
        if len(parts) == 3 and method == "PATCH":
            record_id, created = self.state.upsert(
                sobject, parts[1], parts[2], _fields(body)
            )
            result = {
                "id": record_id,
                "success": True,
                "errors": [],
                "created": created,
            }
            return (201 if created else 200), result
        raise SalesforceError(405, "METHOD_NOT_ALLOWED", f"{method} not allowed")

    def _collection(self, body: Any) -> list[dict[str, Any]]:
        if not isinstance(body, dict) or not isinstance(body.get("records"), list):
            raise SalesforceError(400, "JSON_PARSER_ERROR", "expected records")
        all_or_none = bool(body.get("allOrNone", False))
        transaction = self.state.transaction()
        results: list[dict[str, Any]] = []
        for record in body["records"]:
            fields = dict(record) if isinstance(record, dict) else {}
            sobject = (fields.pop("attributes", None) or {}).get("type", "")
            try:
                record_id = self.state.create(sobject, fields)
                results.append({"id": record_id, "success": True, "errors": []})
            except SalesforceError as error:
                entry = {"success": False, "errors": [error.collection_entry()]}
                results.append(entry)
        if all_or_none and not all(r["success"] for r in results):
            transaction.rollback()
            rolled_back = {
                "statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK",
                "message": "Record rolled back because not all records were "
                "valid and the request was using AllOrNone header",
            }
            results = [
                r if not r["success"] else {"success": False, "errors": [rolled_back]}
                for r in results
            ]
        return results

    def _composite(self, body: Any, version: str) -> dict[str, Any]:
        if not isinstance(body, dict) or not isinstance(
            body.get("compositeRequest"), list
        ):
            raise SalesforceError(400, "JSON_PARSER_ERROR", "expected compositeRequest")
        requests = body["compositeRequest"]
        if len(requests) > 25:
            raise SalesforceError(
                400, "LIMIT_EXCEEDED", "at most 25 subrequests are allowed"
            )
        transaction = self.state.transaction()
        results: dict[str, Any] = {}
        answers: list[dict[str, Any]] = []
        for sub in requests:
            answers.append(self._subrequest(sub, results, version))
        failed = any(a["httpStatusCode"] >= 400 for a in answers)
        if body.get("allOrNone") and failed:
            transaction.rollback()
            halted = {
                "errorCode": "PROCESSING_HALTED",
                "message": "The transaction was rolled back since another "
                "operation in the same transaction failed.",
            }
            answers = [
                a
                if a["httpStatusCode"] >= 400
                else {**a, "httpStatusCode": 400, "body": [halted], "httpHeaders": {}}
                for a in answers
            ]
        return {"compositeResponse": answers}

    def _subrequest(
        self, sub: dict[str, Any], results: dict[str, Any], version: str
    ) -> dict[str, Any]:
        reference = str(sub.get("referenceId", ""))
        prefix = f"/services/data/{version}/sobjects/"
        url = _resolve(str(sub.get("url", "")), results)
        try:
            if not url.startswith(prefix):
                raise SalesforceError(400, "INVALID_URL", f"unsupported url {url}")
            parts = url.removeprefix(prefix).strip("/").split("/")
            body = json.loads(_resolve(json.dumps(sub.get("body")), results))
            status, answer = self._sobject(str(sub.get("method", "")), parts, body)
        except SalesforceError as error:
            return {
                "body": [error.entry()],
                "httpHeaders": {},
                "httpStatusCode": error.status,
                "referenceId": reference,
            }
        results[reference] = answer or {}
        return {
            "body": answer,
            "httpHeaders": {},
            "httpStatusCode": status,
            "referenceId": reference,
        }


def _resolve(text: str, results: dict[str, Any]) -> str:
    """Replace ``@{referenceId.field}`` with an earlier subrequest's answer."""

    def value(match: re.Match[str]) -> str:
        found = results.get(match[1]) or {}
        return str(found.get(match[2], ""))

    return re.sub(r"@\{(\w+)\.(\w+)\}", value, text)


def _fields(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise SalesforceError(400, "JSON_PARSER_ERROR", "expected a JSON object")
    return body


async def _body(request: Request) -> Any:
    raw = await request.body()
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except ValueError:
        raise SalesforceError(400, "JSON_PARSER_ERROR", "invalid JSON") from None


def _forced(fault: Fault) -> Response:
    assert fault.status is not None
    headers = fault.response_headers()
    if fault.status == 503:
        headers.setdefault("Retry-After", "1")
    body = fault.body
    if body is None:
        code, message = _DEFAULT_ERRORS.get(
            fault.status, ("UNKNOWN_EXCEPTION", "error")
        )
        body = [{"errorCode": code, "message": message}]
    return JSONResponse(body, fault.status, headers=headers)


def _control_routes(state: SalesforceState) -> list[Route]:
    async def stats(request: Request) -> Response:
        return JSONResponse(state.stats())

    async def records(request: Request) -> Response:
        sobject = request.path_params["sobject"]
        with state.lock:
            found = state.records.get(sobject)
            listed = None if found is None else [dict(r) for r in found.values()]
        if listed is None:
            return JSONResponse({"error": f"unknown sobject {sobject}"}, 404)
        return JSONResponse(listed)

    async def expire_tokens(request: Request) -> Response:
        state.expire_tokens()
        return JSONResponse({"ok": True})

    async def reset(request: Request) -> Response:
        state.reset()
        return JSONResponse({"ok": True})

    return [
        *fault_routes(state.faults),
        Route("/__standin__/stats", stats, methods=["GET"]),
        Route("/__standin__/records/{sobject}", records, methods=["GET"]),
        Route("/__standin__/expire-tokens", expire_tokens, methods=["POST"]),
        Route("/__standin__/reset", reset, methods=["POST"]),
    ]


def create_salesforce_app(
    *,
    client_id: str,
    client_secret: str,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> Starlette:
    """Build a Salesforce REST stand-in accepting one connected app's credentials.

    Control endpoints (no auth): ``POST /__standin__/faults`` and
    ``/__standin__/drop`` queue faults (default scope ``/services/data``;
    a forced 429 or 503 carries ``Retry-After``), ``GET /__standin__/stats``,
    ``GET /__standin__/records/{sobject}``, ``POST /__standin__/expire-tokens``
    and ``POST /__standin__/reset``. The state is on ``app.state.salesforce``.
    """
    hide_simulated_disconnects()
    state = SalesforceState(
        client_id=client_id, client_secret=client_secret, batch_size=batch_size
    )
    api = _Api(state)
    methods = ["GET", "POST", "PATCH", "PUT", "DELETE"]
    routes = [
        *_control_routes(state),
        Route("/services/oauth2/token", api.token, methods=["POST"]),
        Route("/services/data/{version}/{rest:path}", api.handle, methods=methods),
    ]
    app = Starlette(routes=routes)
    app.router.redirect_slashes = False
    app.state.salesforce = state
    return app
