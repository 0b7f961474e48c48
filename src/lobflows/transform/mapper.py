"""Running a named mapping over records, with a trace of which rule made each field.

A `Mapper` is built once per mapping (converters parsed, templates compiled,
nested mappings resolved) and then maps record after record. A record that
cannot be mapped is rejected with a `RecordRejected` naming the field, the
rule and the reason; values are masked when the mapping is sensitive.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lobflows import errors
from lobflows.spec.mappings import LoadedMapping, MappedField, field_rule
from lobflows.transform import converters, templates, validation
from lobflows.transform.mapping import ABSENT, is_absent, lookup_path

_SKIP = object()
MASK = validation.MASK


class RecordRejected(errors.StepInputError):
    """A record the mapping cannot map: which field, which rule, why."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"field {field!r}: {reason}", field=field)
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class _Field:
    name: str
    rule: MappedField
    chain: list[converters.Converter]
    template: templates.Template | None
    nested: dict[str, _Field] | None
    # The rule in words, for the trace and the docs; built once.
    description: str

    def describe(self) -> str:
        return self.description


def _describe(rule: MappedField, chain: list[converters.Converter]) -> str:
    parts = [c.describe() for c in chain]
    if rule.table:
        parts.append(f"table {rule.table}")
    if rule.each:
        parts.append(f"each: mapping {rule.each}")
    return " | ".join(parts) or "as is"


class Mapper:
    """One mapping, ready to map records."""

    def __init__(
        self, loaded: LoadedMapping, registry: dict[str, LoadedMapping]
    ) -> None:
        self.loaded = loaded
        self.spec = loaded.spec
        self.name = loaded.name
        self._registry = registry
        self._each: dict[str, Mapper] = {}
        self._filter = (
            templates.compile_condition(self.spec.filter) if self.spec.filter else None
        )
        self.fields = _compile(self.spec.fields)

    def keeps(self, record: Any) -> bool:
        """Whether the mapping's filter lets the record through."""
        if self._filter is None:
            return True
        try:
            return bool(self._filter.render({"record": record}))
        except errors.TemplateError as exc:
            raise RecordRejected("(filter)", str(exc)) from None

    def map(self, record: Any) -> tuple[dict[str, Any], list[dict[str, str]]]:
        """The mapped record and its trace; RecordRejected if a rule cannot be met."""
        if not isinstance(record, dict):
            raise RecordRejected(
                "(record)", f"expected an object, got {type(record).__name__}"
            )
        trace: list[dict[str, str]] = []
        output = self._map_fields(self.fields, record, record, trace, prefix="")
        if self.spec.output_schema is not None:
            found = validation.problems(
                output, self.spec.output_schema, sensitive=self.spec.is_sensitive
            )
            if found:
                raise RecordRejected("(output)", "; ".join(found))
        return output, trace

    def _map_fields(
        self,
        fields: dict[str, _Field],
        source: Any,
        record: Any,
        trace: list[dict[str, str]],
        *,
        prefix: str,
    ) -> dict[str, Any]:
        output: dict[str, Any] = {}
        for name, field in fields.items():
            target = f"{prefix}{name}"
            value, outcome = self._field_value(field, source, record, target)
            trace.append(
                {
                    "field": target,
                    "source": field.rule.source_text(),
                    "rule": field.describe(),
                    "outcome": outcome,
                }
            )
            if value is not _SKIP:
                output[name] = value
        return output

    def _field_value(
        self, field: _Field, source: Any, record: Any, target: str
    ) -> tuple[Any, str]:
        rule = field.rule
        value = self._read(field, source, record, target)
        if is_absent(value):
            return self._gap(rule, rule.on_missing, target, "is missing")
        if value is None or value == "":
            if rule.on_null == "keep" and not rule.required:
                return value, "empty, kept"
            return self._gap(rule, rule.on_null, target, "is empty")
        if field.nested is not None:
            if not isinstance(value, dict):
                raise RecordRejected(
                    target, f"expected an object, got {self._shown(value)}"
                )
            nested = self._map_fields(
                field.nested, value, record, [], prefix=f"{target}."
            )
            return nested, "mapped"
        if rule.each is not None:
            return self._map_each(rule.each, value, target), "mapped each"
        try:
            converted = converters.apply_chain(value, field.chain)
        except converters.ConversionError as exc:
            raise RecordRejected(target, self._masked(str(exc), value)) from None
        if rule.table is not None:
            converted = self._look_up(rule.table, converted, target)
        if converted is None and rule.required:
            raise RecordRejected(
                target,
                f"{rule.source_text()} became empty after {field.describe()}, "
                "and the field is required",
            )
        return converted, "set"

    def _read(self, field: _Field, source: Any, record: Any, target: str) -> Any:
        rule = field.rule
        if rule.from_ is not None:
            return lookup_path(source, rule.from_)
        if field.template is not None:
            try:
                return field.template.render({"record": record})
            except templates.MissingValueError:
                return ABSENT
            except errors.TemplateError as exc:
                raise RecordRejected(target, str(exc)) from None
        return rule.constant

    def _gap(
        self, rule: MappedField, policy: str, target: str, what: str
    ) -> tuple[Any, str]:
        if rule.required or policy == "error":
            raise RecordRejected(
                target,
                f"source {rule.source_text()!r} {what}, and the field requires a value",
            )
        if policy == "skip":
            return _SKIP, f"{what.removeprefix('is ')}, skipped"
        if policy == "null":
            return None, f"{what.removeprefix('is ')}, null"
        return rule.default, f"{what.removeprefix('is ')}, default"

    def _map_each(self, name: str, value: Any, target: str) -> list[Any]:
        if not isinstance(value, list):
            raise RecordRejected(target, f"expected a list, got {self._shown(value)}")
        mapper = self._each.get(name)
        if mapper is None:
            mapper = self._each[name] = Mapper(self._registry[name], self._registry)
        mapped = []
        for index, item in enumerate(value):
            try:
                if mapper.keeps(item):
                    mapped.append(mapper.map(item)[0])
            except RecordRejected as exc:
                raise RecordRejected(
                    f"{target}[{index}].{exc.field}", exc.reason
                ) from None
        return mapped

    def _look_up(self, table: str, value: Any, target: str) -> Any:
        values = self.spec.tables[table]
        key = str(value)
        if key not in values:
            known = ", ".join(repr(k) for k in list(values)[:5])
            raise RecordRejected(
                target,
                f"{self._shown(value)} is not in table {table!r} (it has {known}"
                + (", …)" if len(values) > 5 else ")"),
            )
        return values[key]

    def _shown(self, value: Any) -> str:
        return MASK if self.spec.is_sensitive else repr(value)

    def _masked(self, message: str, value: Any) -> str:
        if not self.spec.is_sensitive:
            return message
        for shown in {repr(value), str(value)}:
            if shown:
                message = message.replace(shown, MASK)
        return message


def _compile(fields: dict[str, Any]) -> dict[str, _Field]:
    compiled = {}
    for name, raw in fields.items():
        rule = field_rule(raw)
        chain = converters.parse_chain(rule.convert)
        compiled[name] = _Field(
            name=name,
            rule=rule,
            chain=chain,
            description=_describe(rule, chain),
            template=(
                templates.compile_template(rule.value)
                if rule.value is not None
                else None
            ),
            nested=_compile(rule.fields) if rule.fields else None,
        )
    return compiled


@dataclass
class BatchResult:
    """What mapping many records gave: the records, the rejects, the dropped count."""

    records: list[dict[str, Any]]
    rejected: list[dict[str, Any]]
    dropped: int
    trace: list[dict[str, str]]


def map_records(mapper: Mapper, records: list[Any]) -> BatchResult:
    """Map a list: filtered records are dropped, failing ones listed with their index."""
    result = BatchResult(records=[], rejected=[], dropped=0, trace=[])
    for index, record in enumerate(records):
        try:
            if not mapper.keeps(record):
                result.dropped += 1
                continue
            output, trace = mapper.map(record)
        except RecordRejected as exc:
            result.rejected.append(
                {"record": index, "field": exc.field, "reason": exc.reason}
            )
            continue
        result.records.append(output)
        if not result.trace:
            result.trace = trace
    return result
