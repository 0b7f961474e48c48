"""In-memory documents, counters and queued faults of one stand-in site."""

from __future__ import annotations

import secrets
import threading
from collections import Counter
from collections.abc import Mapping
from datetime import date, datetime, timedelta
from typing import Any

from lobflows.testing.erpnext.doctypes import (
    DOCTYPES,
    PROTECTED,
    SEED,
    STANDARD_COLUMNS,
    DocType,
    check_formats,
    check_links,
    check_mandatory,
    get_doctype,
)
from lobflows.testing.erpnext.errors import FrappeError
from lobflows.testing.erpnext.filters import order_rows, parse_filters
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
        return name in self.docs.get(doctype, {})

    def get(self, doctype: str, name: str) -> dict[str, Any]:
        """Return a copy of one stored document, nulls included."""
        get_doctype(doctype)
        with self.lock:
            doc = self.docs[doctype].get(name)
            if doc is None:
                raise FrappeError("DoesNotExistError", f"{doctype} {name} not found")
            return dict(doc)

    def insert(self, doctype: str, data: Mapping[str, Any]) -> dict[str, Any]:
        """Validate and store a new document; return it with nulls."""
        meta = get_doctype(doctype)
        with self.lock:
            doc = {f.name: f.default for f in meta.fields}
            doc.update({k: v for k, v in data.items() if k not in PROTECTED})
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
        meta = get_doctype(doctype)
        with self.lock:
            current = self.get(doctype, name)
            changes = {k: v for k, v in data.items() if k not in PROTECTED}
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
        get_doctype(doctype)
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
        get_doctype(doctype)
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
        return order_rows(hits, order_by)

    def columns(self, doctype: str) -> list[str]:
        """Return the table's columns: standard, declared, then custom fields."""
        meta = get_doctype(doctype)
        names = [*STANDARD_COLUMNS, *(f.name for f in meta.fields)]
        with self.lock:
            for doc in self.docs[doctype].values():
                names.extend(k for k in doc if k != "doctype")
        return list(dict.fromkeys(names))

    # internals ---------------------------------------------------------------

    def _validate(self, meta: DocType, doc: dict[str, Any], name: str) -> None:
        if meta.compute is not None:
            meta.compute(doc)
        check_links(meta, doc, self.exists)
        check_mandatory(meta, doc, name)
        check_formats(meta, doc)

    def _new_name(self, meta: DocType, doc: Mapping[str, Any]) -> str:
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
        for meta in DOCTYPES.values():
            links = [
                f.name for f in meta.fields if f.kind == "Link" and f.options == doctype
            ]
            for doc in self.docs[meta.name].values() if links else ():
                if any(doc.get(link) == name for link in links):
                    return meta.name, doc["name"]
        return None
