"""Frappe filter shapes, field projection and ordering over stored documents."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from lobflows.testing.erpnext import doctypes
from lobflows.testing.erpnext.errors import FrappeError
from lobflows.testing.erpnext.meta import DATE_RE, is_blank

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
_OPERATORS = (
    "=", "!=", "<", ">", "<=", ">=", "like", "not like",
    "in", "not in", "between", "is",
)  # fmt: skip


@dataclass(frozen=True)
class Condition:
    """One parsed filter: a column, an operator and a value.

    With `table` (a child table doc type) the column is a row column, and a
    document matches when one of its rows does, as with Frappe's join.
    """

    field: str
    op: str
    value: Any
    table: str | None = None

    def test(self, doc: Mapping[str, Any]) -> bool:
        """Tell whether `doc` satisfies this condition."""
        check = _OPERATOR_TESTS[self.op]
        if self.table is None:
            return check(doc.get(self.field), self.value)
        return any(check(row.get(self.field), self.value) for row in self._rows(doc))

    def _rows(self, doc: Mapping[str, Any]) -> list[Mapping[str, Any]]:
        return [
            row
            for value in doc.values()
            if isinstance(value, list)
            for row in value
            if isinstance(row, Mapping) and row.get("doctype") == self.table
        ]


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
    if isinstance(high, str) and DATE_RE.match(high) and len(str(stored)) > 10:
        high = f"{high} 23:59:59.999999"
    lo, v = _pair(low, stored)
    v2, hi = _pair(stored, high)
    return lo <= v and v2 <= hi


def _is(stored: Any, value: Any) -> bool:
    if value == "set":
        return not is_blank(stored)
    if value == "not set":
        return is_blank(stored)
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


def _condition(
    field_name: Any, op: Any, value: Any, table: str | None = None
) -> Condition:
    operator = str(op).strip().lower()
    if operator not in _OPERATORS:
        raise FrappeError(
            "ValidationError", f"Operator must be one of {', '.join(_OPERATORS)}"
        )
    return Condition(_column(field_name), operator, value, table)


def _dict_conditions(filters: Mapping[str, Any]) -> list[Condition]:
    return [
        _condition(k, v[0], v[1])
        if isinstance(v, list | tuple) and len(v) == 2
        else _condition(k, "=", v)
        for k, v in filters.items()
    ]


def _item_condition(doctype: str, item: Any) -> list[Condition]:
    if isinstance(item, dict):
        return _dict_conditions(item)
    if not isinstance(item, list | tuple) or len(item) not in (3, 4, 5):
        raise FrappeError(
            "ValidationError",
            f"Filter must have 4 values (doctype, fieldname, operator, value): {item}",
        )
    if len(item) == 3:
        return [_condition(*item)]
    if item[0] == doctype:
        return [_condition(*item[1:4])]
    if item[0] in doctypes.TABLES:
        return [_condition(*item[1:4], table=item[0])]
    raise FrappeError(
        "ValidationError", f"Filters on child table {item[0]} are not supported"
    )


def parse_filters(doctype: str, filters: Any) -> list[Condition]:
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


def order_rows(rows: list[dict[str, Any]], order_by: str) -> list[dict[str, Any]]:
    """Sort rows by an SQL-like ``order_by`` clause."""
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


def select_fields(fields: Any, columns: list[str]) -> list[tuple[str, str]]:
    """Resolve requested fields into (column, alias) pairs."""
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


def cint(value: Any, default: int) -> int:
    """Convert to int as Frappe's ``cint`` does."""
    if value is None or value == "":
        return default
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return 0
