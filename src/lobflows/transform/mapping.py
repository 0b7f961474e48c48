"""Apply a map step: build a record field by field, with explicit gap policies."""

from __future__ import annotations

from typing import Any

from lobflows import errors
from lobflows.spec import models
from lobflows.transform import templates

_ABSENT = object()


def apply_mapping(rules: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    """Build the mapped record; problems name the target field and what was wrong."""
    record: dict[str, Any] = {}
    for target, rule in rules.items():
        if not isinstance(rule, str | models.FieldRule):
            record[target] = rule  # a constant
            continue
        if isinstance(rule, str):
            rule = models.FieldRule(value=rule)
        value = _field_value(target, rule, context)
        if value is not _ABSENT:
            record[target] = value
    return record


def _field_value(target: str, rule: models.FieldRule, context: dict[str, Any]) -> Any:
    source = _read_source(target, rule, context)
    if source is _ABSENT:
        return _apply_policy(target, rule.on_missing, rule, "is missing")
    if source is None or source == "":
        if rule.on_null == "keep":
            return source
        return _apply_policy(target, rule.on_null, rule, "is empty")
    return source


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
