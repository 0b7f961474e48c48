"""How the stand-in describes a doc type: its fields, naming and hooks."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
NUMERIC_KINDS = frozenset({"Float", "Currency", "Int"})
TODAY = "Today"  # a Date default that Frappe resolves to the current date

# Reads a stored document by doc type and name; None when there is none.
Lookup = Callable[[str, str], Mapping[str, Any] | None]


@dataclass(frozen=True)
class Field:
    """One declared field of a doc type.

    `options` is the target doc type of a Link, the field holding the target
    doc type of a Dynamic Link, the row doc type of a Table, or the allowed
    values of a Select. `fetch_from` (``"link_field.source_field"``) fills a
    blank value from the linked document, as Frappe's *Fetch From* does.
    """

    name: str
    label: str
    kind: str = "Data"
    required: bool = False
    options: str | tuple[str, ...] | None = None
    default: Any = None
    fetch_from: str | None = None


@dataclass(frozen=True)
class DocType:
    """A doc type: its fields, naming rule and controller hooks.

    `naming` is ``"field:<name>"``, ``"series"`` (from ``naming_series``),
    ``"hash"`` or ``"prompt"`` (the client sends ``name``). `compute` sets
    derived values before validation; `validate` runs the controller's own
    checks after the generic ones and may read other documents.
    """

    name: str
    fields: tuple[Field, ...]
    naming: str = "hash"
    is_submittable: bool = False
    is_table: bool = False
    compute: Callable[[dict[str, Any]], None] | None = None
    required_when: Callable[[Mapping[str, Any]], list[str]] | None = None
    validate: Callable[[Mapping[str, Any], Lookup], None] | None = None

    def field(self, name: str) -> Field | None:
        """Return the declared field called `name`, if any."""
        return next((f for f in self.fields if f.name == name), None)

    @property
    def tables(self) -> tuple[Field, ...]:
        """The Table fields, whose values are lists of rows."""
        return tuple(f for f in self.fields if f.kind == "Table")


def is_blank(value: Any) -> bool:
    """Tell whether a value counts as empty, as Frappe does."""
    return value is None or value == [] or not str(value).strip()


def money(value: float) -> float:
    """Round to the default currency precision of two decimals."""
    return round(float(value), 2)
