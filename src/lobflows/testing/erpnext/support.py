"""Help desk doc types: ERPNext's Issue and the priorities it links to."""

from __future__ import annotations

from typing import Any

from lobflows.testing.erpnext.meta import TODAY, DocType, Field

DOCTYPES = (
    DocType(
        "Issue Priority",
        (Field("description", "Description", "Text"),),
        naming="prompt",
    ),
    DocType(
        "Issue",
        (
            Field("naming_series", "Series", default="ISS-.YYYY.-"),
            Field("subject", "Subject", required=True),
            Field("raised_by", "Raised By (Email)", "Email"),
            Field(
                "status",
                "Status",
                "Select",
                options=("Open", "Replied", "On Hold", "Resolved", "Closed"),
                default="Open",
            ),
            Field("priority", "Priority", "Link", options="Issue Priority"),
            Field("description", "Description", "Text Editor"),
            Field("opening_date", "Opening Date", "Date", default=TODAY),
            Field("resolution_details", "Resolution Details", "Text"),
        ),
        naming="series",
    ),
)

SEED: tuple[tuple[str, dict[str, Any]], ...] = tuple(
    ("Issue Priority", {"name": level}) for level in ("Low", "Medium", "High", "Urgent")
)
