"""In-memory stand-in for the Frappe v1 REST API as an ERPNext site serves it.

The app keeps documents in memory and answers with Frappe's v1 envelopes:
``{"data": ...}`` for resources, ``{"message": ...}`` for methods, and
``{"exc_type": ..., "_server_messages": ...}`` (double-encoded) for errors.

String comparisons in filters and sorting ignore case, as on the usual
MariaDB-backed site. Control endpoints live under ``/__standin__/`` and need
no authentication; see `create_erpnext_app`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import fnmatch
import hmac
import json
import re
import secrets
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from lobflows.testing.servers import (
    DisconnectAfterHeaders,
    hide_simulated_disconnects,
)

__all__ = [
    "ErpnextState",
    "Fault",
    "FrappeError",
    "create_erpnext_app",
]

API_USER = "Administrator"
DEFAULT_PAGE_LENGTH = 20
NO_CACHE = "no-store,no-cache,must-revalidate,max-age=0"
ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]

_STATUS_BY_EXC: dict[str, int] = {
    "AuthenticationError": 401,
    "SessionExpired": 401,
    "PermissionError": 403,
    "DoesNotExistError": 404,
    "DuplicateEntryError": 409,
    "InvalidAuthorizationToken": 400,
    "CSRFTokenError": 400,
    "UnsupportedMediaType": 415,
    "LinkExpired": 410,
    "TooManyRequestsError": 429,
    "OutgoingEmailError": 501,
    "SessionStopped": 503,
    "InReadOnlyMode": 503,
    "Exception": 500,
}

# Default envelope for a forced response of a given status.
_EXC_BY_STATUS: dict[int, tuple[str, str]] = {
    400: ("CSRFTokenError", "Invalid Request"),
    401: ("AuthenticationError", "Invalid Authentication"),
    403: ("PermissionError", "Not permitted"),
    404: ("DoesNotExistError", "Not found"),
    409: ("DuplicateEntryError", "Duplicate entry"),
    410: ("LinkExpired", "The link has expired"),
    415: ("UnsupportedMediaType", "Unsupported media type"),
    417: ("ValidationError", "Validation failed"),
    429: ("TooManyRequestsError", "Too Many Requests"),
    501: ("OutgoingEmailError", "Outgoing email is not configured"),
    503: ("SessionStopped", "The site is under maintenance, please try again later"),
}
_GENERIC_EXC = ("Exception", "Internal Server Error")

_FIELD_RE = re.compile(
    r"^(?:`?tab[^`.]+`?\.)?`?(?P<field>[A-Za-z_][A-Za-z0-9_]*)`?"
    r"(?:\s+as\s+(?P<alias>[A-Za-z_][A-Za-z0-9_]*))?$",
    re.IGNORECASE,
)
_ORDER_RE = re.compile(
    r"^(?:`?tab[^`.]+`?\.)?`?(?P<field>[A-Za-z_][A-Za-z0-9_]*)`?"
    r"(?:\s+(?P<dir>asc|desc))?$",
    re.IGNORECASE,
)
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_OPERATORS = (
    "=", "!=", "<", ">", "<=", ">=", "like", "not like",
    "in", "not in", "between", "is",
)  # fmt: skip
_STANDARD_COLUMNS = (
    "name",
    "owner",
    "creation",
    "modified",
    "modified_by",
    "docstatus",
    "idx",
)
# Keys a client cannot set through create or update.
_PROTECTED = frozenset(
    {"doctype", "flags", "owner", "creation", "modified_by", "docstatus", "idx"}
)


# --------------------------------------------------------------------------- errors


class FrappeError(Exception):
    """A Frappe exception: its class name, HTTP status and server messages."""

    def __init__(
        self,
        exc_type: str,
        message: str | None = None,
        *,
        title: str = "Message",
        messages: list[dict[str, Any]] | None = None,
        text: str | None = None,
    ) -> None:
        self.exc_type = exc_type
        self.status = _STATUS_BY_EXC.get(exc_type, 417)
        self.messages = list(messages or [])
        if message is not None:
            self.messages.append(_thrown_message(message, title))
        self.text = text if text is not None else (message or "")
        super().__init__(f"{exc_type}: {self.text}")

    def body(self, *, with_traceback: bool = False) -> dict[str, Any]:
        """Return the v1 error envelope."""
        payload: dict[str, Any] = {"exc_type": self.exc_type}
        if with_traceback:
            last_line = f"frappe.exceptions.{self.exc_type}: {self.text}"
            payload["exception"] = last_line
            trace = f"Traceback (most recent call last):\n{last_line}\n"
            payload["exc"] = json.dumps([trace])
        if self.messages:
            payload["_server_messages"] = encode_server_messages(self.messages)
        return payload


def _thrown_message(message: str, title: str) -> dict[str, Any]:
    return {
        "message": message,
        "title": title,
        "indicator": "red",
        "raise_exception": 1,
        "__frappe_exc_id": secrets.token_hex(8),
    }


def encode_server_messages(messages: Iterable[Mapping[str, Any]]) -> str:
    """Encode messages the way Frappe does: a JSON list of JSON strings."""
    return json.dumps([json.dumps(dict(m)) for m in messages])


def _error_for_status(status: int) -> FrappeError:
    exc_type, message = _EXC_BY_STATUS.get(status, _GENERIC_EXC)
    error = FrappeError(exc_type, message)
    error.status = status
    return error


# ---------------------------------------------------------------------- doc types


@dataclass(frozen=True)
class _Field:
    name: str
    label: str
    kind: str = "Data"
    required: bool = False
    options: str | tuple[str, ...] | None = None
    default: Any = None


@dataclass(frozen=True)
class _DocType:
    name: str
    fields: tuple[_Field, ...]
    naming: str
    compute: Callable[[dict[str, Any]], None] | None = None
    required_when: Callable[[dict[str, Any]], list[str]] | None = None

    def field(self, name: str) -> _Field | None:
        """Return the declared field called `name`, if any."""
        return next((f for f in self.fields if f.name == name), None)


def _join_names(doc: Mapping[str, Any]) -> str:
    parts = (doc.get(k) for k in ("first_name", "middle_name", "last_name"))
    return " ".join(str(p) for p in parts if p)


def _compute_employee(doc: dict[str, Any]) -> None:
    doc["employee_name"] = _join_names(doc) or None


def _compute_user(doc: dict[str, Any]) -> None:
    doc["full_name"] = _join_names(doc) or None
    if isinstance(doc.get("email"), str):
        doc["email"] = doc["email"].strip().lower()


def _employee_conditional(doc: Mapping[str, Any]) -> list[str]:
    return ["relieving_date"] if doc.get("status") == "Left" else []


_DOCTYPES: dict[str, _DocType] = {
    d.name: d
    for d in (
        _DocType(
            "Gender",
            (_Field("gender", "Gender", required=True),),
            naming="field:gender",
        ),
        _DocType(
            "Company",
            (
                _Field("company_name", "Company", required=True),
                _Field("abbr", "Abbr"),
                _Field("default_currency", "Default Currency"),
                _Field("country", "Country"),
            ),
            naming="field:company_name",
        ),
        _DocType(
            "User",
            (
                _Field("email", "Email", "Email", required=True),
                _Field("first_name", "First Name", required=True),
                _Field("middle_name", "Middle Name"),
                _Field("last_name", "Last Name"),
                _Field("full_name", "Full Name"),
                _Field("enabled", "Enabled", "Check", default=1),
                _Field(
                    "user_type",
                    "User Type",
                    "Select",
                    options=("System User", "Website User"),
                    default="System User",
                ),
                _Field("send_welcome_email", "Send Welcome Email", "Check", default=1),
                _Field("mobile_no", "Mobile No"),
                _Field("language", "Language"),
                _Field("time_zone", "Time Zone"),
            ),
            naming="field:email",
            compute=_compute_user,
        ),
        _DocType(
            "Employee",
            (
                _Field("naming_series", "Series", default="HR-EMP-"),
                _Field("first_name", "First Name", required=True),
                _Field("middle_name", "Middle Name"),
                _Field("last_name", "Last Name"),
                _Field("employee_name", "Full Name"),
                _Field("gender", "Gender", "Link", True, "Gender"),
                _Field("date_of_birth", "Date of Birth", "Date", required=True),
                _Field("date_of_joining", "Date of Joining", "Date", required=True),
                _Field("company", "Company", "Link", True, "Company"),
                _Field(
                    "status",
                    "Status",
                    "Select",
                    required=True,
                    options=("Active", "Inactive", "Suspended", "Left"),
                    default="Active",
                ),
                _Field("user_id", "User ID", "Link", options="User"),
                _Field("relieving_date", "Relieving Date", "Date"),
                _Field("employee_number", "Employee Number"),
                _Field("designation", "Designation"),
                _Field("department", "Department"),
                _Field("personal_email", "Personal Email"),
                _Field("company_email", "Company Email"),
                _Field("cell_number", "Mobile"),
            ),
            naming="series",
            compute=_compute_employee,
            required_when=_employee_conditional,
        ),
        _DocType(
            "ToDo",
            (
                _Field(
                    "status",
                    "Status",
                    "Select",
                    options=("Open", "Closed", "Cancelled"),
                    default="Open",
                ),
                _Field(
                    "priority",
                    "Priority",
                    "Select",
                    options=("High", "Medium", "Low"),
                    default="Medium",
                ),
                _Field("date", "Due Date", "Date"),
                _Field("allocated_to", "Allocated To", "Link", options="User"),
                _Field("description", "Description", "Text", required=True),
                _Field("reference_type", "Reference Type"),
                _Field("reference_name", "Reference Name"),
            ),
            naming="hash",
        ),
        _DocType(
            "Material Request",
            (
                _Field("naming_series", "Series", default="MAT-MR-.YYYY.-"),
                _Field(
                    "material_request_type",
                    "Purpose",
                    "Select",
                    options=(
                        "Purchase",
                        "Material Transfer",
                        "Material Issue",
                        "Manufacture",
                        "Customer Provided",
                    ),
                    default="Purchase",
                ),
                _Field("transaction_date", "Date", "Date"),
                _Field("schedule_date", "Required By", "Date"),
                _Field("company", "Company", "Link", options="Company"),
                _Field("title", "Title"),
            ),
            naming="series",
        ),
    )
}

_SEED: tuple[tuple[str, dict[str, Any]], ...] = (
    ("Gender", {"gender": "Male"}),
    ("Gender", {"gender": "Female"}),
    ("Gender", {"gender": "Other"}),
    ("Gender", {"gender": "Prefer not to say"}),
    (
        "Company",
        {
            "company_name": "Example Corp",
            "abbr": "EC",
            "default_currency": "USD",
            "country": "United States",
        },
    ),
)


def _doctype(name: str) -> _DocType:
    meta = _DOCTYPES.get(name)
    if meta is None:
        raise FrappeError("DoesNotExistError", f"DocType {name} not found")
    return meta


# --------------------------------------------------------------------- validation


def _is_blank(value: Any) -> bool:
    return value is None or value == [] or not str(value).strip()


def _check_links(
    meta: _DocType, doc: Mapping[str, Any], exists: Callable[[str, str], bool]
) -> None:
    broken = [
        f"{f.label}: {doc[f.name]}"
        for f in meta.fields
        if f.kind == "Link"
        and not _is_blank(doc.get(f.name))
        and not exists(str(f.options), str(doc[f.name]))
    ]
    if broken:
        raise FrappeError("LinkValidationError", f"Could not find {', '.join(broken)}")


def _check_mandatory(meta: _DocType, doc: Mapping[str, Any], name: str) -> None:
    wanted = [f.name for f in meta.fields if f.required]
    if meta.required_when is not None:
        wanted += meta.required_when(doc)
    missing = [n for n in wanted if _is_blank(doc.get(n))]
    if not missing:
        return
    labels = [(meta.field(n) or _Field(n, n)).label for n in missing]
    messages = [
        {"message": f"Error: Value missing for {meta.name}: {label}"}
        for label in labels
    ]
    text = f"[{meta.name}, {name}]: {', '.join(missing)}"
    raise FrappeError("MandatoryError", messages=messages, text=text)


def _check_formats(meta: _DocType, doc: Mapping[str, Any]) -> None:
    for f in meta.fields:
        value = doc.get(f.name)
        if _is_blank(value):
            continue
        if f.kind == "Date":
            _check_date(f, value)
        elif f.kind == "Select" and isinstance(f.options, tuple):
            _check_select(f, value)
        elif f.kind == "Email" and not _EMAIL_RE.match(str(value)):
            raise FrappeError(
                "InvalidEmailAddressError", f"{value} is not a valid Email Address"
            )


def _check_date(f: _Field, value: Any) -> None:
    text = str(value)
    try:
        if not _DATE_RE.match(text):
            raise ValueError(text)
        date.fromisoformat(text)
    except ValueError:
        raise FrappeError(
            "ValidationError",
            f"{f.label}: {text} is not a valid date, expected YYYY-MM-DD",
        ) from None


def _check_select(f: _Field, value: Any) -> None:
    assert isinstance(f.options, tuple)
    if value not in f.options:
        allowed = ", ".join(f'"{o}"' for o in f.options)
        raise FrappeError(
            "ValidationError",
            f'{f.label} cannot be "{value}". It should be one of {allowed}',
        )


def _without_nulls(doc: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if v is not None}


# ------------------------------------------------------------------------ queries


@dataclass(frozen=True)
class _Condition:
    field: str
    op: str
    value: Any

    def test(self, doc: Mapping[str, Any]) -> bool:
        """Tell whether `doc` satisfies this condition."""
        return _OPERATOR_TESTS[self.op](doc.get(self.field), self.value)


def _scalar(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float):
        return value
    return str(value)


def _pair(a: Any, b: Any) -> tuple[Any, Any]:
    """Make two values comparable the way a loosely typed SQL column would."""
    a, b = _scalar(a), _scalar(b)
    if isinstance(a, str) and isinstance(b, str):
        return a.casefold(), b.casefold()
    try:
        return float(a), float(b)
    except ValueError:
        return str(a).casefold(), str(b).casefold()


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, list | tuple):
        return list(value)
    if isinstance(value, str):
        return [part.strip() for part in value.split(",")]
    return [value]


def _like(stored: Any, pattern: Any) -> bool:
    regex = "".join(
        ".*" if ch == "%" else "." if ch == "_" else re.escape(ch)
        for ch in str(_scalar(pattern))
    )
    return (
        re.fullmatch(regex, str(_scalar(stored)), re.IGNORECASE | re.DOTALL) is not None
    )


def _between(stored: Any, bounds: Any) -> bool:
    if stored is None:
        return False
    if not isinstance(bounds, list | tuple) or len(bounds) != 2:
        raise FrappeError("ValidationError", "between needs a list of two values")
    low, high = bounds
    if isinstance(high, str) and _DATE_RE.match(high) and len(str(stored)) > 10:
        high = f"{high} 23:59:59.999999"
    lo, v = _pair(low, stored)
    v2, hi = _pair(stored, high)
    return lo <= v and v2 <= hi


def _is(stored: Any, value: Any) -> bool:
    if value == "set":
        return not _is_blank(stored)
    if value == "not set":
        return _is_blank(stored)
    raise FrappeError("ValidationError", 'Value for "is" must be "set" or "not set"')


def _compare(check: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    return lambda stored, value: check(*_pair(stored, value))


_OPERATOR_TESTS: dict[str, Callable[[Any, Any], bool]] = {
    "=": _compare(lambda a, b: a == b),
    "!=": _compare(lambda a, b: a != b),
    "<": _compare(lambda a, b: a < b),
    ">": _compare(lambda a, b: a > b),
    "<=": _compare(lambda a, b: a <= b),
    ">=": _compare(lambda a, b: a >= b),
    "like": _like,
    "not like": lambda s, v: not _like(s, v),
    "in": lambda s, v: any(_OPERATOR_TESTS["="](s, x) for x in _as_list(v)),
    "not in": lambda s, v: not _OPERATOR_TESTS["in"](s, v),
    "between": _between,
    "is": _is,
}


def _column(raw: Any) -> str:
    match = _FIELD_RE.match(str(raw).strip()) if isinstance(raw, str) else None
    if match is None or match["alias"]:
        raise FrappeError("DataError", f"Field not permitted in query: {raw}")
    return match["field"]


def _condition(field_name: Any, op: Any, value: Any) -> _Condition:
    operator = str(op).strip().lower()
    if operator not in _OPERATORS:
        raise FrappeError(
            "ValidationError", f"Operator must be one of {', '.join(_OPERATORS)}"
        )
    return _Condition(_column(field_name), operator, value)


def _dict_conditions(filters: Mapping[str, Any]) -> list[_Condition]:
    return [
        _condition(k, v[0], v[1])
        if isinstance(v, list | tuple) and len(v) == 2
        else _condition(k, "=", v)
        for k, v in filters.items()
    ]


def _item_condition(doctype: str, item: Any) -> list[_Condition]:
    if isinstance(item, dict):
        return _dict_conditions(item)
    if not isinstance(item, list | tuple) or len(item) not in (3, 4, 5):
        raise FrappeError(
            "ValidationError",
            f"Filter must have 4 values (doctype, fieldname, operator, value): {item}",
        )
    if len(item) == 3:
        return [_condition(*item)]
    if item[0] != doctype:
        raise FrappeError(
            "ValidationError", f"Filters on child table {item[0]} are not supported"
        )
    return [_condition(*item[1:4])]


def parse_filters(doctype: str, filters: Any) -> list[_Condition]:
    """Turn any of Frappe's filter shapes into a list of conditions."""
    if filters in (None, "", [], {}):
        return []
    if isinstance(filters, dict):
        return _dict_conditions(filters)
    if isinstance(filters, list):
        return [c for item in filters for c in _item_condition(doctype, item)]
    raise FrappeError("ValidationError", f"Invalid filters: {filters}")


def _sort_key(value: Any) -> tuple[int, float, str]:
    if value is None:
        return (0, 0.0, "")
    if isinstance(value, bool | int | float):
        return (1, float(value), "")
    return (2, 0.0, str(value).casefold())


def _order(rows: list[dict[str, Any]], order_by: str) -> list[dict[str, Any]]:
    keys: list[tuple[str, bool]] = []
    for part in filter(None, (p.strip() for p in order_by.split(","))):
        match = _ORDER_RE.match(part)
        if match is None:
            raise FrappeError("DataError", f"Invalid order_by: {part}")
        keys.append((match["field"], (match["dir"] or "asc").lower() == "desc"))
    ordered = list(rows)
    for name, descending in reversed(keys):
        ordered.sort(key=lambda d: _sort_key(d.get(name)), reverse=descending)
    return ordered


def _projection(fields: Any, columns: list[str]) -> list[tuple[str, str]]:
    if isinstance(fields, str):
        fields = [fields]
    if not isinstance(fields, list) or not fields:
        raise FrappeError("ValidationError", "fields must be a JSON list")
    out: list[tuple[str, str]] = []
    for raw in fields:
        if raw == "*":
            out.extend((c, c) for c in columns)
            continue
        match = _FIELD_RE.match(raw.strip()) if isinstance(raw, str) else None
        if match is None:
            raise FrappeError("DataError", f"Field not permitted in query: {raw}")
        out.append((match["field"], match["alias"] or match["field"]))
    return out


def _cint(value: Any, default: int) -> int:
    if value is None or value == "":
        return default
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return 0


# -------------------------------------------------------------------------- faults


@dataclass
class Fault:
    """A queued forced response (or latency, or post-processing drop)."""

    remaining: int = 1
    status: int | None = None
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    match: str | None = None
    delay: float = 0.0
    after: bool = False

    def matches(self, method: str, path: str) -> bool:
        """Tell whether this fault applies to a request."""
        if not self.match:
            return path == "/api" or path.startswith("/api/")
        wanted_method, wanted_path = _split_match(self.match)
        if wanted_method not in ("*", method.upper()):
            return False
        return fnmatch.fnmatchcase(path.rstrip("/") or "/", wanted_path)

    def describe(self) -> dict[str, Any]:
        """Return a JSON-ready summary for the stats endpoint."""
        return {
            "kind": "drop" if self.after else "fault",
            "remaining": self.remaining,
            "status": self.status,
            "match": self.match,
            "delay": self.delay,
        }


def _split_match(match: str) -> tuple[str, str]:
    """Split ``"[METHOD] /path-glob"`` into an upper-case method and a glob."""
    first, _, rest = match.strip().partition(" ")
    if first.upper() in (*ALL_METHODS, "*") and rest.strip():
        return first.upper(), rest.strip().rstrip("/") or "/"
    return "*", match.strip().rstrip("/") or "/"


def _fault_from_json(payload: Any, *, after: bool) -> Fault:
    if not isinstance(payload, dict):
        raise ValueError("expected a JSON object")
    status = payload.get("status")
    if status is None and not after and not payload.get("delay"):
        raise ValueError("give a status, a delay, or both")
    headers = payload.get("headers") or {}
    if not isinstance(headers, dict):
        raise ValueError("headers must be an object")
    count = int(payload.get("count", 1))
    if count < 1:
        raise ValueError("count must be at least 1")
    return Fault(
        remaining=count,
        status=None if status is None else int(status),
        body=payload.get("body"),
        headers={str(k): str(v) for k, v in headers.items()},
        match=payload.get("match"),
        delay=float(payload.get("delay", 0.0)),
        after=after,
    )


# --------------------------------------------------------------------------- state


class ErpnextState:
    """Documents, request counters and queued faults of one stand-in site."""

    def __init__(self, *, api_key: str, api_secret: str) -> None:
        self.api_key = api_key
        self.api_secret = api_secret
        self.lock = threading.RLock()
        self.docs: dict[str, dict[str, dict[str, Any]]] = {}
        self.request_counts: Counter[str] = Counter()
        self.faults: list[Fault] = []
        self._series: Counter[str] = Counter()
        self._last_stamp = datetime.min
        self.reset()

    def reset(self) -> None:
        """Forget all documents, counters and faults, then re-seed."""
        with self.lock:
            self.docs = {name: {} for name in _DOCTYPES}
            self.request_counts.clear()
            self.faults.clear()
            self._series.clear()
            for doctype, data in _SEED:
                self.insert(doctype, data)

    def add_fault(
        self,
        status: int | None = None,
        *,
        count: int = 1,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        match: str | None = None,
        delay: float = 0.0,
    ) -> Fault:
        """Answer the next `count` matching requests with `status` instead."""
        fault = Fault(count, status, body, dict(headers or {}), match, delay)
        with self.lock:
            self.faults.append(fault)
        return fault

    def add_drop(
        self,
        *,
        count: int = 1,
        match: str | None = None,
        status: int | None = None,
        body: Any = None,
    ) -> Fault:
        """Process the next `count` matching requests, then cut the connection.

        With `status`, answer with that error instead of disconnecting.
        """
        fault = Fault(count, status, body, {}, match, after=True)
        with self.lock:
            self.faults.append(fault)
        return fault

    def take_fault(self, method: str, path: str, *, after: bool) -> Fault | None:
        """Consume one use of the first pending fault matching a request."""
        with self.lock:
            for fault in self.faults:
                if fault.after == after and fault.matches(method, path):
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self.faults.remove(fault)
                    return fault
        return None

    def count_request(self, method: str, path: str) -> None:
        """Record one request for the stats endpoint."""
        with self.lock:
            self.request_counts[f"{method} {path}"] += 1

    def stats(self) -> dict[str, Any]:
        """Return request counts, document counts and pending faults."""
        with self.lock:
            return {
                "requests": dict(self.request_counts),
                "docs": {k: len(v) for k, v in self.docs.items()},
                "faults": [f.describe() for f in self.faults],
            }

    # documents ---------------------------------------------------------------

    def exists(self, doctype: str, name: str) -> bool:
        """Tell whether a document exists."""
        return name in self.docs.get(doctype, {})

    def get(self, doctype: str, name: str) -> dict[str, Any]:
        """Return a copy of one stored document, nulls included."""
        _doctype(doctype)
        with self.lock:
            doc = self.docs[doctype].get(name)
            if doc is None:
                raise FrappeError("DoesNotExistError", f"{doctype} {name} not found")
            return dict(doc)

    def insert(self, doctype: str, data: Mapping[str, Any]) -> dict[str, Any]:
        """Validate and store a new document; return it with nulls."""
        meta = _doctype(doctype)
        with self.lock:
            doc = {f.name: f.default for f in meta.fields}
            doc.update({k: v for k, v in data.items() if k not in _PROTECTED})
            # Frappe names these doctypes itself and ignores a sent name.
            doc.pop("modified", None)
            doc.pop("name", None)
            self._validate(meta, doc, "new")
            name = self._new_name(meta, doc)
            stamp = self._stamp()
            doc = {
                "name": name,
                "owner": API_USER,
                "creation": stamp,
                "modified": stamp,
                "modified_by": API_USER,
                "docstatus": 0,
                "idx": 0,
                **doc,
                "doctype": doctype,
            }
            self.docs[doctype][name] = doc
            return dict(doc)

    def update(
        self, doctype: str, name: str, data: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Merge `data` into a stored document, validate and save it."""
        meta = _doctype(doctype)
        with self.lock:
            current = self.get(doctype, name)
            changes = {k: v for k, v in data.items() if k not in _PROTECTED}
            changes.pop("name", None)
            sent_modified = changes.pop("modified", None)
            if sent_modified is not None and sent_modified != current["modified"]:
                raise FrappeError(
                    "TimestampMismatchError",
                    "Error: Document has been modified after you have opened it "
                    f"({sent_modified}, {current['modified']}). "
                    "Please refresh to get the latest document.",
                )
            doc = {**current, **changes}
            self._validate(meta, doc, name)
            doc["modified"] = self._stamp()
            doc["modified_by"] = API_USER
            self.docs[doctype][name] = doc
            return dict(doc)

    def delete(self, doctype: str, name: str) -> None:
        """Delete a document unless another document links to it."""
        _doctype(doctype)
        with self.lock:
            self.get(doctype, name)
            linked = self._first_link_to(doctype, name)
            if linked is not None:
                raise FrappeError(
                    "LinkExistsError",
                    f"Cannot delete or cancel because {doctype} <strong>{name}</strong>"
                    f" is linked with {linked[0]} <strong>{linked[1]}</strong>",
                )
            del self.docs[doctype][name]

    def query(
        self,
        doctype: str,
        *,
        filters: Any = None,
        or_filters: Any = None,
        order_by: str = "modified desc",
    ) -> list[dict[str, Any]]:
        """Return copies of the documents that match, in the asked order."""
        _doctype(doctype)
        every = parse_filters(doctype, filters)
        some = parse_filters(doctype, or_filters)
        with self.lock:
            docs = [dict(d) for d in self.docs[doctype].values()]
        hits = [
            d
            for d in docs
            if all(c.test(d) for c in every)
            and (not some or any(c.test(d) for c in some))
        ]
        return _order(hits, order_by)

    def columns(self, doctype: str) -> list[str]:
        """Return the table's columns: standard, declared, then custom fields."""
        meta = _doctype(doctype)
        names = [*_STANDARD_COLUMNS, *(f.name for f in meta.fields)]
        with self.lock:
            for doc in self.docs[doctype].values():
                names.extend(k for k in doc if k != "doctype")
        return list(dict.fromkeys(names))

    # internals ---------------------------------------------------------------

    def _validate(self, meta: _DocType, doc: dict[str, Any], name: str) -> None:
        if meta.compute is not None:
            meta.compute(doc)
        _check_links(meta, doc, self.exists)
        _check_mandatory(meta, doc, name)
        _check_formats(meta, doc)

    def _new_name(self, meta: _DocType, doc: Mapping[str, Any]) -> str:
        if meta.naming == "hash":
            name = secrets.token_hex(5)
            while self.exists(meta.name, name):
                name = secrets.token_hex(5)
            return name
        if meta.naming == "series":
            return self._next_in_series(str(doc.get("naming_series") or ""))
        key = meta.naming.removeprefix("field:")
        name = str(doc[key]).strip()
        if self.exists(meta.name, name):
            raise FrappeError(
                "DuplicateEntryError",
                f"{meta.name} <strong>{name}</strong> already exists",
                title="Duplicate Name",
            )
        return name

    def _next_in_series(self, series: str) -> str:
        today = date.today()
        tokens = {"YYYY": f"{today:%Y}", "YY": f"{today:%y}", "MM": f"{today:%m}"}
        parts = [tokens.get(p, p) for p in series.split(".")]
        width = next((len(p) for p in parts if p and set(p) == {"#"}), 0)
        prefix = "".join(p for p in parts if not (p and set(p) == {"#"}))
        self._series[prefix] += 1
        return f"{prefix}{self._series[prefix]:0{width or 5}d}"

    def _stamp(self) -> str:
        now = datetime.now()
        if now <= self._last_stamp:
            now = self._last_stamp + timedelta(microseconds=1)
        self._last_stamp = now
        return now.strftime("%Y-%m-%d %H:%M:%S.%f")

    def _first_link_to(self, doctype: str, name: str) -> tuple[str, str] | None:
        for meta in _DOCTYPES.values():
            links = [
                f.name for f in meta.fields if f.kind == "Link" and f.options == doctype
            ]
            for doc in self.docs[meta.name].values() if links else ():
                if any(doc.get(link) == name for link in links):
                    return meta.name, doc["name"]
        return None


# ---------------------------------------------------------------------------- HTTP


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
        method, path = request.method, request.url.path
        self.state.count_request(method, path)
        fault = self.state.take_fault(method, path, after=False)
        if fault is not None:
            await asyncio.sleep(fault.delay)
            if fault.status is not None:
                return self._forced(fault)
        drop = self.state.take_fault(method, path, after=True)
        response = await self._serve(request)
        if drop is None:
            return response
        await asyncio.sleep(drop.delay)
        if drop.status is not None:
            return self._forced(drop)
        return DisconnectAfterHeaders(response)

    def _forced(self, fault: Fault) -> Response:
        assert fault.status is not None
        headers = dict(fault.headers)
        if fault.status == 429:
            headers.setdefault("Retry-After", "1")
        if isinstance(fault.body, str):
            return PlainTextResponse(fault.body, fault.status, headers=headers)
        body = fault.body
        if body is None:
            body = _error_for_status(fault.status).body()
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
            return _json({"data": _without_nulls(doc)})
        if method == "GET":
            return _json({"data": _without_nulls(self.state.get(doctype, name))})
        if method == "PUT":
            doc = self.state.update(doctype, name, await _read_doc(request))
            return _json({"data": _without_nulls(doc)})
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
        projection = _projection(_param(params, "fields", ["name"]), columns)
        start = max(_cint(params.get("limit_start"), 0), 0)
        length = params.get("limit_page_length", params.get("limit"))
        page_length = _cint(length, DEFAULT_PAGE_LENGTH)
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
        }.get(dotted)
        if handler is None:
            raise FrappeError(
                "ValidationError", f"Failed to get method for command {dotted}"
            )
        if user is None:
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


# ------------------------------------------------------------------ control routes


def _control_routes(state: ErpnextState) -> list[Route]:
    async def add_fault(request: Request) -> Response:
        return await _queue(request, after=False)

    async def add_drop(request: Request) -> Response:
        return await _queue(request, after=True)

    async def _queue(request: Request, *, after: bool) -> Response:
        try:
            fault = _fault_from_json(
                json.loads(await request.body() or b"{}"), after=after
            )
        except (ValueError, TypeError) as exc:
            return JSONResponse({"error": str(exc)}, 400)
        with state.lock:
            state.faults.append(fault)
        return JSONResponse(fault.describe())

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
        Route("/__standin__/faults", add_fault, methods=["POST"]),
        Route("/__standin__/drop", add_drop, methods=["POST"]),
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
