"""The flow catalogue's pages, shown inside the dashboard as HTML.

The catalogue writes Markdown (lobflows.docs); here the same pages are
rendered with raw HTML switched off, so nothing a flow file says can reach
the page as markup. The one tag the pages use on purpose, ``<br>`` in table
cells, is carried through as a private character. Links between pages are
pointed at the dashboard's own flow and mapping pages.
"""

from __future__ import annotations

import re
from pathlib import Path

import markdown_it

from lobflows.docs import catalogue as catalogues
from lobflows.docs import flow_page, integration_map, mapping_page, markdown
from lobflows.spec import loader, models

_BREAK = "\ue000"
_RENDERER = markdown_it.MarkdownIt("commonmark", {"html": False}).enable("table")
_LINK = re.compile(r"\]\(([^)\s]+)\.md\)")
_DIAGRAM = re.compile(r"## Diagram\n\n```mermaid\n.*?\n```\n*", re.DOTALL)


class Docs:
    """The catalogue of the flows a runtime serves."""

    def __init__(self, project: loader.Project) -> None:
        self.project = project
        self.catalogue = catalogues.assemble([_folder(project)])

    def flow_html(self, name: str) -> str | None:
        """The flow's page without its title and diagram, or None if unknown."""
        entry = next((e for e in self.catalogue.flows if e.name == name), None)
        if entry is None:
            return None
        text = flow_page.render(entry, self.catalogue)
        return _html(_DIAGRAM.sub("", _body(text)), within="flows")

    def mapping_html(self, name: str) -> str | None:
        entry = next((e for e in self.catalogue.mappings if e.page == name), None)
        if entry is None:
            return None
        return _html(
            _body(mapping_page.render(entry, self.catalogue)), within="mappings"
        )

    def mappings_of(self, flow: str) -> list[str]:
        """The named mappings a flow's transform steps use."""
        loaded = self.project.flows.get(flow)
        if loaded is None:
            return []
        names = [
            step.transform.mapping
            for step in models.walk_steps(loaded.spec.steps)
            if isinstance(step, models.TransformStep) and step.transform.mapping
        ]
        return list(dict.fromkeys(n for n in names if n in self.project.mappings))

    def integration_map(self) -> integration_map.IntegrationMap:
        return self.catalogue.integration_map()


def _folder(project: loader.Project) -> catalogues.Folder:
    paths = [Path(flow.path).parent for flow in project.flows.values()]
    path = paths[0] if paths else Path(".")
    return catalogues.Folder(
        path=path, label=path.name, shown=path.name, project=project
    )


def _body(text: str) -> str:
    """The page without the generated marker, its title and the where-line."""
    sections = text.split("\n\n")
    kept = [s for s in sections if s != markdown.GENERATED]
    return "\n\n".join(kept[2:])


def _html(text: str, *, within: str) -> str:
    def target(match: re.Match[str]) -> str:
        href = match.group(1)
        if href == "../index":
            return "](/)"
        if href.startswith("../"):
            return f"](/{href[3:]})"
        return f"](/{within}/{href})"

    linked = _LINK.sub(target, text.replace("<br>", _BREAK))
    return _RENDERER.render(linked).replace(_BREAK, "<br>")
