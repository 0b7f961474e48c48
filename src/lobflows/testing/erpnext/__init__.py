"""In-memory stand-in for the Frappe v1 REST API as an ERPNext site serves it.

The app keeps documents in memory and answers with Frappe's v1 envelopes:
``{"data": ...}`` for resources, ``{"message": ...}`` for methods, and
``{"exc_type": ..., "_server_messages": ...}`` (double-encoded) for errors.

Doc types: the HR ones (Employee, User, Gender, Company), ToDo and Material
Request; the purchase-to-payment chain (Supplier, Item, Purchase Order,
Purchase Receipt, Purchase Invoice, Payment Entry, with child table rows);
and the help desk's Issue. Orders, receipts, invoices and payments are
submittable: ``PUT`` with ``docstatus`` 1 submits, ``docstatus`` 2 or
``POST /api/method/frappe.client.cancel`` cancels, as on a real site.

String comparisons in filters and sorting ignore case, as on the usual
MariaDB-backed site. Control endpoints live under ``/__standin__/`` and need
no authentication; see `create_erpnext_app`.
"""

from __future__ import annotations

from lobflows.testing.erpnext.app import (
    ALL_METHODS,
    DEFAULT_PAGE_LENGTH,
    NO_CACHE,
    create_erpnext_app,
)
from lobflows.testing.erpnext.errors import FrappeError, encode_server_messages
from lobflows.testing.erpnext.filters import parse_filters
from lobflows.testing.erpnext.state import API_USER, ErpnextState
from lobflows.testing.faults import Fault

__all__ = [
    "ALL_METHODS",
    "API_USER",
    "DEFAULT_PAGE_LENGTH",
    "NO_CACHE",
    "ErpnextState",
    "Fault",
    "FrappeError",
    "create_erpnext_app",
    "encode_server_messages",
    "parse_filters",
]
