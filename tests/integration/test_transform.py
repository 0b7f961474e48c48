"""Named mappings in flows: the transform step, its trace, validation before
data leaves, and mapping fixtures run by `lobflows test`."""

from __future__ import annotations

from pathlib import Path

import pytest

from lobflows import errors
from lobflows.runtime import Runtime
from lobflows.settings import Settings
from lobflows.spec import loader
from lobflows.testing.servers import ServerThread
from lobflows.transform import fixtures
from tests import support

pytestmark = pytest.mark.integration

CARD = """card:
  trigger: by hand
  data: {entity: customer, sensitivity: SENSITIVITY}
  transform: mapping customer
  target: the run store
  on_failure: dead letter
  owner: crm-team@example.com
trigger: {manual: {}}
"""

FLOW = (
    "flow: import-customers\n"
    + CARD
    + """steps:
  - id: customers
    transform:
      mapping: customer
      input: "{{ input.rows }}"
      on_reject: ON_REJECT
  - id: check
    validate:
      data: "{{ steps.customers.records }}"
      schema:
        type: array
        items:
          type: object
          required: [email, country]
          properties:
            email: {type: string, pattern: "@"}
            lines: {type: array, maxItems: 2}
"""
)

CUSTOMER = """mapping: customer
description: CRM export row to the customer record
source: CRM export row
target: customer record
sensitivity: pii
filter: "record.status | default('') != 'deleted'"
fields:
  name: {from: name, convert: [trim, title], required: true}
  email: {from: email, convert: [trim, lower], required: true}
  country: {from: country, table: countries}
  segment: {constant: smb}
  note: {from: note, on_missing: "null"}
  lines: {from: orders, each: order-line, on_missing: skip}
  address:
    from: address
    on_missing: skip
    fields:
      city: {from: city, convert: [trim]}
tables:
  countries: {DE: Germany, FR: France}
"""

ORDER_LINE = """mapping: order-line
source: order line
target: order line
fields:
  sku: {from: sku, required: true}
  qty: {from: qty}
"""

ROWS = [
    {
        "name": " ada lovelace ",
        "email": " Ada@Example.COM",
        "country": "DE",
        "orders": [{"sku": "A1", "qty": 2}],
        "address": {"city": " Berlin "},
    },
    {"name": "gone", "email": "x@example.com", "country": "DE", "status": "deleted"},
    {"name": "bo", "email": "bo@example.com", "country": "XX"},
]


def write_project(folder: Path, *, sensitivity="pii", on_reject="skip") -> Path:
    (folder / "mappings").mkdir(parents=True, exist_ok=True)
    (folder / "mappings" / "customer.yaml").write_text(CUSTOMER)
    (folder / "mappings" / "order-line.yaml").write_text(ORDER_LINE)
    (folder / "import-customers.yaml").write_text(
        FLOW.replace("SENSITIVITY", sensitivity).replace("ON_REJECT", on_reject)
    )
    return folder


@pytest.fixture
async def runtime(store_url: str, tmp_path: Path, request: pytest.FixtureRequest):
    options = getattr(request, "param", {})
    opened = await Runtime.open(
        Settings(database_url=store_url), write_project(tmp_path, **options)
    )
    yield opened
    await opened.close()


async def run_flow(runtime: Runtime, rows) -> str:
    run, _ = await runtime.engine.start_run(
        "import-customers", input={"rows": rows}, trigger="manual"
    )
    await support.drain(runtime)
    return run.id


async def test_a_list_is_mapped_with_rejects_and_dropped_records_listed(runtime):
    run_id = await run_flow(runtime, ROWS)

    assert (await runtime.store.get_run(run_id)).status == "succeeded"
    customers = (await runtime.store.completed_steps(run_id))["customers"]
    assert customers["records"] == [
        {
            "name": "Ada Lovelace",
            "email": "ada@example.com",
            "country": "Germany",
            "segment": "smb",
            "note": None,
            "lines": [{"sku": "A1", "qty": 2}],
            "address": {"city": "Berlin"},
        }
    ]
    assert customers["dropped"] == 1
    [rejected] = customers["rejected"]
    assert (rejected["record"], rejected["field"]) == (2, "country")
    assert "*** is not in table 'countries'" in rejected["reason"]  # pii: masked


async def test_the_trace_says_which_rule_made_each_field(runtime):
    run_id = await run_flow(runtime, ROWS[:1])

    [attempt] = [
        a for a in await runtime.store.attempts(run_id) if a.step == "customers"
    ]
    by_field = {entry["field"]: entry for entry in attempt.trace}
    assert by_field["name"]["source"] == "name"
    assert by_field["name"]["rule"] == "trim | title"
    assert by_field["country"]["rule"] == "table countries"
    assert by_field["note"]["outcome"] == "missing, null"
    shown = support.cli(
        support.base_env(runtime.settings.database_url),
        "runs",
        "show",
        run_id,
        "--mapping",
    )
    assert shown.returncode == 0, shown.stderr
    assert "trim | title" in shown.stdout and "table countries" in shown.stdout


@pytest.mark.parametrize("runtime", [{"on_reject": "fail"}], indirect=True)
async def test_a_rejected_record_fails_the_step_naming_record_field_and_rule(runtime):
    run_id = await run_flow(runtime, ROWS)

    failed = await runtime.store.get_run(run_id)
    assert failed.status == "failed"
    assert "record 2: field 'country'" in failed.error
    assert "XX" not in failed.error  # the card says pii


@pytest.mark.parametrize("runtime", [{"sensitivity": "internal"}], indirect=True)
async def test_validation_names_every_problem_before_data_leaves(runtime):
    row = {**ROWS[0], "orders": [{"sku": "A"}, {"sku": "B"}, {"sku": "C"}]}
    run_id = await run_flow(runtime, [row, {**ROWS[0], "email": "no-at-sign"}])

    failed = await runtime.store.get_run(run_id)
    assert failed.status == "failed"
    assert "record[0].lines: value" in failed.error and "maxItems: 2" in failed.error
    assert "record[1].email: value 'no-at-sign' breaks pattern" in failed.error


def test_load_refuses_unknown_converters_tables_and_nested_mappings(tmp_path: Path):
    folder = write_project(tmp_path)
    customer = folder / "mappings" / "customer.yaml"
    customer.write_text(
        CUSTOMER.replace("[trim, title]", "[trim, shout]").replace(
            "table: countries", "table: lands"
        )
    )
    with pytest.raises(errors.FlowFileError) as refused:
        loader.load_mappings(folder)
    text = "\n".join(str(p) for p in refused.value.problems)
    assert "customer.yaml:8: fields.name.convert" in text and "shout" in text
    assert "customer.yaml:10: fields.country.table: no table named 'lands'" in text

    customer.write_text(CUSTOMER.replace("each: order-line", "each: order-lines"))
    with pytest.raises(errors.FlowFileError) as refused:
        loader.load_mappings(folder)
    assert "no mapping named 'order-lines'" in str(refused.value.problems[0])


def test_fixtures_pass_and_a_failing_case_shows_a_diff(tmp_path: Path):
    folder = write_project(tmp_path)
    tests = folder / "mappings" / "tests"
    tests.mkdir()
    (tests / "customer.yaml").write_text(
        """- name: a full row
  input: {name: " ada ", email: "A@x.org", country: FR}
  expected: {name: Ada, email: a@x.org, country: France, segment: smb, note: null}
- name: deleted rows are dropped
  input: {name: x, email: x@x.org, status: deleted}
  dropped: true
- name: no email is refused
  input: {name: x}
  rejected: {field: email, reason: requires a value}
- name: a wrong expectation
  input: {name: " bo ", email: b@x.org, country: DE}
  expected: {name: Bob, email: b@x.org, country: Germany, segment: smb, note: null}
"""
    )

    results = fixtures.run_fixtures(folder)

    assert [r.passed for r in results] == [True, True, True, False]
    assert '-  "name": "Bob",' in results[3].detail
    assert '+  "name": "Bo",' in results[3].detail
    shown = support.cli(support.base_env("sqlite:///unused.db"), "test", str(folder))
    assert shown.returncode == 1
    assert "3 passed, 1 failed" in shown.stderr + shown.stdout


ENRICHED = (
    "flow: enrich-customers\n"
    + CARD.replace("SENSITIVITY", "internal")
    + """steps:
  - id: customers
    transform:
      mapping: customer
      input: "{{ input.rows }}"
      enrich:
        - field: region
          call: geo.request
          with: {method: GET, path: "/regions/{{ record.country }}"}
          value: "{{ result.body.path }}"
          cache_seconds: 3600
"""
)


async def test_enrichment_asks_a_connector_once_per_value_within_the_cache(
    store_url: str, tmp_path: Path
):
    service = support.Service()
    with ServerThread(service.app()) as server:
        folder = write_project(tmp_path)
        (folder / "import-customers.yaml").unlink()
        (folder / "enrich-customers.yaml").write_text(ENRICHED)
        (folder / "connections.yaml").write_text(
            f"connections:\n  geo: {{type: http, base_url: '{server.url}'}}\n"
        )
        runtime = await Runtime.open(Settings(database_url=store_url), folder)
        try:
            rows = [ROWS[0], {**ROWS[0], "name": "other"}, {**ROWS[0], "country": "FR"}]
            run, _ = await runtime.engine.start_run(
                "enrich-customers", input={"rows": rows}, trigger="manual"
            )
            await support.drain(runtime)
            output = (await runtime.store.completed_steps(run.id))["customers"]
        finally:
            await runtime.close()

    assert [r["region"] for r in output["records"]] == [
        "/regions/Germany",
        "/regions/Germany",
        "/regions/France",
    ]
    assert service.log == ["GET /regions/Germany", "GET /regions/France"]
