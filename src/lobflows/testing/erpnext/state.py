"""In-memory documents, counters and queued faults of one stand-in site."""

from __future__ import annotations

import copy
import secrets
import threading
from collections import Counter
from collections.abc import Mapping
from datetime import date, datetime, timedelta
from typing import Any

from lobflows.testing.erpnext import lifecycle, tables, validation
from lobflows.testing.erpnext.doctypes import (
    DOCTYPES,
    PROTECTED,
    SEED,
    STANDARD_COLUMNS,
    get_doctype,
)
from lobflows.testing.erpnext.errors import FrappeError
from lobflows.testing.erpnext.filters import order_rows, parse_filters
from lobflows.testing.erpnext.meta import TODAY, DocType, is_blank
from lobflows.testing.faults import Fault, FaultQueue, under

API_USER = "Administrator"


class ErpnextState:
    """Documents, request counters and queued faults of one stand-in site."""

    def __init__(self, *, api_key: str, api_secret: str) -> None:
        self.api_key = api_key
        self.api_secret = api_secret
        self.lock = threading.RLock()
        self.docs: dict[str, dict[str, dict[str, Any]]] = {}
        self.request_counts: Counter[str] = Counter()
        self.faults = FaultQueue(under("/api"))
        self._series: Counter[str] = Counter()
        self._last_stamp = datetime.min
        self.reset()

    def reset(self) -> None:
        """Forget all documents, counters and faults, then re-seed."""
        with self.lock:
            self.docs = {name: {} for name in DOCTYPES}
            self.request_counts.clear()
            self.faults.clear()
            self._series.clear()
            for doctype, data in SEED:
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
        return self.faults.add(
            status, count=count, body=body, headers=headers, match=match, delay=delay
        )

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
        return self.faults.add_drop(count=count, match=match, status=status, body=body)

    def take_fault(self, method: str, path: str, *, after: bool) -> Fault | None:
        """Consume one use of the first pending fault matching a request."""
        return self.faults.take(method, path, after=after)

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
                "faults": self.faults.describe(),
            }

    # documents ---------------------------------------------------------------

    def exists(self, doctype: str, name: str) -> bool:
        """Tell whether a document exists."""
        with self.lock:
            return self._lookup(doctype, name) is not None

    def get(self, doctype: str, name: str) -> dict[str, Any]:
        """Return a copy of one stored document, nulls included."""
        get_doctype(doctype)
        with self.lock:
            return copy.deepcopy(self._stored(doctype, name))

    def insert(self, doctype: str, data: Mapping[str, Any]) -> dict[str, Any]:
        """Validate and store a new document; return it with nulls.

        A submittable document sent with ``docstatus`` 1 is submitted at once.
        """
        meta = get_doctype(doctype)
        wanted = lifecycle.wanted_docstatus(meta, lifecycle.DRAFT, data)
        lifecycle.action_for(lifecycle.DRAFT, wanted)
        with self.lock:
            doc = {f.name: _default(f.kind, f.default) for f in meta.fields}
            doc.update({k: v for k, v in data.items() if k not in PROTECTED})
            # Frappe sets these itself; only prompt-named doc types take a name.
            doc.pop("modified", None)
            sent_name = doc.pop("name", None)
            tables.shape_rows(meta, doc)
            validation.validate_document(meta, doc, "new", self._lookup)
            name = self._new_name(meta, doc, sent_name)
            stamp = self._stamp()
            doc = {
                "name": name,
                "owner": API_USER,
                "creation": stamp,
                "modified": stamp,
                "modified_by": API_USER,
                "docstatus": wanted,
                "idx": 0,
                **doc,
                "doctype": doctype,
            }
            tables.stamp_rows(meta, doc)
            self.docs[doctype][name] = doc
            return copy.deepcopy(doc)

    def update(
        self, doctype: str, name: str, data: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Merge `data` into a stored document and save it as Frappe would.

        A ``docstatus`` in `data` submits or cancels a submittable document;
        see `lifecycle` for the transitions allowed.
        """
        meta = get_doctype(doctype)
        with self.lock:
            stored = self._stored(doctype, name)
            _check_modified(stored, data.get("modified"))
            wanted = lifecycle.wanted_docstatus(meta, stored["docstatus"], data)
            action = lifecycle.action_for(stored["docstatus"], wanted)
            changes = {k: v for k, v in data.items() if k not in PROTECTED}
            changes.pop("name", None)
            changes.pop("modified", None)
            doc = {**copy.deepcopy(stored), **changes}
            tables.shape_rows(meta, doc, stored)
            self._check_save(action, meta, stored, doc)
            doc.update(docstatus=wanted, modified=self._stamp(), modified_by=API_USER)
            tables.stamp_rows(meta, doc)
            self.docs[doctype][name] = doc
            return copy.deepcopy(doc)

    def cancel(self, doctype: str, name: str) -> dict[str, Any]:
        """Cancel a submitted document, as ``frappe.client.cancel`` does."""
        get_doctype(doctype)
        with self.lock:
            stored = self._stored(doctype, name)
            # Raised here too for doc types that cannot be submitted at all.
            lifecycle.action_for(stored["docstatus"], lifecycle.CANCELLED)
            return self.update(doctype, name, {"docstatus": lifecycle.CANCELLED})

    def delete(self, doctype: str, name: str) -> None:
        """Delete a document unless it is submitted or a live document links to it."""
        get_doctype(doctype)
        with self.lock:
            stored = self._stored(doctype, name)
            linking = lifecycle.links_to(self.docs, doctype, name)
            lifecycle.refuse_delete(stored, linking)
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
        get_doctype(doctype)
        every = parse_filters(doctype, filters)
        some = parse_filters(doctype, or_filters)
        # Filtered under the lock, copied after: a lookup by one field costs
        # a pass over the documents, not a copy of every one of them.
        with self.lock:
            hits = [
                d
                for d in self.docs[doctype].values()
                if all(c.test(d) for c in every)
                and (not some or any(c.test(d) for c in some))
            ]
            hits = [dict(d) for d in hits]
        return order_rows(hits, order_by)

    def columns(self, doctype: str) -> list[str]:
        """Return the table's columns: standard, declared, then custom fields."""
        meta = get_doctype(doctype)
        tables = {f.name for f in meta.tables}
        names = [*STANDARD_COLUMNS, *(f.name for f in meta.fields)]
        with self.lock:
            for doc in self.docs[doctype].values():
                names.extend(doc)
        return [n for n in dict.fromkeys(names) if n not in tables and n != "doctype"]

    # internals ---------------------------------------------------------------

    def _lookup(self, doctype: str, name: str) -> Mapping[str, Any] | None:
        # Links to "DocType" (party types, reference types) name a doc type.
        if doctype == "DocType":
            return {"name": name, "docstatus": 0} if name in DOCTYPES else None
        return self.docs.get(doctype, {}).get(name)

    def _stored(self, doctype: str, name: str) -> dict[str, Any]:
        doc = self.docs[doctype].get(name)
        if doc is None:
            raise FrappeError("DoesNotExistError", f"{doctype} {name} not found")
        return doc

    def _check_save(
        self,
        action: str,
        meta: DocType,
        stored: Mapping[str, Any],
        doc: dict[str, Any],
    ) -> None:
        if action == "update_after_submit":
            validation.cast_numbers(meta, doc)
            lifecycle.refuse_changes_after_submit(meta, stored, doc)
        elif action == "cancel":
            # A cancel is not validated, only held back by submitted links here.
            linking = lifecycle.links_to(self.docs, meta.name, stored["name"])
            lifecycle.refuse_cancel(stored, linking)
        else:
            validation.validate_document(meta, doc, stored["name"], self._lookup)

    def _new_name(self, meta: DocType, doc: Mapping[str, Any], sent_name: Any) -> str:
        if meta.naming == "hash":
            name = secrets.token_hex(5)
            while self.exists(meta.name, name):
                name = secrets.token_hex(5)
            return name
        if meta.naming == "series":
            return self._next_in_series(str(doc.get("naming_series") or ""))
        if meta.naming == "prompt":
            if is_blank(sent_name):
                raise FrappeError("ValidationError", "Name not set via prompt")
            name = str(sent_name).strip()
        else:
            name = str(doc[meta.naming.removeprefix("field:")]).strip()
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


def _default(kind: str, value: Any) -> Any:
    if kind == "Date" and value == TODAY:
        return date.today().isoformat()
    return value


def _check_modified(stored: Mapping[str, Any], sent: Any) -> None:
    if sent is not None and sent != stored["modified"]:
        raise FrappeError(
            "TimestampMismatchError",
            "Error: Document has been modified after you have opened it "
            f"({sent}, {stored['modified']}). "
            "Please refresh to get the latest document.",
        )
