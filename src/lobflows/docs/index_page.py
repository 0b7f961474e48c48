"""The catalogue's front page: flows by owner, mappings, the integration map."""

from __future__ import annotations

from lobflows.docs import integration_map as maps
from lobflows.docs import markdown
from lobflows.docs.catalogue import Catalogue, FlowEntry

MAP_IMAGE = "integration-map.svg"
_KIND_WORDS = {
    "webhook": "webhook",
    "schedule": "schedule",
    "manual": "started by hand",
    "event": "event topic",
    "flow": "flow run by other flows",
    "connection": "connection",
    "none": "none",
}


def render(catalogue: Catalogue, landscape: maps.IntegrationMap) -> str:
    """The Markdown of ``index.md``."""
    counts = (
        f"{markdown.plural(len(catalogue.flows), 'flow')} and "
        f"{markdown.plural(len(catalogue.mappings), 'mapping')} in "
        f"{markdown.plural(len(catalogue.folders), 'folder')}"
    )
    sections = [
        markdown.GENERATED,
        "# Flow catalogue",
        f"{counts}. Each flow's page shows its card, diagram, steps and "
        "mappings; the [integration map](#integration-map) shows which "
        "systems talk to which, through which flows.",
        _folders(catalogue),
        "## Flows by owner",
        *_owners(catalogue),
    ]
    if catalogue.mappings:
        sections += ["## Mappings", _mappings(catalogue)]
    sections += ["## Integration map", *_integration_map(landscape)]
    return "\n\n".join(section.rstrip("\n") for section in sections) + "\n"


def _folders(catalogue: Catalogue) -> str:
    rows = []
    for folder in catalogue.folders:
        connections = folder.project.connections
        declared = ", ".join(
            maps.connection_system(name, connections).label
            for name in sorted(connections)
        )
        rows.append(
            (
                markdown.text(folder.label),
                markdown.code(folder.shown),
                str(len(folder.project.flows)),
                str(len(folder.project.mappings)),
                markdown.text(declared) or "—",
            )
        )
    headers = ["Folder", "Path", "Flows", "Mappings", "Connections"]
    return markdown.table(headers, rows)


def _owners(catalogue: Catalogue) -> list[str]:
    by_owner: dict[str, list[FlowEntry]] = {}
    for entry in catalogue.flows:
        by_owner.setdefault(entry.spec.card.owner, []).append(entry)
    sections = []
    headers = ["Flow", "Trigger", "Data", "Target", "Owner"]
    for owner in sorted(by_owner, key=str.lower):
        rows = [_flow_row(entry) for entry in by_owner[owner]]
        sections.append(f"### {markdown.text(owner)}")
        sections.append(markdown.table(headers, rows))
    return sections


def _flow_row(entry: FlowEntry) -> list[str]:
    card = entry.spec.card
    return [
        markdown.link(entry.name, f"flows/{entry.page}.md"),
        markdown.text(card.trigger),
        markdown.text(f"{card.data.entity} ({card.data.sensitivity})"),
        markdown.text(card.target),
        markdown.text(card.owner),
    ]


def _mappings(catalogue: Catalogue) -> str:
    rows = [
        (
            markdown.link(entry.name, f"mappings/{entry.page}.md"),
            markdown.text(entry.spec.source),
            markdown.text(entry.spec.target),
            markdown.text(entry.spec.sensitivity),
            str(len(entry.spec.fields)),
            ", ".join(
                markdown.link(flow.name, f"flows/{flow.page}.md")
                for flow, _ in catalogue.mapping_users(entry)
            )
            or "—",
        )
        for entry in catalogue.mappings
    ]
    headers = ["Mapping", "Source", "Target", "Sensitivity", "Fields", "Used by"]
    return markdown.table(headers, rows)


def _integration_map(landscape: maps.IntegrationMap) -> list[str]:
    if not landscape.systems:
        return [markdown.text("No system is linked yet.")]
    explanation = (
        "Systems are the boxes; each arrow is labelled with the flows that "
        "carry data along it. An event topic sits between the flow that "
        "emits it and the flows it starts or resumes."
    )
    return [
        explanation,
        markdown.fenced(maps.mermaid(landscape), "mermaid"),
        f"The same map as a picture ({MAP_IMAGE}):",
        f"[![Integration map]({MAP_IMAGE})]({MAP_IMAGE})",
        "### Links",
        _links(landscape),
        "### Systems",
        _systems(landscape),
    ]


def _links(landscape: maps.IntegrationMap) -> str:
    rows = [
        (
            markdown.text(link.source.label),
            markdown.text(link.target.label),
            markdown.text(link.label),
        )
        for link in landscape.links
    ]
    return markdown.table(["From", "To", "Through flows"], rows)


def _systems(landscape: maps.IntegrationMap) -> str:
    rows = []
    for system in landscape.systems:
        outgoing = _flow_names(landscape.links_from(system))
        incoming = _flow_names(landscape.links_to(system))
        rows.append(
            (
                markdown.text(system.label),
                markdown.text(_KIND_WORDS[system.kind]),
                markdown.text(incoming) or "—",
                markdown.text(outgoing) or "—",
            )
        )
    headers = ["System", "Kind", "Reached by", "Starts or feeds"]
    return markdown.table(headers, rows)


def _flow_names(links: list[maps.Link]) -> str:
    names = dict.fromkeys(name for link in links for name in link.flows)
    return ", ".join(names)
