"""Named mappings: reusable, documented rules that turn one record into another.

A mapping file (``mappings/<name>.yaml`` beside the flows) names its source
and target, lists each target field with where its value comes from, the
converters applied in order, and what happens when the source is missing or
empty. Flows use it with a ``transform`` step; ``lobflows map`` runs it over a
file of records; ``lobflows docs`` turns it into a table.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from lobflows import errors
from lobflows.spec.models import NAME_PATTERN, Model

SENSITIVE = ("pii", "secret", "confidential")


class MappedField(Model):
    """One target field: its source, converters, gap policies and whether it is required."""

    from_: str | None = Field(
        default=None,
        alias="from",
        description="Dotted path into the record, e.g. fields.hireDate or lines.0.sku.",
    )
    value: str | None = Field(
        default=None, description="Template over `record`, e.g. {{ record.first }}."
    )
    constant: Any = Field(default=None, description="A fixed value.")
    convert: list[str | dict[str, Any]] = Field(
        default_factory=list,
        description="Converters applied in order, e.g. [trim, {date: {format: '%d/%m/%Y'}}].",
    )
    table: str | None = Field(
        default=None,
        description="A value table of the mapping the result is looked up in.",
    )
    required: bool = Field(
        default=False,
        description="Missing or empty is an error (the record is rejected).",
    )
    on_missing: Literal["error", "skip", "null", "default"] = Field(
        default="skip", description="When the source is absent."
    )
    on_null: Literal["keep", "null", "error", "skip", "default"] = Field(
        default="keep", description="When the source is null or empty text."
    )
    default: Any = Field(default=None, description="Used by the default policies.")
    each: str | None = Field(
        default=None,
        pattern=NAME_PATTERN,
        description="A mapping applied to each element of a list source.",
    )
    fields: dict[str, MappedField | str] | None = Field(
        default=None, description="Fields of a sub-object, read from the source object."
    )

    @field_validator("on_missing", "on_null", mode="before")
    @classmethod
    def _yaml_null(cls, value: Any) -> Any:
        return "null" if value is None else value

    @model_validator(mode="after")
    def _consistent(self) -> MappedField:
        sources = [
            name
            for name, given in (
                ("from", self.from_ is not None),
                ("value", self.value is not None),
                ("constant", "constant" in self.model_fields_set),
            )
            if given
        ]
        if len(sources) != 1:
            raise ValueError("expected exactly one of: from, value, constant")
        if self.each is not None and self.fields is not None:
            raise ValueError("expected at most one of: each, fields")
        if (self.each or self.fields) and self.convert:
            raise ValueError("convert applies to values, not to each or fields")
        return self

    def source_text(self) -> str:
        """Where the value comes from, as the docs and the trace show it."""
        if self.from_ is not None:
            return self.from_
        if self.value is not None:
            return self.value
        return repr(self.constant)


class MappingSpec(Model):
    """A named, reusable mapping of one record to another."""

    mapping: str = Field(pattern=NAME_PATTERN, description="The mapping's name.")
    description: str | None = None
    source: str = Field(min_length=1, description="What records come in, in words.")
    target: str = Field(min_length=1, description="What records go out, in words.")
    sensitivity: Literal["public", "internal", "confidential", "pii", "secret"] = Field(
        default="internal",
        description="pii, secret and confidential values are masked in errors and traces.",
    )
    filter: str | None = Field(
        default=None,
        description="Condition over `record`; records for which it is false are dropped.",
    )
    fields: dict[str, MappedField | str] = Field(
        min_length=1, description="Target field to rule; a bare string is a path."
    )
    tables: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Value tables: source value to target value."
    )
    output_schema: dict[str, Any] | None = Field(
        default=None, description="JSON Schema every output record must satisfy."
    )

    @property
    def is_sensitive(self) -> bool:
        return self.sensitivity in SENSITIVE


MappedField.model_rebuild()


def field_rule(rule: MappedField | str) -> MappedField:
    """A bare string is shorthand for a path."""
    return MappedField(from_=rule) if isinstance(rule, str) else rule


@dataclass(frozen=True)
class LoadedMapping:
    name: str
    path: str
    spec: MappingSpec
    document: dict[str, Any]


def mapping_files(folder: Path) -> list[Path]:
    """The mapping files of a flows folder: ``mappings/*.yaml``."""
    directory = folder / "mappings"
    if not directory.is_dir():
        return []
    return sorted(
        p
        for p in directory.iterdir()
        if p.is_file() and p.suffix in (".yaml", ".yml") and not p.name.startswith(".")
    )


def nested_names(spec: MappingSpec) -> list[str]:
    """The mappings a mapping applies to list elements (`each`), at any depth."""
    found: list[str] = []

    def walk(fields: dict[str, Any]) -> None:
        for raw in fields.values():
            rule = field_rule(raw)
            if rule.each is not None:
                found.append(rule.each)
            if rule.fields:
                walk(rule.fields)

    walk(spec.fields)
    return found


def mapping_problem(path: str, message: str) -> errors.FlowFileError:
    return errors.FlowFileError(
        path, [errors.Problem(path=path, line=None, field="", message=message)]
    )
