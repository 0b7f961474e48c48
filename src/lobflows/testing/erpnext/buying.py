"""The doc types a purchase goes through, from supplier and item to payment.

Each keeps the fields a flow needs from ERPNext's own definition, with the
same field names, required flags, Link targets and Select options. Left out
on purpose: accounts, warehouses, taxes, currencies and price lists, so
totals are plain sums of ``qty * rate`` in the company currency.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lobflows.testing.erpnext.errors import FrappeError
from lobflows.testing.erpnext.meta import TODAY, DocType, Field, Lookup, money


def _company() -> Field:
    return Field("company", "Company", "Link", required=True, options="Company")


def _supplier() -> tuple[Field, Field]:
    return (
        Field("supplier", "Supplier", "Link", required=True, options="Supplier"),
        Field("supplier_name", "Supplier Name", fetch_from="supplier.supplier_name"),
    )


def _item_row_fields() -> tuple[Field, ...]:
    return (
        Field("item_code", "Item Code", "Link", required=True, options="Item"),
        Field("item_name", "Item Name", fetch_from="item_code.item_name"),
        Field("qty", "Quantity", "Float", required=True),
        Field("uom", "UOM", "Link", options="UOM", fetch_from="item_code.stock_uom"),
        Field("rate", "Rate", "Currency", default=0.0),
        Field("amount", "Amount", "Currency"),
    )


def _totals() -> tuple[Field, Field]:
    return (
        Field("total", "Total", "Currency"),
        Field("grand_total", "Grand Total", "Currency"),
    )


def _rows(doc: Mapping[str, Any], table: str) -> list[dict[str, Any]]:
    return list(doc.get(table) or [])


def _compute_item(doc: dict[str, Any]) -> None:
    doc["item_name"] = doc.get("item_name") or doc.get("item_code")


def _compute_amounts(doc: dict[str, Any]) -> None:
    total = 0.0
    for row in _rows(doc, "items"):
        row["amount"] = money((row.get("qty") or 0.0) * (row.get("rate") or 0.0))
        total += row["amount"]
    doc["total"] = doc["grand_total"] = money(total)


def _check_quantities(doc: Mapping[str, Any], lookup: Lookup) -> None:
    for row in _rows(doc, "items"):
        if not row.get("qty"):
            raise FrappeError(
                "InvalidQtyError",
                f"Row #{row['idx']}: Quantity for Item "
                f"<strong>{row['item_code']}</strong> cannot be zero.",
                title="Invalid Quantity",
            )


def _compute_order(doc: dict[str, Any]) -> None:
    rows = _rows(doc, "items")
    for row in rows:
        row["schedule_date"] = row.get("schedule_date") or doc.get("schedule_date")
    dates = [row["schedule_date"] for row in rows if row.get("schedule_date")]
    if not doc.get("schedule_date") and dates:
        doc["schedule_date"] = min(str(d) for d in dates)
    _compute_amounts(doc)


def _validate_order(doc: Mapping[str, Any], lookup: Lookup) -> None:
    ordered_on = str(doc["transaction_date"])
    for row in _rows(doc, "items"):
        if str(row["schedule_date"]) < ordered_on:
            raise FrappeError(
                "ValidationError",
                f"Row #{row['idx']}: Reqd by Date cannot be before Transaction Date",
            )
    _check_quantities(doc, lookup)


def _compute_payment(doc: dict[str, Any]) -> None:
    paid = doc.get("paid_amount") or 0.0
    allocated = sum(
        row.get("allocated_amount") or 0.0 for row in _rows(doc, "references")
    )
    doc["received_amount"] = money(paid)
    doc["total_allocated_amount"] = money(allocated)
    doc["unallocated_amount"] = money(paid - allocated)


def _party_required(doc: Mapping[str, Any]) -> list[str]:
    return (
        ["party_type", "party"] if doc.get("payment_type") in ("Receive", "Pay") else []
    )


# ERPNext lets a payment to a supplier settle only these doc types.
_SUPPLIER_REFERENCES = ("Purchase Order", "Purchase Invoice", "Journal Entry")


def _validate_payment(doc: Mapping[str, Any], lookup: Lookup) -> None:
    if not doc.get("paid_amount"):
        raise FrappeError("ValidationError", "Paid Amount is mandatory")
    for row in _rows(doc, "references"):
        _check_reference(doc, row, lookup)


def _check_reference(
    doc: Mapping[str, Any], row: Mapping[str, Any], lookup: Lookup
) -> None:
    doctype, name = str(row["reference_doctype"]), str(row["reference_name"])
    if doc.get("party_type") == "Supplier" and doctype not in _SUPPLIER_REFERENCES:
        allowed = ", ".join(_SUPPLIER_REFERENCES[:-1])
        raise FrappeError(
            "ValidationError",
            f"Reference Doctype must be one of {allowed} or {_SUPPLIER_REFERENCES[-1]}",
        )
    referenced = lookup(doctype, name) or {}
    if referenced.get("docstatus") != 1:
        raise FrappeError("ValidationError", f"{doctype} {name} must be submitted")
    party = referenced.get("supplier")
    if party is not None and party != doc.get("party"):
        raise FrappeError(
            "ValidationError",
            f"{doctype} {name} is not associated with {doc.get('party_type')} "
            f"{doc.get('party')}",
        )


TABLES = (
    DocType(
        "Purchase Order Item",
        (
            *_item_row_fields(),
            Field("schedule_date", "Required By", "Date", required=True),
        ),
        is_table=True,
    ),
    DocType(
        "Purchase Receipt Item",
        (
            *_item_row_fields(),
            Field("purchase_order", "Purchase Order", "Link", options="Purchase Order"),
        ),
        is_table=True,
    ),
    DocType(
        "Purchase Invoice Item",
        (
            *_item_row_fields(),
            Field("purchase_order", "Purchase Order", "Link", options="Purchase Order"),
            Field(
                "purchase_receipt",
                "Purchase Receipt",
                "Link",
                options="Purchase Receipt",
            ),
        ),
        is_table=True,
    ),
    DocType(
        "Payment Entry Reference",
        (
            Field("reference_doctype", "Type", "Link", True, "DocType"),
            Field("reference_name", "Name", "Dynamic Link", True, "reference_doctype"),
            Field("allocated_amount", "Allocated", "Float"),
        ),
        is_table=True,
    ),
)

DOCTYPES = (
    DocType(
        "Supplier Group",
        (Field("supplier_group_name", "Supplier Group Name", required=True),),
        naming="field:supplier_group_name",
    ),
    DocType(
        "Item Group",
        (Field("item_group_name", "Item Group Name", required=True),),
        naming="field:item_group_name",
    ),
    DocType(
        "UOM",
        (Field("uom_name", "UOM Name", required=True),),
        naming="field:uom_name",
    ),
    DocType(
        "Supplier",
        (
            Field("supplier_name", "Supplier Name", required=True),
            Field(
                "supplier_type",
                "Supplier Type",
                "Select",
                required=True,
                options=("Company", "Individual", "Partnership"),
                default="Company",
            ),
            Field("supplier_group", "Supplier Group", "Link", options="Supplier Group"),
            Field("country", "Country"),
            Field("email_id", "Email Id", "Email"),
            Field("mobile_no", "Mobile No"),
            Field("tax_id", "Tax ID"),
            Field("disabled", "Disabled", "Check", default=0),
        ),
        naming="field:supplier_name",
    ),
    DocType(
        "Item",
        (
            Field("item_code", "Item Code", required=True),
            Field("item_name", "Item Name", required=True),
            Field("item_group", "Item Group", "Link", True, "Item Group"),
            Field("stock_uom", "Default Unit of Measure", "Link", True, "UOM", "Nos"),
            Field("description", "Description", "Text"),
            Field("is_stock_item", "Maintain Stock", "Check", default=1),
            Field("disabled", "Disabled", "Check", default=0),
        ),
        naming="field:item_code",
        compute=_compute_item,
    ),
    DocType(
        "Purchase Order",
        (
            Field("naming_series", "Series", default="PUR-ORD-.YYYY.-"),
            *_supplier(),
            Field("transaction_date", "Date", "Date", required=True, default=TODAY),
            Field("schedule_date", "Required By", "Date"),
            _company(),
            Field("items", "Items", "Table", True, "Purchase Order Item"),
            *_totals(),
        ),
        naming="series",
        is_submittable=True,
        compute=_compute_order,
        validate=_validate_order,
    ),
    DocType(
        "Purchase Receipt",
        (
            Field("naming_series", "Series", default="MAT-PRE-.YYYY.-"),
            *_supplier(),
            Field("posting_date", "Posting Date", "Date", required=True, default=TODAY),
            _company(),
            Field("items", "Items", "Table", True, "Purchase Receipt Item"),
            *_totals(),
        ),
        naming="series",
        is_submittable=True,
        compute=_compute_amounts,
        validate=_check_quantities,
    ),
    DocType(
        "Purchase Invoice",
        (
            Field("naming_series", "Series", default="ACC-PINV-.YYYY.-"),
            *_supplier(),
            Field("posting_date", "Posting Date", "Date", required=True, default=TODAY),
            _company(),
            Field("bill_no", "Supplier Invoice No"),
            Field("bill_date", "Supplier Invoice Date", "Date"),
            Field("items", "Items", "Table", True, "Purchase Invoice Item"),
            *_totals(),
        ),
        naming="series",
        is_submittable=True,
        compute=_compute_amounts,
        validate=_check_quantities,
    ),
    DocType(
        "Payment Entry",
        (
            Field("naming_series", "Series", default="ACC-PAY-.YYYY.-"),
            Field(
                "payment_type",
                "Payment Type",
                "Select",
                required=True,
                options=("Receive", "Pay", "Internal Transfer"),
                default="Receive",
            ),
            Field("party_type", "Party Type", "Link", options="DocType"),
            Field("party", "Party", "Dynamic Link", options="party_type"),
            Field("posting_date", "Posting Date", "Date", required=True, default=TODAY),
            _company(),
            Field("paid_amount", "Paid Amount", "Currency", required=True),
            Field("received_amount", "Received Amount", "Currency"),
            Field("reference_no", "Cheque/Reference No"),
            Field("reference_date", "Cheque/Reference Date", "Date"),
            Field(
                "references",
                "Payment References",
                "Table",
                options="Payment Entry Reference",
            ),
            Field("total_allocated_amount", "Total Allocated Amount", "Currency"),
            Field("unallocated_amount", "Unallocated Amount", "Currency"),
        ),
        naming="series",
        is_submittable=True,
        compute=_compute_payment,
        required_when=_party_required,
        validate=_validate_payment,
    ),
)


def _named(doctype: str, key: str, *names: str) -> list[tuple[str, dict[str, Any]]]:
    return [(doctype, {key: name}) for name in names]


SEED: tuple[tuple[str, dict[str, Any]], ...] = (
    *_named("UOM", "uom_name", "Nos", "Unit", "Box", "Hour", "Kg"),
    *_named(
        "Supplier Group",
        "supplier_group_name",
        "All Supplier Groups",
        "Distributor",
        "Hardware",
        "Services",
        "Raw Material",
    ),
    *_named(
        "Item Group",
        "item_group_name",
        "All Item Groups",
        "Products",
        "Consumable",
        "Services",
        "Raw Material",
    ),
    (
        "Supplier",
        {
            "supplier_name": "Acme Office Supplies",
            "supplier_group": "Distributor",
            "email_id": "orders@acme.example",
            "country": "United States",
        },
    ),
    ("Supplier", {"supplier_name": "Northwind Hardware", "supplier_group": "Hardware"}),
    (
        "Supplier",
        {"supplier_name": "Bright Facilities Services", "supplier_group": "Services"},
    ),
    (
        "Item",
        {
            "item_code": "PAPER-A4",
            "item_name": "A4 copy paper, 500 sheets",
            "item_group": "Consumable",
            "stock_uom": "Box",
        },
    ),
    (
        "Item",
        {
            "item_code": "LAPTOP-14",
            "item_name": "14-inch laptop",
            "item_group": "Products",
        },
    ),
    (
        "Item",
        {
            "item_code": "DESK-CHAIR",
            "item_name": "Desk chair",
            "item_group": "Products",
        },
    ),
    (
        "Item",
        {
            "item_code": "SVC-CLEANING",
            "item_name": "Office cleaning",
            "item_group": "Services",
            "stock_uom": "Hour",
            "is_stock_item": 0,
        },
    ),
)
