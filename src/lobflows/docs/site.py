"""Writing the catalogue as a folder of Markdown pages and one SVG picture.

    SITE/index.md                 every flow by owner, mappings, integration map
    SITE/integration-map.svg      the integration map as a picture
    SITE/flows/<flow>.md          one page per flow
    SITE/mappings/<mapping>.md    one page per named mapping

Pages this command wrote before (they start with the generated marker)
that no longer belong to a flow or mapping are removed; other files in the
folder are left alone.
"""

from __future__ import annotations

from pathlib import Path

from lobflows.docs import flow_page, index_page, mapping_page, markdown, svg
from lobflows.docs.catalogue import Catalogue

INDEX_PAGE = "index.md"
FLOWS_FOLDER = "flows"
MAPPINGS_FOLDER = "mappings"


def site_files(catalogue: Catalogue) -> dict[str, str]:
    """Every file of the site, by path relative to the site folder."""
    landscape = catalogue.integration_map()
    files = {
        INDEX_PAGE: index_page.render(catalogue, landscape),
        index_page.MAP_IMAGE: svg.render(landscape),
    }
    for flow in catalogue.flows:
        files[f"{FLOWS_FOLDER}/{flow.page}.md"] = flow_page.render(flow, catalogue)
    for mapping in catalogue.mappings:
        files[f"{MAPPINGS_FOLDER}/{mapping.page}.md"] = mapping_page.render(
            mapping, catalogue
        )
    return files


def write_site(catalogue: Catalogue, out: Path) -> list[Path]:
    """Write the site into `out`; returns the Markdown pages written.

    Raises OSError when the folder or a file cannot be written.
    """
    files = site_files(catalogue)
    written = []
    for relative, content in files.items():
        path = out / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
        written.append(path)
    _remove_stale(out, set(written))
    return [path for path in written if path.suffix == ".md"]


def _remove_stale(out: Path, written: set[Path]) -> None:
    for folder in (out / FLOWS_FOLDER, out / MAPPINGS_FOLDER):
        if not folder.is_dir():
            continue
        for page in folder.glob("*.md"):
            if page not in written and _is_generated(page):
                page.unlink()


def _is_generated(page: Path) -> bool:
    try:
        with page.open(encoding="utf-8") as stream:
            return stream.readline().rstrip("\n") == markdown.GENERATED
    except (OSError, UnicodeDecodeError):
        return False
