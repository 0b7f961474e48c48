"""The engine in-process: version pinning and journal replay."""

from __future__ import annotations

from pathlib import Path

import pytest

from lobflows.runtime import Runtime
from lobflows.settings import Settings

pytestmark = pytest.mark.integration

FLOW = """flow: greet
card:
  trigger: by hand
  data: {entity: person, sensitivity: internal}
  transform: name -> greeting
  target: the caller
  on_failure: dead letter
  owner: team@example.com
trigger: {manual: {}}
steps:
  - id: greeting
    map: {text: "GREETING, {{ input.name }}"}
  - respond: {body: "{{ steps.greeting.text }}"}
"""


async def open_runtime(store_url: str, folder: Path, greeting: str) -> Runtime:
    (folder / "greet.yaml").write_text(FLOW.replace("GREETING", greeting))
    return await Runtime.open(Settings(database_url=store_url), folder)


async def test_a_run_keeps_the_flow_version_it_started_with(
    store_url: str, tmp_path: Path
):
    first = await open_runtime(store_url, tmp_path, "Hello")
    run, _ = await first.engine.start_run(
        "greet", input={"name": "Ada"}, trigger="manual"
    )
    await first.close()

    second = await open_runtime(store_url, tmp_path, "Goodbye")
    try:
        [claimed] = await second.store.claim_runs(
            owner=second.engine.owner, limit=5, lease_seconds=30
        )
        await second.engine.execute(claimed)
        newer, _ = await second.engine.start_run(
            "greet", input={"name": "Bo"}, trigger="manual", claim=True
        )
        await second.engine.execute(newer)
        await second.store.flush()

        old_run, new_run = (
            await second.store.get_run(run.id),
            await second.store.get_run(newer.id),
        )
    finally:
        await second.close()
    assert old_run.response["body"] == "Hello, Ada"
    assert new_run.response["body"] == "Goodbye, Bo"
    assert old_run.flow_version_id != new_run.flow_version_id


async def test_an_unchanged_flow_keeps_its_version(store_url: str, tmp_path: Path):
    first = await open_runtime(store_url, tmp_path, "Hello")
    run, _ = await first.engine.start_run(
        "greet", input={"name": "Ada"}, trigger="manual"
    )
    await first.close()
    second = await open_runtime(store_url, tmp_path, "Hello")
    try:
        again, _ = await second.engine.start_run(
            "greet", input={"name": "Ada"}, trigger="manual"
        )
    finally:
        await second.close()

    assert again.flow_version_id == run.flow_version_id


BIG = FLOW.replace(
    'map: {text: "GREETING, {{ input.name }}"}',
    'map: {text: "GREETING, {{ input.name }}", blob: "{{ \'x\' * 5000 }}"}',
).replace('{body: "{{ steps.greeting.text }}"}', '{body: "{{ steps.greeting.blob }}"}')


async def test_a_resumed_run_names_an_output_cut_at_the_data_budget(
    store_url: str, tmp_path: Path
):
    (tmp_path / "greet.yaml").write_text(BIG.replace("GREETING", "Hi"))
    settings = Settings(database_url=store_url, step_data_budget_bytes=1024)
    runtime = await Runtime.open(settings, tmp_path)
    try:
        run, _ = await runtime.engine.start_run(
            "greet", input={"name": "Ada"}, trigger="manual", claim=True
        )
        flow = runtime.engine.project.flows["greet"].spec
        greeting = flow.steps[0]
        # given the first step's record, as a crash would leave it
        output = {"text": "Hi, Ada", "blob": "x" * 5000}
        await runtime.store.record_success(
            run_id=run.id,
            step=greeting.id,
            attempt=1,
            input=None,
            output=output,
            started_at=run.created_at,
        )
        # when another pass resumes the run
        await runtime.engine.execute(await runtime.store.get_run(run.id))
        failed = await runtime.store.get_run(run.id)
    finally:
        await runtime.close()

    assert failed.status == "failed"
    assert (
        "stored output of step 'greeting' was larger than the step data budget"
        in failed.error
    )


async def test_flow_versions_count_the_runs_each_has_in_flight(
    store_url: str, tmp_path: Path
):
    first = await open_runtime(store_url, tmp_path, "Hello")
    for name in ("a", "b"):
        await first.engine.start_run("greet", input={"name": name}, trigger="manual")
    await first.close()
    second = await open_runtime(store_url, tmp_path, "Goodbye")
    try:
        await second.engine.start_run("greet", input={"name": "c"}, trigger="manual")
        versions = await second.store.flow_versions("greet")
    finally:
        await second.close()

    assert [(v["version"], v["in_flight"]) for v in versions] == [(1, 2), (2, 1)]
