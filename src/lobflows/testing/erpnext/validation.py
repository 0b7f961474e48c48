"""Frappe's generic save-time checks, on a document and its child table rows.

Messages follow Frappe's wording where clients are known to parse them
(mandatory fields, links); row problems carry Frappe's ``Row #<idx>:`` prefix.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from datetime import date
from typing import Any

from lobflows.testing.erpnext import doctypes
from lobflows.testing.erpnext.errors import FrappeError
from lobflows.testing.erpnext.meta import (
    DATE_RE,
    NUMERIC_KINDS,
    DocType,
    Field,
    Lookup,
    is_blank,
)

_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def validate_document(
    meta: DocType, doc: dict[str, Any], name: str, lookup: Lookup
) -> None:
    """Prepare and check a document the way a save does, raising the first problem."""
    cast_numbers(meta, doc)
    for part_meta, part in _parts(meta, doc):
        _fetch_values(part_meta, part, lookup)
    if meta.compute is not None:
        meta.compute(doc)
    check_links(meta, doc, lookup)
    check_mandatory(meta, doc, name)
    for part_meta, part in _parts(meta, doc):
        check_formats(part_meta, part, _prefix(part))
    if meta.validate is not None:
        meta.validate(doc, lookup)


def rows_of(meta: DocType, doc: Mapping[str, Any]) -> Iterator[tuple[DocType, Any]]:
    """Yield each child table row with its row doc type."""
    for table in meta.tables:
        child = doctypes.get_table(str(table.options))
        for row in doc.get(table.name) or []:
            yield child, row


def _parts(meta: DocType, doc: dict[str, Any]) -> Iterator[tuple[DocType, Any]]:
    yield meta, doc
    yield from rows_of(meta, doc)


def _prefix(part: Mapping[str, Any]) -> str:
    return f"Row #{part['idx']}: " if part.get("parentfield") else ""


def cast_numbers(meta: DocType, doc: dict[str, Any]) -> None:
    """Store numeric fields as numbers, in rows too, as Frappe's flt() and cint() do."""
    for part_meta, part in _parts(meta, doc):
        for f in part_meta.fields:
            if f.kind in NUMERIC_KINDS and part.get(f.name) is not None:
                part[f.name] = _number(f.kind, part[f.name])


def _number(kind: str, value: Any) -> float | int:
    # Text that is no number becomes 0, as it does in Frappe.
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = 0.0
    return int(number) if kind == "Int" else number


def _fetch_values(meta: DocType, doc: dict[str, Any], lookup: Lookup) -> None:
    for f in meta.fields:
        if f.fetch_from is None or not is_blank(doc.get(f.name)):
            continue
        link_name, _, source = f.fetch_from.partition(".")
        link = meta.field(link_name)
        value = doc.get(link_name)
        if link is None or is_blank(value):
            continue
        linked = lookup(str(link.options), str(value))
        if linked is not None:
            doc[f.name] = linked.get(source)


def _link_target(f: Field, doc: Mapping[str, Any]) -> str | None:
    if f.kind == "Link":
        return str(f.options)
    if f.kind == "Dynamic Link":
        target = doc.get(str(f.options))
        return None if is_blank(target) else str(target)
    return None


def check_links(meta: DocType, doc: Mapping[str, Any], lookup: Lookup) -> None:
    """Raise for links to missing documents, or from a submittable one to cancelled."""
    broken: list[str] = []
    cancelled: list[str] = []
    for part_meta, part in _parts(meta, dict(doc)):
        for f in part_meta.fields:
            target = _link_target(f, part)
            value = part.get(f.name)
            if target is None or is_blank(value):
                continue
            found = lookup(target, str(value))
            shown = f"{_prefix(part)}{f.label}: {value}"
            if found is None:
                broken.append(shown)
            elif meta.is_submittable and found.get("docstatus") == 2:
                cancelled.append(shown)
    if broken:
        raise FrappeError("LinkValidationError", f"Could not find {', '.join(broken)}")
    if cancelled:
        raise FrappeError(
            "CancelledLinkError",
            f"Cannot link cancelled document: {', '.join(cancelled)}",
        )


def check_mandatory(meta: DocType, doc: Mapping[str, Any], name: str) -> None:
    """Raise MandatoryError with one message per missing field, rows included."""
    wanted = [f for f in meta.fields if f.required]
    if meta.required_when is not None:
        wanted += [meta.field(n) or Field(n, n) for n in meta.required_when(doc)]
    missing = [
        (f.name, _missing_message(meta, f)) for f in wanted if is_blank(doc.get(f.name))
    ]
    for child, row in rows_of(meta, doc):
        missing += [
            (f.name, _row_missing_message(child, row, f))
            for f in child.fields
            if f.required and is_blank(row.get(f.name))
        ]
    if not missing:
        return
    messages = [{"message": message} for _, message in missing]
    text = f"[{meta.name}, {name}]: {', '.join(n for n, _ in missing)}"
    raise FrappeError("MandatoryError", messages=messages, text=text)


def _missing_message(meta: DocType, f: Field) -> str:
    if f.kind == "Table":
        return f"Error: Data missing in table: {f.label}"
    return f"Error: Value missing for {meta.name}: {f.label}"


def _row_missing_message(child: DocType, row: Mapping[str, Any], f: Field) -> str:
    where = f"<strong>{child.name}</strong> Row #{row['idx']}"
    return f"Error: {where}: Value missing for: {f.label}"


def check_formats(meta: DocType, doc: Mapping[str, Any], prefix: str = "") -> None:
    """Raise for a bad date, Select option or email address."""
    for f in meta.fields:
        value = doc.get(f.name)
        if is_blank(value):
            continue
        if f.kind == "Date":
            _check_date(f, value)
        elif f.kind == "Select" and isinstance(f.options, tuple):
            _check_select(f, value, prefix)
        elif f.kind == "Email" and not _EMAIL_RE.match(str(value)):
            raise FrappeError(
                "InvalidEmailAddressError", f"{value} is not a valid Email Address"
            )


def _check_date(f: Field, value: Any) -> None:
    text = str(value)
    try:
        if not DATE_RE.match(text):
            raise ValueError(text)
        date.fromisoformat(text)
    except ValueError:
        raise FrappeError(
            "ValidationError",
            f"{f.label}: {text} is not a valid date, expected YYYY-MM-DD",
        ) from None


def _check_select(f: Field, value: Any, prefix: str) -> None:
    assert isinstance(f.options, tuple)
    if value not in f.options:
        allowed = ", ".join(f'"{o}"' for o in f.options)
        raise FrappeError(
            "ValidationError",
            f'{prefix}{f.label} cannot be "{value}". It should be one of {allowed}',
        )
