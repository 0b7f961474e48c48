"""``lobflows dlq replay`` and ``dlq discard`` write the audit log, as the
dashboard and the REST API do, with the actor ``cli:<os user>``."""

from __future__ import annotations

import getpass
from pathlib import Path

import pytest

from lobflows.store import RunStore
from lobflows.testing.servers import ServerThread
from tests import support

pytestmark = pytest.mark.acceptance

FLOW = """flow: place-order
card:
  trigger: by hand
  data: {entity: order, sensitivity: internal}
  transform: none
  target: a local service
  on_failure: dead letter
  owner: ops@example.com
trigger: {manual: {}}
retry: {max_attempts: 1}
steps:
  - id: send
    call: svc.request
    with: {method: POST, path: /orders, json: "{{ input }}"}
"""


@pytest.fixture
def store_url(sqlite_store_url: str) -> str:
    return sqlite_store_url


async def test_dlq_replay_and_discard_are_audited_with_the_cli_actor(
    store_url: str, store: RunStore, tmp_path: Path
):
    env = support.base_env(store_url)
    service = support.Service()
    service.failures["/orders"] = [422, 422]

    # Given two dead letters, left by runs the service refused
    with ServerThread(service.app()) as server:
        flows = tmp_path / "flows"
        flows.mkdir()
        (flows / "place-order.yaml").write_text(FLOW)
        (flows / "connections.yaml").write_text(
            f"connections:\n  svc: {{type: http, base_url: '{server.url}'}}\n"
        )
        for _ in range(2):
            support.cli(env, "run", "place-order", "--flows", str(flows))
    first, second = sorted(d.id for d in await store.dead_letters())

    # When one is replayed and the other discarded from the command line
    replayed = support.cli(env, "dlq", "replay", str(first))
    discarded = support.cli(
        env, "dlq", "discard", str(second), "--reason", "  duplicate\n order "
    )
    # and a closed one is discarded again
    refused = support.cli(env, "dlq", "discard", str(first))

    # Then each change is in the audit log, and the refused one is not
    assert replayed.returncode == 0, replayed.stderr
    assert discarded.returncode == 0, discarded.stderr
    assert refused.returncode != 0 and "not open" in refused.stderr
    entries = list(reversed(await store.audit_entries(limit=10)))
    assert [(e.action, e.target) for e in entries] == [
        ("replay", f"dead letter {first}"),
        ("discard", f"dead letter {second}"),
    ]
    actor = f"cli:{getpass.getuser()}"
    assert {e.actor for e in entries} == {actor}
    replay, discard = entries
    letters = {d.id: d for d in await store.dead_letters(status=None)}
    assert replay.detail == {
        "run_id": letters[first].run_id,
        "flow": "place-order",
        "step": "send",
        "corrected_input": False,
        "corrected_run_input": False,
    }
    assert discard.detail == {
        "run_id": letters[second].run_id,
        "flow": "place-order",
        "step": "send",
        "reason": "duplicate order",
    }
    assert letters[second].status == "discarded"


async def test_dlq_commands_answer_not_found_for_an_id_beyond_64_bits(
    store_url: str, store: RunStore, tmp_path: Path
):
    env = support.base_env(store_url)
    huge = "99999999999999999999999"
    not_an_object = tmp_path / "input.json"
    not_an_object.write_text('"str"')

    shown = support.cli(env, "dlq", "show", huge)
    replayed = support.cli(env, "dlq", "replay", huge)
    discarded = support.cli(env, "dlq", "discard", huge)
    corrected = support.cli(env, "dlq", "replay", "1", "--input", str(not_an_object))

    for done in (shown, replayed, discarded):
        assert done.returncode == 3, done.stderr  # not found
        assert f"no dead letter with id {huge}" in done.stderr
        assert "unexpected" not in done.stderr
    assert corrected.returncode == 2  # usage
    assert "must be a JSON object, not a string" in corrected.stderr
