"""Load flow files and connection files, reporting problems by file, line and field."""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydantic
import yaml

from lobflows import errors
from lobflows.spec import models

CONNECTIONS_FILE = "connections.yaml"
FLOW_SUFFIXES = (".yaml", ".yml")
Location = tuple[str | int, ...]
_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass(frozen=True)
class LoadedFlow:
    """A parsed flow, with where it came from and a digest of its content."""

    spec: models.Flow
    path: str
    digest: str
    document: dict[str, Any]

    @property
    def name(self) -> str:
        return self.spec.flow


@dataclass(frozen=True)
class Project:
    """Every flow and connection of one folder."""

    flows: dict[str, LoadedFlow]
    connections: dict[str, dict[str, Any]] = field(default_factory=dict)


def parse_yaml(text: str, path: str) -> tuple[Any, dict[Location, int]]:
    """Parse YAML and remember the line of every key and item."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or "is not valid YAML"
        raise errors.FlowFileError(
            path, [errors.Problem(path=path, line=line, field="", message=f"YAML: {problem}")]
        ) from None
    lines: dict[Location, int] = {}
    if node is None:
        return None, lines
    return _construct(node, (), lines), lines


def _construct(node: yaml.Node, location: Location, lines: dict[Location, int]) -> Any:
    lines[location] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = yaml.SafeLoader(  # scalars get their YAML 1.1 types, like safe_load
                ""
            ).construct_object(key_node)
            child = (*location, key)
            lines[child] = key_node.start_mark.line + 1
            result[key] = _construct(value_node, child, lines)
            lines[child] = key_node.start_mark.line + 1
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_construct(item, (*location, i), lines) for i, item in enumerate(node.value)]
    return yaml.SafeLoader("").construct_object(node)


def load_flow_text(text: str, path: str) -> LoadedFlow:
    """Parse and validate one flow document."""
    document, lines = parse_yaml(text, path)
    if not isinstance(document, dict):
        problem = errors.Problem(path=path, line=1, field="", message="expected a mapping with flow, card, trigger and steps")
        raise errors.FlowFileError(path, [problem])
    _name_steps(document.get("steps"))
    try:
        spec = models.Flow.model_validate(document)
    except pydantic.ValidationError as exc:
        raise errors.FlowFileError(path, _problems(exc, document, lines, path)) from None
    digest = hashlib.sha256(json.dumps(document, sort_keys=True, default=str).encode()).hexdigest()
    return LoadedFlow(spec=spec, path=path, digest=digest[:16], document=document)


def load_flow_file(path: Path) -> LoadedFlow:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        problem = errors.Problem(path=str(path), line=None, field="", message=f"cannot read: {exc}")
        raise errors.FlowFileError(str(path), [problem]) from None
    return load_flow_text(text, str(path))


def flow_files(paths: Iterable[Path]) -> list[Path]:
    """The flow files named, folders searched recursively; connection files excluded."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            candidates = sorted(p for p in path.rglob("*") if p.suffix in FLOW_SUFFIXES)
        else:
            candidates = [path]
        found.extend(p for p in candidates if p.name != CONNECTIONS_FILE)
    return found


def load_project(folder: Path) -> Project:
    """Load every flow in a folder, and its connections file if there is one."""
    if not folder.is_dir():
        raise errors.ConfigurationError(f"{folder} is not a folder of flows")
    problems: list[errors.Problem] = []
    flows: dict[str, LoadedFlow] = {}
    for path in flow_files([folder]):
        try:
            loaded = load_flow_file(path)
        except errors.FlowFileError as exc:
            problems.extend(exc.problems)
            continue
        if loaded.name in flows:
            problems.append(errors.Problem(path=str(path), line=1, field="flow", message=f"flow {loaded.name!r} is also defined in {flows[loaded.name].path}"))
            continue
        flows[loaded.name] = loaded
    if problems:
        raise errors.FlowFileError(str(folder), problems)
    if not flows:
        raise errors.ConfigurationError(f"no flow files (*.yaml) found in {folder}")
    return Project(flows=flows, connections=load_connections(folder / CONNECTIONS_FILE))


def load_connections(path: Path) -> dict[str, dict[str, Any]]:
    """Read a connections file; ``${VAR}`` and ``${VAR:-default}`` take environment values."""
    if not path.exists():
        return {}
    document, _ = parse_yaml(path.read_text(encoding="utf-8"), str(path))
    connections = (document or {}).get("connections") if isinstance(document, dict) else None
    if not isinstance(connections, dict):
        problem = errors.Problem(path=str(path), line=1, field="connections", message="expected a mapping of connection name to settings")
        raise errors.FlowFileError(str(path), [problem])
    return {str(name): _expand_env(settings) for name, settings in connections.items()}


def _expand_env(value: Any) -> Any:
    if isinstance(value, str):
        return _ENV_REFERENCE.sub(_env_value, value)
    if isinstance(value, dict):
        return {k: _expand_env(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v) for v in value]
    return value


def _env_value(match: re.Match[str]) -> str:
    name, default = match.group(1), match.group(2)
    value = os.environ.get(name, default)
    if value is None:
        raise errors.ConfigurationError(f"environment variable {name} is not set and has no default")
    return value


def _name_steps(steps: Any, used: set[str] | None = None) -> set[str]:
    """Give every step without an id a readable one, e.g. ``erpnext_create``."""
    used = set() if used is None else used
    if not isinstance(steps, list):
        return used
    all_steps = list(_raw_walk(steps))
    used.update(s["id"] for s in all_steps if isinstance(s.get("id"), str))
    for step in all_steps:
        if "id" in step:
            continue
        base = _default_id(step)
        candidate, n = base, 2
        while candidate in used:
            candidate, n = f"{base}_{n}", n + 1
        step["id"] = candidate
        used.add(candidate)
    return used


def _raw_walk(steps: list[Any]) -> Iterable[dict[str, Any]]:
    for step in steps:
        if not isinstance(step, dict):
            continue
        yield step
        for key in ("then", "else", "default"):
            if isinstance(step.get(key), list):
                yield from _raw_walk(step[key])
        if isinstance(step.get("cases"), dict):
            for block in step["cases"].values():
                if isinstance(block, list):
                    yield from _raw_walk(block)


def _default_id(step: dict[str, Any]) -> str:
    if isinstance(step.get("call"), str):
        return models.slug(step["call"]) or "call"
    for kind in models.STEP_KINDS:
        if kind in step:
            return kind
    return "step"


def _problems(
    exc: pydantic.ValidationError, document: Any, lines: dict[Location, int], path: str
) -> list[errors.Problem]:
    problems = []
    for error in exc.errors():
        if "str" in error["loc"] and isinstance(error.get("input"), dict):
            continue  # the other branch of "template or rule" explains it
        location = _document_location(error["loc"], document)
        problems.append(
            errors.Problem(
                path=path,
                line=_nearest_line(location, lines),
                field=_dotted(location),
                message=_message(error),
            )
        )
    return problems


def _document_location(loc: tuple[Any, ...], document: Any) -> Location:
    """Map a pydantic error location onto keys that exist in the document.

    Pydantic puts union tags into locations: the step kind after a step's
    index, and ``str`` or the model name inside a mapping field. Those are
    dropped; keys that are missing from the document are kept.
    """
    result: list[str | int] = []
    node, entered_item = document, False
    for part in loc:
        if entered_item and isinstance(node, dict) and part == _raw_kind(node):
            entered_item = False
            continue
        entered_item = False
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node, entered_item = node[part], True
        elif isinstance(part, str) and (part in _UNION_TAGS or "[" in part):
            continue
        else:
            node = None
        result.append(part)
    return tuple(result)


_UNION_TAGS = frozenset({"str", "FieldRule"})


def _raw_kind(step: dict[str, Any]) -> str | None:
    return next((kind for kind in models.STEP_KINDS if kind in step), None)


def _nearest_line(location: Location, lines: dict[Location, int]) -> int | None:
    for end in range(len(location), -1, -1):
        line = lines.get(location[:end])
        if line is not None:
            return line
    return None


def _dotted(location: Location) -> str:
    text = ""
    for part in location:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _message(error: Any) -> str:
    kind, message = error["type"], error["msg"]
    if kind == "missing":
        return "is required but missing"
    if kind == "extra_forbidden":
        return "is not a known field here"
    if kind == "literal_error":
        return message.replace("Input should be", "expected")
    if message.startswith("Value error, "):
        return message[len("Value error, ") :]
    got = error.get("input")
    shown = "" if isinstance(got, (dict, list)) else f" (got {got!r})"
    return message[:1].lower() + message[1:] + shown
