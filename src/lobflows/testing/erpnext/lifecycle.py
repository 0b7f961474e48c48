"""Submittable documents: docstatus transitions, edits after submit, links that block.

Frappe decides what a save does from the stored docstatus and the one sent
(``check_docstatus_transition`` in
https://github.com/frappe/frappe/blob/develop/frappe/model/document.py): draft to
draft saves, draft to submitted submits, submitted to submitted is an
*update after submit* (allowed only when nothing changes here, since no
field of these doc types is marked "allow on submit"), submitted to
cancelled cancels. Anything else, and every edit of a cancelled document,
is refused.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from lobflows.testing.erpnext import doctypes
from lobflows.testing.erpnext.errors import FrappeError
from lobflows.testing.erpnext.meta import DocType

DRAFT, SUBMITTED, CANCELLED = 0, 1, 2
# Keys a save sets itself, never compared for an update after submit.
_BOOKKEEPING = frozenset({*doctypes.STANDARD_COLUMNS, "doctype"}) | {
    "parent",
    "parentfield",
    "parenttype",
}


def wanted_docstatus(meta: DocType, stored: int, data: Mapping[str, Any]) -> int:
    """The docstatus a create or update asks for; other doc types keep theirs."""
    if not meta.is_submittable or data.get("docstatus") is None:
        return stored
    try:
        wanted = int(data["docstatus"])
    except (TypeError, ValueError):
        wanted = -1
    if wanted not in (DRAFT, SUBMITTED, CANCELLED):
        raise FrappeError("ValidationError", "Invalid docstatus")
    return wanted


def action_for(stored: int, wanted: int) -> str:
    """Name what a save from `stored` to `wanted` docstatus does, or refuse it."""
    if stored == CANCELLED:
        raise FrappeError("ValidationError", "Cannot edit cancelled document")
    if stored == DRAFT and wanted == CANCELLED:
        raise FrappeError(
            "DocstatusTransitionError",
            "Cannot change docstatus from 0 (Draft) to 2 (Cancelled)",
        )
    if stored == SUBMITTED and wanted == DRAFT:
        raise FrappeError(
            "DocstatusTransitionError",
            "Cannot change docstatus from 1 (Submitted) to 0 (Draft)",
        )
    return {
        (DRAFT, DRAFT): "save",
        (DRAFT, SUBMITTED): "submit",
        (SUBMITTED, SUBMITTED): "update_after_submit",
        (SUBMITTED, CANCELLED): "cancel",
    }[(stored, wanted)]


def refuse_changes_after_submit(
    meta: DocType, stored: Mapping[str, Any], doc: Mapping[str, Any]
) -> None:
    """Raise UpdateAfterSubmitError for the first value that differs from `stored`."""
    _compare(meta, stored, doc, prefix="")
    for table in meta.tables:
        before, after = stored.get(table.name) or [], doc.get(table.name) or []
        if len(before) != len(after):
            _refuse("", table.label, len(before), len(after))
        child = doctypes.get_table(str(table.options))
        for old, new in zip(before, after, strict=True):
            _compare(child, old, new, prefix=f"Row #{new['idx']}: ")


def _compare(
    meta: DocType, before: Mapping[str, Any], after: Mapping[str, Any], *, prefix: str
) -> None:
    declared = [f.name for f in meta.fields if f.kind != "Table"]
    custom = sorted((set(before) | set(after)) - set(declared) - _BOOKKEEPING)
    tables = {f.name for f in meta.tables}
    for key in [*declared, *custom]:
        if key not in tables and before.get(key) != after.get(key):
            field = meta.field(key)
            label = field.label if field else key
            _refuse(prefix, label, before.get(key), after.get(key))


def _refuse(prefix: str, label: str, old: Any, new: Any) -> None:
    raise FrappeError(
        "UpdateAfterSubmitError",
        f"{prefix}Not allowed to change <strong>{label}</strong> after submission "
        f"from <strong>{old}</strong> to <strong>{new}</strong>",
        title="Cannot Update After Submit",
    )


@dataclass(frozen=True)
class LinkingDoc:
    """A document whose Link (or Dynamic Link) points at another, maybe from a row."""

    doctype: str
    name: str
    docstatus: int
    row: int | None

    def refusal(self, doctype: str, name: str) -> FrappeError:
        """The LinkExistsError this link raises against deleting or cancelling."""
        where = f" at Row: {self.row}" if self.row is not None else ""
        return FrappeError(
            "LinkExistsError",
            f"Cannot delete or cancel because {doctype} <strong>{name}</strong> "
            f"is linked with {self.doctype} <strong>{self.name}</strong>{where}",
            title="Cannot delete or cancel",
        )


def links_to(
    docs: Mapping[str, Mapping[str, Mapping[str, Any]]], doctype: str, name: str
) -> Iterator[LinkingDoc]:
    """Yield every stored document that links to `doctype` `name`."""
    for meta in doctypes.DOCTYPES.values():
        for doc in docs[meta.name].values():
            if doc is docs[doctype].get(name):
                continue
            status = int(doc.get("docstatus") or 0)
            if _points_at(meta, doc, doctype, name):
                yield LinkingDoc(meta.name, doc["name"], status, None)
            for table in meta.tables:
                child = doctypes.get_table(str(table.options))
                for row in doc.get(table.name) or []:
                    if _points_at(child, row, doctype, name):
                        yield LinkingDoc(meta.name, doc["name"], status, row["idx"])


def _points_at(meta: DocType, doc: Mapping[str, Any], doctype: str, name: str) -> bool:
    for f in meta.fields:
        target = f.options if f.kind == "Link" else None
        if f.kind == "Dynamic Link":
            target = doc.get(str(f.options))
        if target == doctype and doc.get(f.name) == name:
            return True
    return False


def refuse_delete(doc: Mapping[str, Any], linking: Iterator[LinkingDoc]) -> None:
    """Refuse deleting a submitted document, or one a live document links to."""
    doctype, name = doc["doctype"], doc["name"]
    if doc.get("docstatus") == SUBMITTED:
        raise FrappeError(
            "ValidationError",
            f"{doctype} {name}: Submitted Record cannot be deleted. "
            "You must Cancel it first.",
        )
    # Links from cancelled documents do not hold a deletion back.
    blocking = next((ln for ln in linking if ln.docstatus != CANCELLED), None)
    if blocking is not None:
        raise blocking.refusal(doctype, name)


def refuse_cancel(doc: Mapping[str, Any], linking: Iterator[LinkingDoc]) -> None:
    """Refuse cancelling a document that a submitted document links to."""
    blocking = next((ln for ln in linking if ln.docstatus == SUBMITTED), None)
    if blocking is not None:
        raise blocking.refusal(doc["doctype"], doc["name"])
