"""The stand-in's doc types, seed documents and document validation."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from lobflows.testing.erpnext.errors import FrappeError

DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
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


@dataclass(frozen=True)
class Field:
    """One declared field of a doc type."""

    name: str
    label: str
    kind: str = "Data"
    required: bool = False
    options: str | tuple[str, ...] | None = None
    default: Any = None


@dataclass(frozen=True)
class DocType:
    """A doc type: its fields, naming rule and computed values."""

    name: str
    fields: tuple[Field, ...]
    naming: str
    compute: Callable[[dict[str, Any]], None] | None = None
    required_when: Callable[[dict[str, Any]], list[str]] | None = None

    def field(self, name: str) -> Field | None:
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


DOCTYPES: dict[str, DocType] = {
    d.name: d
    for d in (
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
}

SEED: tuple[tuple[str, dict[str, Any]], ...] = (
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


def get_doctype(name: str) -> DocType:
    """Return a doc type, or raise DoesNotExistError."""
    meta = DOCTYPES.get(name)
    if meta is None:
        raise FrappeError("DoesNotExistError", f"DocType {name} not found")
    return meta


def is_blank(value: Any) -> bool:
    """Tell whether a value counts as empty, as Frappe does."""
    return value is None or value == [] or not str(value).strip()


def check_links(
    meta: DocType, doc: Mapping[str, Any], exists: Callable[[str, str], bool]
) -> None:
    """Raise LinkValidationError for links to missing documents."""
    broken = [
        f"{f.label}: {doc[f.name]}"
        for f in meta.fields
        if f.kind == "Link"
        and not is_blank(doc.get(f.name))
        and not exists(str(f.options), str(doc[f.name]))
    ]
    if broken:
        raise FrappeError("LinkValidationError", f"Could not find {', '.join(broken)}")


def check_mandatory(meta: DocType, doc: Mapping[str, Any], name: str) -> None:
    """Raise MandatoryError naming every missing required field."""
    wanted = [f.name for f in meta.fields if f.required]
    if meta.required_when is not None:
        wanted += meta.required_when(doc)
    missing = [n for n in wanted if is_blank(doc.get(n))]
    if not missing:
        return
    labels = [(meta.field(n) or Field(n, n)).label for n in missing]
    messages = [
        {"message": f"Error: Value missing for {meta.name}: {label}"}
        for label in labels
    ]
    text = f"[{meta.name}, {name}]: {', '.join(missing)}"
    raise FrappeError("MandatoryError", messages=messages, text=text)


def check_formats(meta: DocType, doc: Mapping[str, Any]) -> None:
    """Raise for a bad date, Select option or email address."""
    for f in meta.fields:
        value = doc.get(f.name)
        if is_blank(value):
            continue
        if f.kind == "Date":
            _check_date(f, value)
        elif f.kind == "Select" and isinstance(f.options, tuple):
            _check_select(f, value)
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


def _check_select(f: Field, value: Any) -> None:
    assert isinstance(f.options, tuple)
    if value not in f.options:
        allowed = ", ".join(f'"{o}"' for o in f.options)
        raise FrappeError(
            "ValidationError",
            f'{f.label} cannot be "{value}". It should be one of {allowed}',
        )


def without_nulls(doc: Mapping[str, Any]) -> dict[str, Any]:
    """Return a copy of `doc` without its null values."""
    return {k: v for k, v in doc.items() if v is not None}
