"""The flow catalogue: Markdown pages a new team member can read.

``lobflows docs`` loads flows folders into a `Catalogue`, draws the
`IntegrationMap` of the systems they link, and writes one page per flow and
per named mapping, an index by owner, and the map as Mermaid and as SVG.
"""

from __future__ import annotations

from lobflows.docs.catalogue import (
    Catalogue,
    FlowEntry,
    Folder,
    MappingEntry,
    assemble,
    find_flow_folders,
    load_folder,
)
from lobflows.docs.integration_map import IntegrationMap, Link, System
from lobflows.docs.site import site_files, write_site

__all__ = [
    "Catalogue",
    "FlowEntry",
    "Folder",
    "IntegrationMap",
    "Link",
    "MappingEntry",
    "System",
    "assemble",
    "find_flow_folders",
    "load_folder",
    "site_files",
    "write_site",
]
