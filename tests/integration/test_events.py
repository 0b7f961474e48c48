"""Events: an emit step, or a delivered event, starts a run of every listening flow once."""

from __future__ import annotations

from pathlib import Path

import pytest

from lobflows import errors
from lobflows.engine.events import Event, EventRouter, topic_pattern
from lobflows.runtime import Runtime
from lobflows.settings import Settings
from lobflows.spec import loader
from tests import support

pytestmark = pytest.mark.integration

CARD = """card:
  trigger: see below
  data: {entity: employee, sensitivity: internal}
  transform: none
  target: the run store
  on_failure: dead letter
  owner: team@example.com
"""
PUBLISHER = (
    "flow: publisher\n"
    + CARD
    + """trigger: {manual: {}}
steps:
  - id: announce
    emit: {topic: hr.hire.created, data: {email: "{{ input.email }}"}}
"""
)
LISTENER = (
    "flow: listener\n"
    + CARD
    + """trigger: {event: {topic: hr.*.created}}
steps:
  - id: seen
    map: {email: "{{ input.email }}"}
"""
)
DEAF = (
    "flow: deaf\n"
    + CARD
    + """trigger: {event: {topic: finance.invoice.paid}}
steps:
  - id: seen
    map: {x: "{{ input }}"}
"""
)


@pytest.fixture
async def runtime(store_url: str, tmp_path: Path):
    for name, text in (
        ("publisher", PUBLISHER),
        ("listener", LISTENER),
        ("deaf", DEAF),
    ):
        (tmp_path / f"{name}.yaml").write_text(text)
    opened = await Runtime.open(Settings(database_url=store_url), tmp_path)
    yield opened
    await opened.close()


@pytest.mark.parametrize(
    ("pattern", "topic", "matches"),
    [
        ("hr.*.created", "hr.hire.created", True),
        ("hr.*.created", "hr.hire.contract.created", False),  # * is one part
        ("hr.hire.created", "hr.hire.created.v2", False),
    ],
)
def test_topic_pattern_matches_one_part_per_star(
    pattern: str, topic: str, matches: bool
):
    assert bool(topic_pattern(pattern).match(topic)) is matches


async def test_an_emit_step_starts_each_listening_flow(runtime: Runtime):
    publisher, _ = await runtime.engine.start_run(
        "publisher", input={"email": "ada@example.com"}, trigger="manual"
    )

    await support.drain(runtime)

    emitted = (await runtime.store.completed_steps(publisher.id))["announce"]
    [listener_run] = await runtime.store.list_runs(flow="listener")
    assert emitted["runs"] == [listener_run.id]
    assert listener_run.status == "succeeded" and listener_run.trigger == "event"
    assert listener_run.input == {"email": "ada@example.com"}
    assert await runtime.store.list_runs(flow="deaf") == []


async def test_a_redelivered_event_starts_nothing_new(runtime: Runtime):
    router = EventRouter(runtime.engine)
    event = Event(
        topic="hr.hire.created",
        data={"email": "bo@example.com"},
        id="broker-msg-17",
        source="rabbitmq",
    )

    first = await router.deliver(event)
    again = await router.deliver(event)

    assert first == again and len(first) == 1
    assert len(await runtime.store.list_runs(flow="listener")) == 1


ORDER = (
    "flow: order\n"
    + CARD
    + """trigger: {manual: {}}
steps:
  - id: goods
    wait:
      event: buying.goods_received
      key: "{{ input.order }}"
      timeout_seconds: 86400
  - id: received
    map: {qty: "{{ steps.goods.data.qty }}"}
"""
)
RECEIPT = (
    "flow: receipt\n"
    + CARD
    + """trigger: {manual: {}}
steps:
  - id: tell
    emit:
      topic: buying.goods_received
      key: "{{ input.order }}"
      data: {qty: "{{ input.qty }}"}
"""
)


@pytest.fixture
async def buying(store_url: str, tmp_path: Path):
    (tmp_path / "order.yaml").write_text(ORDER)
    (tmp_path / "receipt.yaml").write_text(RECEIPT)
    opened = await Runtime.open(Settings(database_url=store_url), tmp_path)
    yield opened
    await opened.close()


async def test_a_keyed_event_resumes_only_the_run_waiting_for_its_key(
    buying: Runtime,
):
    engine = buying.engine
    first, _ = await engine.start_run(
        "order", input={"order": "PO-1"}, trigger="manual"
    )
    second, _ = await engine.start_run(
        "order", input={"order": "PO-2"}, trigger="manual"
    )
    await support.drain(buying)
    assert (await buying.store.get_run(first.id)).status == "waiting"

    await engine.start_run(
        "receipt", input={"order": "PO-2", "qty": 5}, trigger="manual"
    )
    await support.drain(buying)

    assert (await buying.store.get_run(first.id)).status == "waiting"
    assert (await buying.store.get_run(second.id)).status == "succeeded"
    goods = (await buying.store.completed_steps(second.id))["goods"]
    assert (goods["key"], goods["data"]) == ("PO-2", {"qty": 5})


async def test_a_keyed_event_that_comes_first_waits_for_its_run(buying: Runtime):
    engine = buying.engine
    await engine.start_run(
        "receipt", input={"order": "PO-9", "qty": 2}, trigger="manual"
    )
    await support.drain(buying)

    run, _ = await engine.start_run("order", input={"order": "PO-9"}, trigger="manual")
    await support.drain(buying)

    assert (await buying.store.get_run(run.id)).status == "succeeded"
    received = (await buying.store.completed_steps(run.id))["received"]
    assert received == {"qty": 2}

    later, _ = await engine.start_run(
        "order", input={"order": "PO-9"}, trigger="manual"
    )
    await support.drain(buying)
    assert (await buying.store.get_run(later.id)).status == "waiting"  # taken once


def test_an_event_wait_needs_its_key(tmp_path: Path):
    path = tmp_path / "order.yaml"
    path.write_text(ORDER.replace('      key: "{{ input.order }}"\n', ""))
    with pytest.raises(errors.FlowFileError) as refused:
        loader.load_flow_file(path)
    assert "an event wait needs a key" in str(refused.value.problems[0])
