"""JSON Schema validation of data before it leaves: every problem, by path.

Messages name where in the data the problem is, the value (masked when the
data is sensitive) and the rule it broke; they never carry a traceback.
"""

from __future__ import annotations

from typing import Any

import jsonschema
from jsonschema import Draft202012Validator

MASK = "***"
MAX_PROBLEMS = 20


def schema_problem(schema: Any) -> str | None:
    """Why a schema is not a valid JSON Schema (2020-12), or None."""
    try:
        Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "the schema"
        return f"not a valid JSON Schema at {where}: {exc.message}"
    return None


def problems(data: Any, schema: dict[str, Any], *, sensitive: bool) -> list[str]:
    """What is wrong with `data`, one line per problem, in document order."""
    validator = Draft202012Validator(schema)
    found = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    lines = [_describe(error, sensitive) for error in found[:MAX_PROBLEMS]]
    if len(found) > MAX_PROBLEMS:
        lines.append(f"… and {len(found) - MAX_PROBLEMS} more")
    return lines


def _describe(error: jsonschema.ValidationError, sensitive: bool) -> str:
    where = _path(error.absolute_path)
    rule = f"{error.validator}: {_short(error.validator_value)}"
    if error.validator in ("required", "additionalProperties"):
        # The message names the property, not a value: safe to show.
        return f"{where}: {error.message} ({rule})"
    shown = MASK if sensitive else _short(error.instance)
    return f"{where}: value {shown} breaks {rule}"


def _path(parts: Any) -> str:
    text = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts)
    return "record" + text


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
