"""The diagrams in the examples' README pages are the ones the flows draw."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lobflows.spec import diagram, loader

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
BLOCK = re.compile(
    r"<!-- diagram of (flows/[\w-]+\.yaml)[^>]*-->\n```mermaid\n(.*?)```", re.S
)
PAGES = sorted(EXAMPLES.glob("*/README.md"))


@pytest.mark.parametrize("page", PAGES, ids=[p.parent.name for p in PAGES])
def test_each_diagram_matches_its_flow(page: Path):
    blocks = BLOCK.findall(page.read_text())

    assert blocks, f"{page} has no flow diagram"
    for flow_file, drawn in blocks:
        flow = loader.load_flow_file(page.parent / flow_file).spec
        assert drawn == diagram.mermaid(flow), (
            f"{page}: the diagram of {flow_file} is out of date; "
            f"redraw it with: lobflows flows diagram {flow_file}"
        )
