"""A named mapping's page: its fields and rules, value tables, output schema."""

from __future__ import annotations

from typing import Any

from lobflows.docs import markdown
from lobflows.docs.catalogue import Catalogue, MappingEntry
from lobflows.spec import mappings
from lobflows.transform import converters

FIELD_HEADERS = [
    "Target",
    "Source",
    "Converters",
    "Table",
    "Required",
    "On missing",
    "On null",
    "Default",
]
# JSON Schema keywords worth a word in the output schema summary.
_SCHEMA_RULES = (
    "format",
    "enum",
    "const",
    "pattern",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "items",
)


def render(entry: MappingEntry, catalogue: Catalogue) -> str:
    """The Markdown page of one named mapping."""
    spec = entry.spec
    where = (
        f"Folder {markdown.code(entry.folder.shown)}, file "
        f"{markdown.code('mappings/' + entry.file_name)}. "
        "[Back to the catalogue](../index.md)"
    )
    sections = [markdown.GENERATED, f"# Mapping {markdown.text(spec.mapping)}", where]
    if spec.description:
        sections.append(markdown.paragraphs(spec.description))
    sections += [
        "## Summary",
        _summary(entry, catalogue),
        "## Fields",
        "Fields of a sub-object follow their parent as parent.field.",
        markdown.table(FIELD_HEADERS, field_rows(entry, catalogue)),
    ]
    if spec.tables:
        sections.append("## Value tables")
        for name, values in spec.tables.items():
            sections.append(f"### {markdown.code(name)}")
            rows = [
                (markdown.constant(k), markdown.constant(v)) for k, v in values.items()
            ]
            sections.append(markdown.table(["Source value", "Target value"], rows))
    if spec.output_schema is not None:
        sections += ["## Output schema", *_schema(spec.output_schema)]
    return "\n\n".join(section.rstrip("\n") for section in sections) + "\n"


def converters_text(convert: list[Any]) -> str:
    """A converter chain in words, e.g. trim → date (format %d/%m/%Y)."""
    if not convert:
        return "—"
    chain = converters.parse_chain(convert)
    return markdown.text(" → ".join(c.describe() for c in chain))


def policy_text(policy: str, default: Any) -> str:
    """A gap policy, with the value it puts in when it is ``default``."""
    if policy == "default":
        return "default " + markdown.constant(default)
    return markdown.text(policy)


def _summary(entry: MappingEntry, catalogue: Catalogue) -> str:
    spec = entry.spec
    sensitivity: str = spec.sensitivity
    if spec.is_sensitive:
        sensitivity += " (values are masked in errors and traces)"
    users = [
        markdown.link(flow.name, f"../flows/{flow.page}.md")
        + markdown.text(f" (step {step})")
        for flow, step in catalogue.mapping_users(entry)
    ]
    parents = [
        markdown.link(parent.name, f"{parent.page}.md")
        for parent in catalogue.mapping_parents(entry)
    ]
    rows = [
        ("Source", markdown.text(spec.source)),
        ("Target", markdown.text(spec.target)),
        ("Sensitivity", markdown.text(sensitivity)),
        (
            "Filter",
            markdown.code(spec.filter)
            if spec.filter
            else markdown.text("none: every record is mapped"),
        ),
        ("Used by", ", ".join(users + parents) or markdown.text("no flow yet")),
    ]
    return markdown.table(["Mapping", "Answer"], rows)


def field_rows(entry: MappingEntry, catalogue: Catalogue) -> list[list[str]]:
    """One row per field, sub-object fields after their parent."""
    return _rows(entry.spec.fields, "", entry, catalogue)


def _rows(
    fields: dict[str, Any], prefix: str, entry: MappingEntry, catalogue: Catalogue
) -> list[list[str]]:
    rows = []
    for name, raw in fields.items():
        rule = mappings.field_rule(raw)
        target = f"{prefix}{name}"
        rows.append(_row(target, rule, entry, catalogue))
        if rule.fields:
            rows.extend(_rows(rule.fields, f"{target}.", entry, catalogue))
    return rows


def _row(
    target: str, rule: mappings.MappedField, entry: MappingEntry, catalogue: Catalogue
) -> list[str]:
    return [
        markdown.code(target),
        _source(rule),
        _conversion(rule, entry, catalogue),
        markdown.code(rule.table) if rule.table else "—",
        "yes" if rule.required else "no",
        _gap_policy(rule, rule.on_missing),
        _gap_policy(rule, rule.on_null),
        markdown.constant(rule.default) if "default" in rule.model_fields_set else "—",
    ]


def _gap_policy(rule: mappings.MappedField, policy: str) -> str:
    # A required field rejects the record on any gap, whatever its policies say.
    if rule.required:
        return markdown.text("error (required)")
    return policy_text(policy, rule.default)


def _source(rule: mappings.MappedField) -> str:
    if rule.from_ is not None:
        return "path " + markdown.code(rule.from_)
    if rule.value is not None:
        return "template " + markdown.code(rule.value)
    return "constant " + markdown.constant(rule.constant)


def _conversion(
    rule: mappings.MappedField, entry: MappingEntry, catalogue: Catalogue
) -> str:
    if rule.each is not None:
        nested = catalogue.mapping(entry.folder, rule.each)
        shown = (
            markdown.link(rule.each, f"{nested.page}.md")
            if nested is not None
            else markdown.code(rule.each)
        )
        return markdown.text("each element with the mapping ") + shown
    if rule.fields:
        return markdown.text("a sub-object: its fields follow")
    return converters_text(rule.convert)


def _schema(schema: dict[str, Any]) -> list[str]:
    required = [str(name) for name in schema.get("required") or []]
    properties = schema.get("properties") or {}
    parts = ["Every output record must satisfy this JSON Schema."]
    parts.append(
        markdown.text("Required properties: " + ", ".join(required) + ".")
        if required
        else markdown.text("No property is required.")
    )
    if not properties:
        return parts
    rows = [
        (
            markdown.code(name),
            markdown.text(_schema_type(rule)),
            "yes" if name in required else "no",
            _schema_rules(rule),
        )
        for name, rule in properties.items()
    ]
    parts.append(markdown.table(["Property", "Type", "Required", "Rules"], rows))
    return parts


def _schema_type(rule: Any) -> str:
    if not isinstance(rule, dict):
        return "any"
    kind = rule.get("type", "any")
    return " or ".join(map(str, kind)) if isinstance(kind, list) else str(kind)


def _schema_rules(rule: Any) -> str:
    if not isinstance(rule, dict):
        return "—"
    found = [
        markdown.text(key) + " " + markdown.constant(rule[key])
        for key in _SCHEMA_RULES
        if key in rule
    ]
    return ", ".join(found) or "—"
