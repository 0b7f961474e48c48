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
from lobflows.spec import mappings, models
from lobflows.transform import templates

CONNECTIONS_FILE = "connections.yaml"
ROLES_FILE = "roles.yaml"
# Health check, window and alert settings (lobflows.monitor); not a flow.
MONITOR_FILE = "monitor.yaml"
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
    lines: dict[Location, int] = field(default_factory=dict, compare=False, repr=False)

    @property
    def name(self) -> str:
        return self.spec.flow


@dataclass(frozen=True)
class Project:
    """Every flow and connection of one folder."""

    flows: dict[str, LoadedFlow]
    connections: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Role name to its members' user ids, for task assignees.
    roles: dict[str, list[str]] = field(default_factory=dict)
    # Named mappings (mappings/*.yaml), by name.
    mappings: dict[str, mappings.LoadedMapping] = field(default_factory=dict)


def parse_yaml(text: str, path: str) -> tuple[Any, dict[Location, int]]:
    """Parse YAML and remember the line of every key and item; refuse repeated keys."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or "is not valid YAML"
        raise errors.FlowFileError(
            path,
            [
                errors.Problem(
                    path=path, line=line, field="", message=f"YAML: {problem}"
                )
            ],
        ) from None
    lines: dict[Location, int] = {}
    if node is None:
        return None, lines
    repeated: list[errors.Problem] = []
    document = _construct(node, (), lines, repeated, path)
    if repeated:
        raise errors.FlowFileError(path, repeated)
    return document, lines


def _construct(
    node: yaml.Node,
    location: Location,
    lines: dict[Location, int],
    repeated: list[errors.Problem],
    path: str,
) -> Any:
    lines[location] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            # Scalars get their YAML 1.1 types, as with yaml.safe_load.
            key = yaml.SafeLoader("").construct_object(key_node)
            child = (*location, key)
            if key in result:
                message = f"is given twice (first on line {lines[child]}); the second would silently replace the first"
                repeated.append(
                    errors.Problem(
                        path=path,
                        line=key_node.start_mark.line + 1,
                        field=_dotted(child),
                        message=message,
                    )
                )
            lines[child] = key_node.start_mark.line + 1
            result[key] = _construct(value_node, child, lines, repeated, path)
            lines[child] = key_node.start_mark.line + 1
        return result
    if isinstance(node, yaml.SequenceNode):
        return [
            _construct(item, (*location, i), lines, repeated, path)
            for i, item in enumerate(node.value)
        ]
    return yaml.SafeLoader("").construct_object(node)


def load_flow_text(text: str, path: str) -> LoadedFlow:
    """Parse and validate one flow document."""
    document, lines = parse_yaml(text, path)
    if not isinstance(document, dict):
        problem = errors.Problem(
            path=path,
            line=1,
            field="",
            message="expected a mapping with flow, card, trigger and steps",
        )
        raise errors.FlowFileError(path, [problem])
    _name_steps(document.get("steps"))
    try:
        spec = models.Flow.model_validate(document)
    except pydantic.ValidationError as exc:
        raise errors.FlowFileError(
            path, _problems(exc, document, lines, path)
        ) from None
    problems = _template_problems(document, lines, path)
    if problems:
        raise errors.FlowFileError(path, problems)
    digest = hashlib.sha256(
        json.dumps(document, sort_keys=True, default=str).encode()
    ).hexdigest()
    return LoadedFlow(
        spec=spec, path=path, digest=digest[:16], document=document, lines=lines
    )


def load_mapping_text(text: str, path: str) -> mappings.LoadedMapping:
    """Parse and validate one mapping document, converters and templates included."""
    document, lines = parse_yaml(text, path)
    if not isinstance(document, dict):
        problem = errors.Problem(
            path=path,
            line=1,
            field="",
            message="expected a mapping with mapping, source, target and fields",
        )
        raise errors.FlowFileError(path, [problem])
    try:
        spec = mappings.MappingSpec.model_validate(document)
    except pydantic.ValidationError as exc:
        raise errors.FlowFileError(
            path, _problems(exc, document, lines, path)
        ) from None
    problems = []
    for where, message in compile_problems(spec):
        problems.append(
            errors.Problem(
                path=path,
                line=lines.get(where) or lines.get(where[:2]),
                field=".".join(str(p) for p in where),
                message=message,
            )
        )
    if problems:
        raise errors.FlowFileError(path, problems)
    return mappings.LoadedMapping(
        name=spec.mapping, path=path, spec=spec, document=document
    )


def load_mapping_file(path: Path) -> mappings.LoadedMapping:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise mappings.mapping_problem(str(path), f"cannot read: {exc}") from None
    return load_mapping_text(text, str(path))


def load_mappings(folder: Path) -> dict[str, mappings.LoadedMapping]:
    """Every mapping in ``folder/mappings``; names are unique, `each` names exist."""
    found, problems = _load_each(
        mappings.mapping_files(folder), load_mapping_file, "mapping"
    )
    for loaded in found.values():
        for name in mappings.nested_names(loaded.spec):
            if name not in found:
                known = ", ".join(sorted(found)) or "none"
                problems.append(
                    errors.Problem(
                        path=loaded.path,
                        line=None,
                        field="fields",
                        message=f"each: no mapping named {name!r}; mappings: {known}",
                    )
                )
    if problems:
        raise errors.FlowFileError(str(folder / "mappings"), problems)
    return found


def compile_problems(spec: mappings.MappingSpec) -> list[tuple[Location, str]]:
    """Converters, templates, filters and tables a mapping names, checked at load."""
    from lobflows.transform import converters

    problems: list[tuple[Location, str]] = []
    if spec.filter is not None:
        try:
            templates.compile_condition(spec.filter)
        except errors.TemplateError as exc:
            problems.append((("filter",), str(exc)))

    def walk(fields: dict[str, Any], location: Location) -> None:
        for name, raw in fields.items():
            rule = mappings.field_rule(raw)
            here = (*location, name)
            try:
                converters.parse_chain(rule.convert)
            except ValueError as exc:
                problems.append(((*here, "convert"), str(exc)))
            if rule.value is not None:
                try:
                    templates.compile_template(rule.value)
                except errors.TemplateError as exc:
                    problems.append(((*here, "value"), str(exc)))
            if rule.table is not None and rule.table not in spec.tables:
                known = ", ".join(sorted(spec.tables)) or "none"
                problems.append(
                    (
                        (*here, "table"),
                        f"no table named {rule.table!r}; tables: {known}",
                    )
                )
            if rule.fields:
                walk(rule.fields, (*here, "fields"))

    walk(spec.fields, ("fields",))
    if spec.output_schema is not None:
        from lobflows.transform import validation

        message = validation.schema_problem(spec.output_schema)
        if message:
            problems.append((("output_schema",), message))
    return problems


def step_locations(document: dict[str, Any]) -> list[tuple[Location, dict[str, Any]]]:
    """Every raw step with its location in the document, nested ones included."""
    found: list[tuple[Location, dict[str, Any]]] = []

    def walk(steps: Any, location: Location) -> None:
        if not isinstance(steps, list):
            return
        for i, step in enumerate(steps):
            if not isinstance(step, dict):
                continue
            here = (*location, i)
            found.append((here, step))
            for key in ("then", "else", "default", "escalate"):
                walk(step.get(key), (*here, key))
            for case, block in (step.get("cases") or {}).items():
                walk(block, (*here, "cases", case))
            if isinstance(step.get("parallel"), dict):
                for branch, block in step["parallel"].items():
                    walk(block, (*here, "parallel", branch))

    walk(document.get("steps"), ("steps",))
    return found


def _template_problems(
    document: dict[str, Any], lines: dict[Location, int], path: str
) -> list[errors.Problem]:
    """Compile every template and condition now, so a typo fails at load, not in a run."""
    problems: list[errors.Problem] = []
    for location, step in step_locations(document):
        for key in ("if", "switch"):
            if isinstance(step.get(key), str):
                _try_compile(
                    templates.compile_condition,
                    step[key],
                    (*location, key),
                    lines,
                    path,
                    problems,
                )
        for key in (
            "map",
            "with",
            "respond",
            "subflow",
            "sleep",
            "emit",
            "wait",
            "foreach",
            "task",
            "undo",
            "transform",
        ):
            for where, text in _strings(step.get(key), (*location, key)):
                _try_compile(
                    templates.compile_template, text, where, lines, path, problems
                )
    hook = (document.get("trigger") or {}).get("webhook") or {}
    if isinstance(hook.get("dedupe"), str):
        _try_compile(
            templates.compile_key_template,
            hook["dedupe"],
            ("trigger", "webhook", "dedupe"),
            lines,
            path,
            problems,
        )
    return problems


def _strings(value: Any, location: Location) -> list[tuple[Location, str]]:
    if isinstance(value, str):
        return [(location, value)] if templates.is_template(value) else []
    if isinstance(value, dict):
        return [
            found for k, v in value.items() for found in _strings(v, (*location, k))
        ]
    if isinstance(value, list):
        return [
            found for i, v in enumerate(value) for found in _strings(v, (*location, i))
        ]
    return []


def _try_compile(
    compile_: Any,
    text: str,
    location: Location,
    lines: dict[Location, int],
    path: str,
    problems: list[errors.Problem],
) -> None:
    try:
        compile_(text)
    except errors.TemplateError as exc:
        problems.append(
            errors.Problem(
                path=path,
                line=_nearest_line(location, lines),
                field=_dotted(location),
                message=str(exc),
            )
        )


def load_flow_file(path: Path) -> LoadedFlow:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        problem = errors.Problem(
            path=str(path), line=None, field="", message=f"cannot read: {exc}"
        )
        raise errors.FlowFileError(str(path), [problem]) from None
    return load_flow_text(text, str(path))


def flow_files(paths: Iterable[Path]) -> list[Path]:
    """The flow files named, and the ``*.yaml`` files directly inside folders named.

    Inside a folder, ``connections.yaml``, ``roles.yaml``, ``monitor.yaml``,
    ``secrets*.yaml`` and hidden files are not flows.
    """
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(
                sorted(
                    p
                    for p in path.iterdir()
                    if p.is_file() and p.suffix in FLOW_SUFFIXES and _may_be_flow(p)
                )
            )
        elif path.exists():
            found.append(path)
    return found


def _may_be_flow(path: Path) -> bool:
    return path.name not in (
        CONNECTIONS_FILE,
        ROLES_FILE,
        MONITOR_FILE,
    ) and not path.name.startswith((".", "secrets"))


def _load_each(
    paths: list[Path], load: Any, kind: str
) -> tuple[dict[str, Any], list[errors.Problem]]:
    """Load files of one kind by name; every problem is kept, names are unique."""
    found: dict[str, Any] = {}
    problems: list[errors.Problem] = []
    for path in paths:
        try:
            loaded = load(path)
        except errors.FlowFileError as exc:
            problems.extend(exc.problems)
            continue
        if loaded.name in found:
            problems.append(
                errors.Problem(
                    path=str(path),
                    line=1,
                    field=kind,
                    message=f"{kind} {loaded.name!r} is also defined in {found[loaded.name].path}",
                )
            )
            continue
        found[loaded.name] = loaded
    return found, problems


def load_project(folder: Path) -> Project:
    """Load every flow in a folder, and its connections file if there is one."""
    if not folder.is_dir():
        raise errors.ConfigurationError(f"{folder} is not a folder of flows")
    flows, problems = _load_each(flow_files([folder]), load_flow_file, "flow")
    if problems:
        raise errors.FlowFileError(str(folder), problems)
    if not flows:
        raise errors.ConfigurationError(f"no flow files (*.yaml) found in {folder}")
    return Project(
        flows=flows,
        connections=load_connections(folder / CONNECTIONS_FILE),
        roles=load_roles(folder / ROLES_FILE),
        mappings=load_mappings(folder),
    )


def subflow_problems(project: Project) -> list[errors.Problem]:
    """Subflow steps that name a flow the project does not have."""
    problems = []
    for flow in project.flows.values():
        for location, step in step_locations(flow.document):
            kind = "subflow" if "subflow" in step else "foreach"
            target = step.get(kind)
            name = target.get("flow") if isinstance(target, dict) else None
            if isinstance(name, str) and name not in project.flows:
                known = ", ".join(sorted(project.flows))
                where = (*location, kind, "flow")
                problems.append(
                    errors.Problem(
                        path=flow.path,
                        line=_nearest_line(where, flow.lines),
                        field=_dotted(where),
                        message=f"no flow named {name!r} beside this one; flows here: {known}",
                    )
                )
    return problems


def load_roles(path: Path) -> dict[str, list[str]]:
    """Read a roles file: ``roles:`` mapping each role name to a list of user ids."""
    if not path.exists():
        return {}
    document, lines = parse_yaml(path.read_text(encoding="utf-8"), str(path))
    roles = (document or {}).get("roles") if isinstance(document, dict) else None
    if not isinstance(roles, dict):
        problem = errors.Problem(
            path=str(path),
            line=1,
            field="roles",
            message="expected a mapping of role name to a list of user ids",
        )
        raise errors.FlowFileError(str(path), [problem])
    problems = [
        errors.Problem(
            path=str(path),
            line=lines.get(("roles", name)),
            field=f"roles.{name}",
            message="expected a non-empty list of user ids (text)",
        )
        for name, members in roles.items()
        if not isinstance(members, list)
        or not members
        or not all(isinstance(m, str) and m.strip() for m in members)
    ]
    if problems:
        raise errors.FlowFileError(str(path), problems)
    return {str(name): [m.strip() for m in members] for name, members in roles.items()}


def load_connections(path: Path) -> dict[str, dict[str, Any]]:
    """Read a connections file; ``${VAR}`` and ``${VAR:-default}`` take environment values."""
    if not path.exists():
        return {}
    document, _ = parse_yaml(path.read_text(encoding="utf-8"), str(path))
    connections = (
        (document or {}).get("connections") if isinstance(document, dict) else None
    )
    if not isinstance(connections, dict):
        problem = errors.Problem(
            path=str(path),
            line=1,
            field="connections",
            message="expected a mapping of connection name to settings",
        )
        raise errors.FlowFileError(str(path), [problem])
    unset: list[str] = []
    expanded = {
        str(name): _expand_env(settings, unset)
        for name, settings in connections.items()
    }
    if unset:
        problems = [
            errors.Problem(
                path=str(path),
                line=None,
                field="",
                message=f"environment variable {name} is not set and has no default",
            )
            for name in dict.fromkeys(unset)
        ]
        raise errors.FlowFileError(str(path), problems)
    return expanded


def _expand_env(value: Any, unset: list[str]) -> Any:
    if isinstance(value, str):
        return _ENV_REFERENCE.sub(lambda match: _env_value(match, unset), value)
    if isinstance(value, dict):
        return {k: _expand_env(v, unset) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v, unset) for v in value]
    return value


def _env_value(match: re.Match[str], unset: list[str]) -> str:
    name, default = match.group(1), match.group(2)
    value = os.environ.get(name, default)
    if value is None:
        unset.append(name)
        return ""
    return value


def _name_steps(steps: Any) -> None:
    """Give every step without an id a readable one, e.g. ``erpnext_create``."""
    all_steps = [step for _, step in step_locations({"steps": steps})]
    used = {s["id"] for s in all_steps if isinstance(s.get("id"), str)}
    for step in all_steps:
        if "id" in step:
            continue
        base = _default_id(step)
        candidate, n = base, 2
        while candidate in used:
            candidate, n = f"{base}_{n}", n + 1
        step["id"] = candidate
        used.add(candidate)


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
        scalar_tags = {"str", "bool", "int", "float", "none"}
        if scalar_tags & set(map(str, error["loc"])) and isinstance(
            error.get("input"), dict
        ):
            continue  # the other branch of "template or rule" explains it
        location = _document_location(error["loc"], document)
        problems.append(
            errors.Problem(
                path=path,
                line=_nearest_line(location, lines),
                field=_dotted(location),
                message=validation_message(error),
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


_UNION_TAGS = frozenset({"str", "FieldRule", "bool", "int", "float", "none"})


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
        text += (
            f"[{part}]"
            if isinstance(part, int)
            else (f".{part}" if text else str(part))
        )
    return text


def validation_message(error: Any) -> str:
    """One pydantic error as a short phrase that follows the field's name."""
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
