"""Child table rows: shaped from what a client sent, then stamped on save.

A row is a dict inside its parent's list, carrying ``name``, ``idx`` (from
1), ``doctype`` (the row doc type), ``parent``, ``parentfield``,
``parenttype`` and ``docstatus`` as Frappe returns them. A sent table
replaces the stored one: rows naming a stored row update it, other rows are
new and get a fresh name.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

from lobflows.testing.erpnext import doctypes
from lobflows.testing.erpnext.errors import FrappeError
from lobflows.testing.erpnext.meta import DocType


def shape_rows(
    meta: DocType, doc: dict[str, Any], stored: Mapping[str, Any] | None = None
) -> None:
    """Turn each table of `doc` into numbered rows, keeping stored rows it names."""
    for table in meta.tables:
        sent = doc.get(table.name)
        if sent is None:
            sent = []
        if not isinstance(sent, list) or not all(isinstance(r, dict) for r in sent):
            raise FrappeError(
                "ValidationError", f"{table.label} must be a list of rows (objects)"
            )
        kept = {r["name"]: r for r in (stored or {}).get(table.name) or []}
        child = doctypes.get_table(str(table.options))
        doc[table.name] = [
            _row(child, raw, kept.get(raw.get("name")), idx)
            for idx, raw in enumerate(sent, start=1)
        ]
        for row in doc[table.name]:
            row.update(parentfield=table.name, parenttype=meta.name)


def _row(
    child: DocType, raw: Mapping[str, Any], kept: Mapping[str, Any] | None, idx: int
) -> dict[str, Any]:
    base = dict(kept) if kept else {f.name: f.default for f in child.fields}
    changes = {k: v for k, v in raw.items() if k not in doctypes.ROW_PROTECTED}
    if kept is None:
        changes.pop("name", None)
    return {**base, **changes, "idx": idx, "doctype": child.name}


def stamp_rows(meta: DocType, doc: dict[str, Any]) -> None:
    """Name new rows and copy the parent's name, state and stamps onto every row."""
    for table in meta.tables:
        doc[table.name] = [_stamped(row, doc) for row in doc[table.name]]


def _stamped(row: Mapping[str, Any], doc: Mapping[str, Any]) -> dict[str, Any]:
    # Keys in the order Frappe serialises a row: bookkeeping, fields, parent.
    head = {
        "name": row.get("name") or secrets.token_hex(5),
        "owner": row.get("owner") or doc["modified_by"],
        "creation": row.get("creation") or doc["modified"],
        "modified": doc["modified"],
        "modified_by": doc["modified_by"],
        "docstatus": doc["docstatus"],
        "idx": row["idx"],
    }
    tail = {
        "parent": doc["name"],
        "parentfield": row["parentfield"],
        "parenttype": row["parenttype"],
        "doctype": row["doctype"],
    }
    fields = {k: v for k, v in row.items() if k not in head and k not in tail}
    return {**head, **fields, **tail}
