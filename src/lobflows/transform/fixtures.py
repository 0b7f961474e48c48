"""Mapping fixtures: example records and what a mapping must make of them.

A fixture file sits beside the mappings, ``mappings/tests/<mapping>.yaml``,
and lists cases::

    - name: a hire with every field
      input: {fields: {firstName: " Ada "}}
      expected: {first_name: Ada}
    - name: no email is refused
      input: {fields: {}}
      rejected: {field: email, reason: requires a value}
    - name: inactive people are left out
      input: {status: Inactive}
      dropped: true

`lobflows test` runs every case and shows a readable diff when one fails.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lobflows import errors
from lobflows.spec import loader
from lobflows.spec.mappings import LoadedMapping
from lobflows.transform.mapper import Mapper, RecordRejected

TESTS_FOLDER = "tests"


@dataclass(frozen=True)
class CaseResult:
    mapping: str
    name: str
    passed: bool
    detail: str = ""


def fixture_files(folder: Path) -> list[Path]:
    directory = folder / "mappings" / TESTS_FOLDER
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.suffix in (".yaml", ".yml"))


def run_fixtures(folder: Path) -> list[CaseResult]:
    """Every case of every fixture file of a flows folder, in file order."""
    registry = loader.load_mappings(folder)
    results: list[CaseResult] = []
    for path in fixture_files(folder):
        cases, _ = loader.parse_yaml(path.read_text(encoding="utf-8"), str(path))
        name = path.stem
        if name not in registry:
            known = ", ".join(sorted(registry)) or "none"
            raise errors.ConfigurationError(
                f"{path}: fixtures for a mapping named {name!r}, which does not exist; mappings: {known}"
            )
        if not isinstance(cases, list) or not all(isinstance(c, dict) for c in cases):
            raise errors.ConfigurationError(
                f"{path}: expected a list of cases, each with name, input and expected"
            )
        mapper = Mapper(registry[name], registry)
        results.extend(
            _run_case(mapper, registry[name], case, i) for i, case in enumerate(cases)
        )
    return results


def _run_case(
    mapper: Mapper, loaded: LoadedMapping, case: dict[str, Any], index: int
) -> CaseResult:
    name = str(case.get("name") or f"case {index + 1}")
    expected_keys = [k for k in ("expected", "rejected", "dropped") if k in case]
    if "input" not in case or len(expected_keys) != 1:
        return CaseResult(
            loaded.name,
            name,
            False,
            "a case needs input and exactly one of: expected, rejected, dropped",
        )
    record = case["input"]
    try:
        if not mapper.keeps(record):
            return _compare(loaded.name, name, case, outcome="dropped")
        output, _ = mapper.map(record)
    except RecordRejected as exc:
        return _compare(loaded.name, name, case, outcome="rejected", rejected=exc)
    return _compare(loaded.name, name, case, outcome="mapped", output=output)


def _compare(
    mapping: str,
    name: str,
    case: dict[str, Any],
    *,
    outcome: str,
    output: Any = None,
    rejected: RecordRejected | None = None,
) -> CaseResult:
    if "dropped" in case:
        ok = outcome == "dropped"
        return CaseResult(
            mapping,
            name,
            ok,
            ""
            if ok
            else f"expected the record to be dropped; it was {outcome}"
            + _what(output, rejected),
        )
    if "rejected" in case:
        wanted = case["rejected"] or {}
        if rejected is None:
            return CaseResult(
                mapping,
                name,
                False,
                f"expected a rejection; it was {outcome}" + _what(output, None),
            )
        field_ok = wanted.get("field") in (None, rejected.field)
        reason_ok = str(wanted.get("reason", "")) in rejected.reason
        ok = field_ok and reason_ok
        detail = (
            ""
            if ok
            else (
                f"expected a rejection of field {wanted.get('field')!r} with a reason containing "
                f"{wanted.get('reason', '')!r}; got field {rejected.field!r}: {rejected.reason}"
            )
        )
        return CaseResult(mapping, name, ok, detail)
    if outcome != "mapped":
        return CaseResult(
            mapping,
            name,
            False,
            f"expected a mapped record; it was {outcome}" + _what(output, rejected),
        )
    ok = output == case["expected"]
    return CaseResult(mapping, name, ok, "" if ok else diff(case["expected"], output))


def _what(output: Any, rejected: RecordRejected | None) -> str:
    if rejected is not None:
        return f" (field {rejected.field!r}: {rejected.reason})"
    return "" if output is None else f":\n{_pretty(output)}"


def diff(expected: Any, actual: Any) -> str:
    """A unified diff of expected and actual records, as sorted, indented JSON."""
    lines = difflib.unified_diff(
        _pretty(expected).splitlines(),
        _pretty(actual).splitlines(),
        fromfile="expected",
        tofile="actual",
        lineterm="",
    )
    return "\n".join(lines)


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)
