"""Sub-flows: a step runs another flow and waits, as a row, for its result."""

from __future__ import annotations

from pathlib import Path

import pytest

from lobflows.runtime import Runtime
from lobflows.settings import Settings
from tests import support

pytestmark = pytest.mark.integration

CARD = """card:
  trigger: by hand
  data: {entity: person, sensitivity: internal}
  transform: none
  target: the run store
  on_failure: dead letter
  owner: team@example.com
trigger: {manual: {}}
"""
PARENT = (
    "flow: parent\n"
    + CARD
    + """steps:
  - id: names
    subflow: {flow: child, input: {first: "{{ input.first }}", last: "{{ input.last | default(none) }}"}}
  - id: greeting
    map: {text: "Hello, {{ steps.names.result.full }}"}
"""
)
CHILD = (
    "flow: child\n"
    + CARD
    + """steps:
  - id: full
    map:
      full: "{{ input.first }} {{ input.last }}"
      last: {from: input.last, on_null: error}
  - respond: {body: {full: "{{ steps.full.full }}"}}
"""
)


@pytest.fixture
async def runtime(store_url: str, tmp_path: Path):
    (tmp_path / "parent.yaml").write_text(PARENT)
    (tmp_path / "child.yaml").write_text(CHILD)
    opened = await Runtime.open(Settings(database_url=store_url), tmp_path)
    yield opened
    await opened.close()


async def test_a_subflow_runs_as_a_child_and_returns_its_result(runtime: Runtime):
    parent, _ = await runtime.engine.start_run(
        "parent", input={"first": "Ada", "last": "Lovelace"}, trigger="manual"
    )

    await support.drain(runtime)

    done = await runtime.store.get_run(parent.id)
    assert done.status == "succeeded", done.error
    [child] = await runtime.store.children(parent.id)
    assert (
        child.flow == "child"
        and child.status == "succeeded"
        and child.trigger == "subflow"
    )
    steps = await runtime.store.completed_steps(parent.id)
    assert steps["names"] == {"run_id": child.id, "result": {"full": "Ada Lovelace"}}
    assert steps["greeting"] == {"text": "Hello, Ada Lovelace"}


async def test_a_failed_subflow_dead_letters_the_parent_naming_the_child(
    runtime: Runtime,
):
    parent, _ = await runtime.engine.start_run(
        "parent", input={"first": "Ada"}, trigger="manual"
    )

    await support.drain(runtime)

    [child] = await runtime.store.children(parent.id)
    failed = await runtime.store.get_run(parent.id)
    assert child.status == "failed"
    assert failed.status == "failed"
    assert f"subflow 'child' run {child.id} failed" in failed.error
    assert {letter.run_id for letter in await runtime.store.dead_letters()} == {
        parent.id,
        child.id,
    }


LINES = (
    "flow: lines\n"
    + CARD
    + """steps:
  - id: each
    foreach: {items: "{{ input.people }}", flow: child, concurrency: 2}
  - id: summary
    map: {ok: "{{ steps.each.succeeded }}", failed: "{{ steps.each.failed }}"}
"""
)


async def test_foreach_runs_a_child_per_item_and_parks_failures_one_by_one(
    store_url: str, tmp_path: Path
):
    for name, text in (("lines", LINES), ("child", CHILD)):
        (tmp_path / f"{name}.yaml").write_text(text)
    runtime = await Runtime.open(Settings(database_url=store_url), tmp_path)
    people = [
        {"first": "Ada", "last": "Lovelace"},
        {"first": "Bo", "last": None},  # the child refuses a null last name
        {"first": "Cy", "last": "Young"},
        {"first": "Di", "last": "Prince"},
        {"first": "Ed", "last": None},
    ]
    try:
        run, _ = await runtime.engine.start_run(
            "lines", input={"people": people}, trigger="manual"
        )
        await support.drain(runtime)
        done = await runtime.store.get_run(run.id)
        steps = await runtime.store.completed_steps(run.id)
        letters = await runtime.store.dead_letters()
        children = await runtime.store.children(run.id)
    finally:
        await runtime.close()

    assert done.status == "succeeded", done.error
    results = steps["each"]["results"]
    assert [r["status"] for r in results] == [
        "succeeded",
        "failed",
        "succeeded",
        "succeeded",
        "failed",
    ]
    assert [r["result"] for r in results][0] == {"full": "Ada Lovelace"}
    assert steps["summary"] == {"ok": 3, "failed": 2}
    assert len(children) == 5 and all(c.trigger == "foreach" for c in children)
    assert sorted(letter.run_id for letter in letters) == sorted(
        r["run_id"] for r in results if r["status"] == "failed"
    )
