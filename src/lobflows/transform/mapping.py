"""Apply a map step: build a record field by field, with explicit gap policies."""

from __future__ import annotations

from typing import Any

from lobflows import errors
from lobflows.spec import models
from lobflows.transform import converters, templates

# What a path or template gives when its source is not there (not None: null is a value).
ABSENT = object()
_ABSENT = ABSENT


def apply_mapping(
    rules: dict[str, Any],
    context: dict[str, Any],
    trace: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    """Build the mapped record; problems name the target field and what was wrong.

    With `trace`, one entry per field says where its value came from.
    """
    record: dict[str, Any] = {}
    for target, rule in rules.items():
        if not isinstance(rule, str | models.FieldRule):
            record[target] = rule  # a constant
            _note(trace, target, repr(rule), "constant")
            continue
        if isinstance(rule, str):
            rule = models.FieldRule(value=rule)
        value = _field_value(target, rule, context)
        if value is not _ABSENT:
            record[target] = value
        _note(
            trace,
            target,
            rule.from_ or rule.value or "",
            "skipped" if value is _ABSENT else "set",
            rule.convert,
        )
    return record


def _note(
    trace: list[dict[str, str]] | None,
    target: str,
    source: str,
    outcome: str,
    convert: list[Any] | None = None,
) -> None:
    if trace is not None:
        rule = " | ".join(c.describe() for c in _chain(convert)) if convert else "as is"
        trace.append(
            {"field": target, "source": source, "rule": rule, "outcome": outcome}
        )


def _field_value(target: str, rule: models.FieldRule, context: dict[str, Any]) -> Any:
    source = _read_source(target, rule, context)
    if source is _ABSENT:
        return _apply_policy(target, rule.on_missing, rule, "is missing")
    if source is None or source == "":
        if rule.on_null == "keep":
            return source
        return _apply_policy(target, rule.on_null, rule, "is empty")
    if not rule.convert:
        return source
    try:
        return converters.apply_chain(source, _chain(rule.convert))
    except converters.ConversionError as exc:
        raise errors.StepInputError(f"field {target!r}: {exc}", field=target) from None


_CHAINS: dict[str, list[Any]] = {}


def _chain(convert: list[Any] | None) -> list[Any]:
    """Parsed converters, once per distinct chain."""
    key = repr(convert)
    chain = _CHAINS.get(key)
    if chain is None:
        chain = _CHAINS[key] = converters.parse_chain(convert)
    return chain


def _read_source(target: str, rule: models.FieldRule, context: dict[str, Any]) -> Any:
    if rule.from_ is not None:
        return lookup_path(context, rule.from_)
    try:
        return templates.compile_template(rule.value or "").render(context)
    except templates.MissingValueError:
        return _ABSENT
    except errors.TemplateError as exc:
        raise errors.StepInputError(f"field {target!r}: {exc}", field=target) from None


def _apply_policy(target: str, policy: str, rule: models.FieldRule, what: str) -> Any:
    if policy == "skip":
        return _ABSENT
    if policy == "null":
        return None
    if policy == "default":
        return rule.default
    source = rule.from_ or rule.value
    raise errors.StepInputError(
        f"field {target!r}: source {source!r} {what}, and the field requires a value",
        field=target,
    )


def lookup_path(data: Any, path: str) -> Any:
    """Follow a dotted path (``input.items.0.sku``); absent parts give the absent marker."""
    node = data
    for part in path.split("."):
        if isinstance(node, dict):
            node = node.get(part, _ABSENT)
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return _ABSENT
        if node is _ABSENT:
            return _ABSENT
    return node


def is_absent(value: Any) -> bool:
    return value is _ABSENT
