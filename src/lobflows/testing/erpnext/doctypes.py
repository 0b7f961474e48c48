"""The stand-in's doc types and seed documents, gathered from each area."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lobflows.testing.erpnext import buying, support
from lobflows.testing.erpnext.errors import FrappeError
from lobflows.testing.erpnext.meta import DocType, Field

STANDARD_COLUMNS = (
    "name",
    "owner",
    "creation",
    "modified",
    "modified_by",
    "docstatus",
    "idx",
)
# Keys a client cannot set through create or update.
PROTECTED = frozenset(
    {"doctype", "flags", "owner", "creation", "modified_by", "docstatus", "idx"}
)
# Keys of a child table row that the parent document sets.
ROW_PROTECTED = PROTECTED | {"parent", "parentfield", "parenttype", "modified"}


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


_CORE = (
    DocType(
        "Gender",
        (Field("gender", "Gender", required=True),),
        naming="field:gender",
    ),
    DocType(
        "Company",
        (
            Field("company_name", "Company", required=True),
            Field("abbr", "Abbr"),
            Field("default_currency", "Default Currency"),
            Field("country", "Country"),
        ),
        naming="field:company_name",
    ),
    DocType(
        "User",
        (
            Field("email", "Email", "Email", required=True),
            Field("first_name", "First Name", required=True),
            Field("middle_name", "Middle Name"),
            Field("last_name", "Last Name"),
            Field("full_name", "Full Name"),
            Field("enabled", "Enabled", "Check", default=1),
            Field(
                "user_type",
                "User Type",
                "Select",
                options=("System User", "Website User"),
                default="System User",
            ),
            Field("send_welcome_email", "Send Welcome Email", "Check", default=1),
            Field("mobile_no", "Mobile No"),
            Field("language", "Language"),
            Field("time_zone", "Time Zone"),
        ),
        naming="field:email",
        compute=_compute_user,
    ),
    DocType(
        "Employee",
        (
            Field("naming_series", "Series", default="HR-EMP-"),
            Field("first_name", "First Name", required=True),
            Field("middle_name", "Middle Name"),
            Field("last_name", "Last Name"),
            Field("employee_name", "Full Name"),
            Field("gender", "Gender", "Link", True, "Gender"),
            Field("date_of_birth", "Date of Birth", "Date", required=True),
            Field("date_of_joining", "Date of Joining", "Date", required=True),
            Field("company", "Company", "Link", True, "Company"),
            Field(
                "status",
                "Status",
                "Select",
                required=True,
                options=("Active", "Inactive", "Suspended", "Left"),
                default="Active",
            ),
            Field("user_id", "User ID", "Link", options="User"),
            Field("relieving_date", "Relieving Date", "Date"),
            Field("employee_number", "Employee Number"),
            Field("designation", "Designation"),
            Field("department", "Department"),
            Field("personal_email", "Personal Email"),
            Field("company_email", "Company Email"),
            Field("cell_number", "Mobile"),
        ),
        naming="series",
        compute=_compute_employee,
        required_when=_employee_conditional,
    ),
    DocType(
        "ToDo",
        (
            Field(
                "status",
                "Status",
                "Select",
                options=("Open", "Closed", "Cancelled"),
                default="Open",
            ),
            Field(
                "priority",
                "Priority",
                "Select",
                options=("High", "Medium", "Low"),
                default="Medium",
            ),
            Field("date", "Due Date", "Date"),
            Field("allocated_to", "Allocated To", "Link", options="User"),
            Field("description", "Description", "Text", required=True),
            Field("reference_type", "Reference Type"),
            Field("reference_name", "Reference Name"),
        ),
        naming="hash",
    ),
    DocType(
        "Material Request",
        (
            Field("naming_series", "Series", default="MAT-MR-.YYYY.-"),
            Field(
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
            Field("transaction_date", "Date", "Date"),
            Field("schedule_date", "Required By", "Date"),
            Field("company", "Company", "Link", options="Company"),
            Field("title", "Title"),
        ),
        naming="series",
    ),
)

_CORE_SEED: tuple[tuple[str, dict[str, Any]], ...] = (
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

DOCTYPES: dict[str, DocType] = {
    d.name: d for d in (*_CORE, *buying.DOCTYPES, *support.DOCTYPES)
}
TABLES: dict[str, DocType] = {d.name: d for d in buying.TABLES}
SEED = (*_CORE_SEED, *buying.SEED, *support.SEED)


def get_doctype(name: str) -> DocType:
    """Return a doc type, or raise DoesNotExistError."""
    meta = DOCTYPES.get(name)
    if meta is None:
        raise FrappeError("DoesNotExistError", f"DocType {name} not found")
    return meta


def get_table(name: str) -> DocType:
    """Return the doc type of child table rows called `name`."""
    return TABLES[name]


def without_nulls(doc: Mapping[str, Any]) -> dict[str, Any]:
    """Return a copy of `doc` without null values, in its rows too."""
    return {
        k: [without_nulls(r) for r in v] if _is_table(v) else v
        for k, v in doc.items()
        if v is not None
    }


def _is_table(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(r, Mapping) for r in value)
