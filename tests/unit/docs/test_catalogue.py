"""The catalogue `lobflows docs` writes: pages, index, integration map, errors."""

from __future__ import annotations

import re
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from lobflows import docs, errors
from lobflows.cli import common as cli
from lobflows.cli.docs import docs_command
from lobflows.docs import markdown
from lobflows.spec import diagram, loader, mappings, models

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
SVG = "{http://www.w3.org/2000/svg}"
CELL_SPLIT = re.compile(r"(?<!\\)\|")
MERMAID_NODE = re.compile(r'^\s+(s\d+)[(\[{>]+"(.*?)"', re.M)
MERMAID_EDGE = re.compile(r'^\s+(s\d+) -->\|"(.*?)"\| (s\d+)$', re.M)


def build(folder: Path, out: Path) -> list[Path]:
    found = docs.find_flow_folders(folder)
    catalogue = docs.assemble(docs.load_folder(p, given=folder) for p in found)
    return docs.write_site(catalogue, out)


def example_projects() -> list[loader.Project]:
    return [loader.load_project(p) for p in sorted(EXAMPLES.glob("*/flows"))]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    build(EXAMPLES, out)
    return out


def tables_of(page: str) -> list[list[list[str]]]:
    """Every table of a page as rows of cells, header row first."""
    found: list[list[list[str]]] = []
    current: list[list[str]] = []
    for line in page.splitlines() + [""]:
        if line.startswith("|"):
            cells = [c.strip() for c in CELL_SPLIT.split(line.strip())[1:-1]]
            if set("".join(cells)) != {"-"}:
                current.append(cells)
        elif current:
            found.append(current)
            current = []
    return found


def table_after(page: str, heading: str) -> list[list[str]]:
    """The first table after a heading line."""
    return tables_of(page.split(f"\n{heading}\n", 1)[1])[0]


def code_cell(cell: str) -> str:
    return cell.strip("`").replace("\\|", "|")


def mermaid_edges(page: str) -> set[tuple[str, str, str]]:
    block = page.split("```mermaid\n", 1)[1].split("```", 1)[0]
    labels = dict(MERMAID_NODE.findall(block))
    return {
        (labels[a], labels[b], flows) for a, flows, b in MERMAID_EDGE.findall(block)
    }


# -- the examples -----------------------------------------------------------


def test_docs_writes_a_page_per_flow_with_card_diagram_and_steps(site: Path):
    for project in example_projects():
        for flow in project.flows.values():
            page = (site / "flows" / f"{flow.name}.md").read_text()

            assert page.startswith(markdown.GENERATED)
            card = dict(table_after(page, "## Card")[1:])
            assert set(card) == {
                "Trigger",
                "Data",
                "Transform",
                "Target",
                "On failure",
                "Owner",
                "Retention",
            }
            assert card["Owner"] == flow.spec.card.owner
            assert diagram.mermaid(flow.spec) in page
            steps = table_after(page, "## Steps")[1:]
            shown = [code_cell(row[0]) for row in steps]
            assert shown == [s.id for s in models.walk_steps(flow.spec.steps)]


def test_docs_index_groups_flows_by_owner_and_links_each(site: Path):
    index = (site / "index.md").read_text()

    for project in example_projects():
        for flow in project.flows.values():
            assert f"\n### {flow.spec.card.owner}\n" in index
            assert f"[{flow.name}](flows/{flow.name}.md)" in index
    onboarding = table_after(index, "### it-platform@example.com")
    assert onboarding[0] == ["Flow", "Trigger", "Data", "Target", "Owner"]
    assert "employee (pii)" in onboarding[1]


def test_docs_integration_map_links_systems_through_flows(site: Path):
    index = (site / "index.md").read_text()

    edges = mermaid_edges(index.split("## Integration map", 1)[1])

    hire = "webhook /hooks/bamboohr/new-hire"
    assert (hire, "erpnext (ERPNext)", "employee-onboarding") in edges
    assert (hire, "mail (SMTP)", "employee-onboarding") in edges
    assert (hire, "chat (Slack webhook)", "employee-onboarding") in edges
    # Events between flows: emit, then the event trigger or the keyed wait.
    provisioned = "event hr.employee.provisioned"
    assert (hire, provisioned, "employee-onboarding") in edges
    assert (provisioned, "mail (SMTP)", "onboarding-buddy") in edges
    receipt = "webhook /hooks/erpnext/purchase-receipt"
    assert (receipt, "event buying.goods_received", "goods-receipt") in edges
    assert (
        "event buying.goods_received",
        "erpnext (ERPNext)",
        "purchase-request",
    ) in edges
    tickets = "webhook /hooks/support/tickets"
    assert (tickets, "erpnext (ERPNext)", "support-ticket") in edges


def test_docs_integration_map_svg_parses_and_draws_every_link(site: Path):
    index = (site / "index.md").read_text()
    edges = mermaid_edges(index.split("## Integration map", 1)[1])

    root = ET.parse(site / "integration-map.svg").getroot()

    texts = {"".join(t.itertext()) for t in root.iter(f"{SVG}text")}
    assert {"erpnext (ERPNext)", "mail (SMTP)", "chat (Slack webhook)"} <= texts
    assert "webhook /hooks/purchase-requests" in texts
    assert {"employee-onboarding", "purchase-request", "goods-receipt"} <= texts
    links = [g for g in root.iter(f"{SVG}g") if g.get("class") == "link"]
    drawn = {g.findtext(f"{SVG}title") for g in links}
    assert drawn == {f"{a} → {b}: {flows}" for a, b, flows in edges}
    assert all(g.find(f"{SVG}path") is not None for g in links)
    assert "![Integration map](integration-map.svg)" in index


def test_docs_shows_every_field_of_every_inline_map_step(site: Path):
    for project in example_projects():
        for flow in project.flows.values():
            page = (site / "flows" / f"{flow.name}.md").read_text()
            for step in models.walk_steps(flow.spec.steps):
                if not isinstance(step, models.MapStep):
                    continue
                rows = table_after(page, f"### `{step.id}`")
                assert rows[0] == [
                    "Target",
                    "Source",
                    "Converters",
                    "On missing",
                    "On null",
                    "Required",
                ]
                assert [code_cell(r[0]) for r in rows[1:]] == list(step.map)


def test_docs_every_mapping_field_appears_in_the_catalogue(site: Path):
    # Acceptance: every mapping field appears in the catalogue.
    for project in example_projects():
        for name, loaded in project.mappings.items():
            page = (site / "mappings" / f"{name}.md").read_text()
            targets = [code_cell(r[0]) for r in table_after(page, "## Fields")[1:]]
            assert targets == dotted_fields(loaded.spec.fields)


def test_docs_every_table_row_has_as_many_cells_as_its_header(site: Path):
    for page in sorted(site.rglob("*.md")):
        for table in tables_of(page.read_text()):
            widths = {len(row) for row in table}
            assert widths == {len(table[0])}, f"{page.name}: {table}"


def dotted_fields(fields: dict[str, Any], prefix: str = "") -> list[str]:
    """Field names as the catalogue shows them: sub-object fields as parent.field."""
    names: list[str] = []
    for name, raw in fields.items():
        rule = mappings.field_rule(raw)
        names.append(f"{prefix}{name}")
        if rule.fields:
            names += dotted_fields(rule.fields, f"{prefix}{name}.")
    return names


# -- a project of its own ----------------------------------------------------

FLOW = """\
flow: contact-sync
description: "Syncs contacts | pipes and \\"quotes\\"\\n\\nA second paragraph."
card:
  trigger: nightly | hourly export
  data: {entity: contact, sensitivity: pii}
  transform: "CSV -> contact | address"
  target: CRM | ERP
  on_failure: retry | dead letter
  owner: sales-ops@example.com
trigger:
  schedule: {cron: "0 2 * * *", timezone: Europe/Berlin}
steps:
  - id: contact
    description: "picks | the first\\nsecond line"
    transform: {mapping: crm-contact, input: "{{ input.record }}"}
  - id: extra
    map:
      pipe_template: "{{ input.name | trim | lower }}"
      fixed: 5000
      ruled: {from: input.x, convert: [trim], on_missing: default, default: "a|b"}
  - id: push
    call: crm.upsert
    with: {doc: "{{ steps.contact }}"}
"""
CONNECTIONS = """\
connections:
  crm:
    type: 'crm <beta> & "co"'
    base_url: ${CRM_URL}
"""
CONTACT_MAPPING = """\
mapping: crm-contact
description: A contact | as the CRM wants it.
source: CSV export row
target: CRM contact
sensitivity: pii
filter: record.active
fields:
  name: {from: Name, convert: [trim, upper], required: true}
  email: Email
  country: {from: Country, table: countries, on_missing: default, default: DE}
  source_system: {constant: csv}
  greeting: {value: "Hello {{ record.Name }}"}
  address:
    from: Address
    fields:
      street: {from: Street, convert: [trim]}
      city: City
  lines: {from: Lines, each: crm-line}
tables:
  countries: {Germany: DE, France: FR}
output_schema:
  type: object
  required: [name, email]
  properties:
    name: {type: string, minLength: 1}
    email: {type: string, format: email}
"""
LINE_MAPPING = """\
mapping: crm-line
source: order line
target: CRM line
fields:
  sku: {from: sku, convert: [upper]}
  qty: {from: qty, convert: [integer]}
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    folder = tmp_path / "sales" / "flows"
    (folder / "mappings").mkdir(parents=True)
    (folder / "contact-sync.yaml").write_text(FLOW)
    (folder / "connections.yaml").write_text(CONNECTIONS)
    (folder / "mappings" / "crm-contact.yaml").write_text(CONTACT_MAPPING)
    (folder / "mappings" / "crm-line.yaml").write_text(LINE_MAPPING)
    return folder


def test_docs_mapping_page_shows_each_rule_nested_fields_tables_and_schema(
    project: Path, tmp_path: Path
):
    build(project, tmp_path / "site")

    page = (tmp_path / "site" / "mappings" / "crm-contact.md").read_text()
    rows = {code_cell(r[0]): r for r in table_after(page, "## Fields")}

    loaded = loader.load_mappings(project)["crm-contact"]
    assert list(rows)[1:] == dotted_fields(loaded.spec.fields)
    assert rows["name"][1:6] == [
        "path `Name`",
        "trim → upper",
        "—",
        "yes",
        "error (required)",
    ]
    assert rows["country"][3] == "`countries`"
    assert rows["country"][5] == 'default `"DE"`'
    assert rows["source_system"][1] == 'constant `"csv"`'
    assert rows["greeting"][1] == "template `Hello {{ record.Name }}`"
    assert "sub-object" in rows["address"][2]
    assert "[crm-line](crm-line.md)" in rows["lines"][2]
    assert ['`"Germany"`', '`"DE"`'] in table_after(page, "### `countries`")
    assert "Required properties: name, email." in page
    summary = dict(table_after(page, "## Summary")[1:])
    assert summary["Filter"] == "`record.active`"
    assert (
        summary["Used by"] == "[contact-sync](../flows/contact-sync.md) (step contact)"
    )
    line_page = (tmp_path / "site" / "mappings" / "crm-line.md").read_text()
    assert "[crm-contact](crm-contact.md)" in line_page


def test_docs_pipes_and_line_breaks_in_flow_text_keep_rows_whole(
    project: Path, tmp_path: Path
):
    build(project, tmp_path / "site")

    page = (tmp_path / "site" / "flows" / "contact-sync.md").read_text()

    card = dict(table_after(page, "## Card")[1:])
    assert card["Target"] == "CRM \\| ERP"
    assert card["Transform"] == "CSV -&gt; contact \\| address"
    steps = {code_cell(r[0]): r for r in table_after(page, "## Steps")}
    assert steps["contact"][3].endswith("picks \\| the first<br>second line")
    assert "Syncs contacts \\| pipes" in page and "\n\nA second paragraph." in page
    fields = {code_cell(r[0]): r for r in table_after(page, "### `extra`")}
    assert code_cell(fields["pipe_template"][1].removeprefix("template ")) == (
        "{{ input.name | trim | lower }}"
    )
    assert fields["ruled"][3] == 'default `"a\\|b"`'
    assert fields["fixed"][1] == "constant `5000`"
    for table in tables_of(page):
        assert {len(row) for row in table} == {len(table[0])}


def test_docs_escapes_odd_connection_types_in_mermaid_and_svg(
    project: Path, tmp_path: Path
):
    build(project, tmp_path / "site")

    index = (tmp_path / "site" / "index.md").read_text()
    block = index.split("```mermaid\n", 2)[1].split("```", 1)[0]
    root = ET.parse(tmp_path / "site" / "integration-map.svg").getroot()

    crm_node = next(line for line in block.splitlines() if "crm (" in line)
    assert crm_node.count('"') == 2 and "|" not in crm_node and "<" not in crm_node
    texts = {"".join(t.itertext()) for t in root.iter(f"{SVG}text")}
    assert 'crm (crm <beta> & "co")' in texts
    assert "schedule 0 2 * * * (Europe/Berlin)" in texts


def test_mermaid_label_leaves_no_character_that_ends_a_label():
    label = markdown.mermaid_label('say "hi" | <b> #1 `x`\nnext')

    assert not set(label) & set('"|<>`\n')
    assert label.startswith("say #quot;hi#quot; #124; #lt;b#gt; #35;1")


def test_docs_removes_its_own_stale_pages_but_keeps_other_files(
    project: Path, tmp_path: Path
):
    out = tmp_path / "site"
    build(project, out)
    (out / "flows" / "old-flow.md").write_text(markdown.GENERATED + "\n# old\n")
    (out / "flows" / "notes.md").write_text("# kept by hand\n")

    build(project, out)

    assert not (out / "flows" / "old-flow.md").exists()
    assert (out / "flows" / "notes.md").exists()


# -- errors and the command ---------------------------------------------------


@pytest.fixture
def command() -> typer.Typer:
    app = typer.Typer()
    app.command("docs")(docs_command)
    app.command("other")(lambda: None)  # keeps "docs" a sub-command
    return app


def test_docs_folder_without_flows_is_a_clear_error(tmp_path: Path):
    (tmp_path / "empty").mkdir()

    with pytest.raises(errors.DefinitionError, match="no flows in .*empty"):
        docs.find_flow_folders(tmp_path / "empty")


def test_docs_command_exits_1_naming_a_folder_without_flows(
    tmp_path: Path, command: typer.Typer
):
    (tmp_path / "empty").mkdir()

    result = CliRunner().invoke(
        command, ["docs", str(tmp_path / "empty"), "--out", str(tmp_path / "site")]
    )

    assert result.exit_code == cli.EXIT_PROBLEMS
    assert "no flows in" in result.output and "flows/ folder" in result.output
    assert not (tmp_path / "site").exists()


def test_docs_command_exits_2_for_a_missing_folder(
    tmp_path: Path, command: typer.Typer
):
    result = CliRunner().invoke(
        command, ["docs", str(tmp_path / "nowhere"), "--out", str(tmp_path / "site")]
    )

    assert result.exit_code == cli.EXIT_USAGE
    assert "does not exist" in result.output


def test_docs_command_reports_flow_problems_with_file_and_line(
    tmp_path: Path, command: typer.Typer
):
    folder = tmp_path / "flows"
    folder.mkdir()
    broken = textwrap.dedent(
        """\
        flow: broken
        card: {trigger: t, data: {entity: e, sensitivity: internal}, transform: x,
               target: y, on_failure: z, owner: o}
        trigger: {manual: {}}
        steps:
          - id: one
            colour: blue
        """
    )
    (folder / "broken.yaml").write_text(broken)

    result = CliRunner().invoke(
        command, ["docs", str(folder), "--out", str(tmp_path / "site")]
    )

    assert result.exit_code == cli.EXIT_PROBLEMS
    assert re.search(r"broken\.yaml:\d+: steps\[0\]", result.output)
    assert "1 problem(s) in the flows; no pages written" in result.output
    assert not (tmp_path / "site" / "index.md").exists()


def test_docs_command_prints_a_line_per_folder_and_the_pages_written(
    tmp_path: Path, command: typer.Typer
):
    out = tmp_path / "site"

    result = CliRunner().invoke(command, ["docs", str(EXAMPLES), "--out", str(out)])

    assert result.exit_code == 0, result.output
    projects = example_projects()
    for folder in sorted(EXAMPLES.glob("*/flows")):
        assert f"{folder.parent.name}/flows: " in result.output
    pages = 1 + sum(len(p.flows) + len(p.mappings) for p in projects)
    assert f"wrote {pages} pages to {out}" in result.output
    assert len(list(out.rglob("*.md"))) == pages
