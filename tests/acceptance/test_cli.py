"""The command line as a user meets it: validation messages, schema, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lobflows.connectors.base import connector_classes
from tests import support

pytestmark = pytest.mark.acceptance
# Every registered connection type, as error messages list them.
KNOWN_TYPES = ", ".join(sorted(connector_classes()))

BROKEN = """flow: Bad Name
card:
  trigger: form
  data: {entity: request, sensitivity: secretive}
  transform: x
  target: y
  on_failure: z
trigger:
  webhook: {path: /hooks/x, mode: later}
steps:
  - call: crm
  - map: {}
"""


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return support.base_env(f"sqlite:///{tmp_path / 'runs.db'}")


def test_validate_prints_every_problem_with_file_line_and_field(env, tmp_path: Path):
    flow = tmp_path / "broken.yaml"
    flow.write_text(BROKEN)

    result = support.cli(env, "validate", str(flow))

    assert result.returncode == 1
    lines = result.stderr.splitlines()
    expected = [
        f"{flow}:1: flow:",
        f"{flow}:2: card.owner: is required but missing",
        f"{flow}:4: card.data.sensitivity: expected 'public', 'internal', 'confidential', 'pii' or 'secret'",
        f"{flow}:9: trigger.webhook.mode: expected 'async' or 'sync'",
        f"{flow}:11: steps[0].call:",
        f"{flow}:12: steps[1].map:",
    ]
    for start in expected:
        assert any(line.startswith(start) for line in lines), (start, result.stderr)
    assert "Traceback" not in result.stderr


def test_validate_accepts_the_examples(env):
    result = support.cli(
        env,
        "validate",
        str(support.ONBOARDING / "flows"),
        str(support.REPO / "tests" / "flows" / "quote"),
    )

    assert result.returncode == 0, result.stderr
    assert (
        "ok" in result.stdout
        and "employee-onboarding" in result.stdout
        and "quote" in result.stdout
    )


def test_validate_reports_a_connection_of_an_unknown_type(env, tmp_path: Path):
    (tmp_path / "flow.yaml").write_text(
        (support.REPO / "tests" / "flows" / "quote" / "quote.yaml").read_text()
    )
    (tmp_path / "connections.yaml").write_text("connections:\n  crm: {type: nosuch}\n")

    result = support.cli(
        env,
        "--secrets",
        "/dev/null",
        "serve",
        str(tmp_path),
        "--port",
        str(support.free_port()),
    )

    assert result.returncode == 1
    assert (
        f"connections.crm.type: expected one of {KNOWN_TYPES} (got 'nosuch')"
        in result.stderr
    )


def test_schema_prints_the_json_schema_of_flow_files(env):
    result = support.cli(env, "schema")

    schema = json.loads(result.stdout)
    assert schema["title"] == "LoB Flows flow file"
    assert {"flow", "card", "trigger", "steps"} <= set(schema["required"])
    assert set(schema["$defs"]["Card"]["required"]) == {
        "trigger",
        "data",
        "transform",
        "target",
        "on_failure",
        "owner",
    }


@pytest.mark.parametrize(
    ("args", "code", "phrase"),
    [
        (
            ["runs", "show", "abc"],
            3,
            "too short",
        ),  # a prefix shorter than six characters
        (["runs", "show", "ffffffffff"], 3, "no run matches"),
        (["dlq", "show", "42"], 3, "no dead letter with id 42"),
        (["dlq", "replay", "42"], 3, "no dead letter with id 42"),
        (
            ["run", "quote", "--input", "/nonexistent/input.json"],
            2,
            "cannot read input",
        ),
    ],
)
def test_commands_answer_bad_arguments_with_one_line_and_a_named_exit_code(
    env, args, code, phrase
):
    support.create_store(env["LOBFLOWS_DB"])
    result = support.cli(env, *args)

    assert result.returncode == code, result.stderr
    assert phrase in result.stderr
    assert "Traceback" not in result.stderr


def test_validate_checks_calls_against_the_declared_connections(env, tmp_path: Path):
    flow = (support.REPO / "tests" / "flows" / "quote" / "quote.yaml").read_text()
    flow = flow.replace(
        "  - respond:", "  - call: nope.create\n  - call: crm.frob\n  - respond:"
    )
    (tmp_path / "quote.yaml").write_text(flow)
    (tmp_path / "connections.yaml").write_text(
        "connections:\n  crm: {type: http, base_url: 'http://127.0.0.1:9', timeout_seconds: lots}\n  chat: {type: erpnextt}\n"
    )

    result = support.cli(env, "validate", str(tmp_path))

    assert result.returncode == 1
    for phrase in (
        "connections.crm.timeout_seconds: input should be a valid number",
        f"connections.chat.type: expected one of {KNOWN_TYPES} (got 'erpnextt')",
        "no connection named 'nope'; declared: chat, crm",
        "connection 'crm' (http) has no action 'frob'; known: fetch_all, request",
    ):
        assert phrase in result.stderr, result.stderr


def test_connectors_lists_types_and_shows_one(env):
    listed = support.cli(env, "connectors", "list")
    shown = support.cli(env, "connectors", "show", "http")
    missing = support.cli(env, "connectors", "show", "nope")

    assert listed.returncode == 0
    for kind in ("erpnext", "http", "smtp", "sql", "rabbitmq"):
        assert kind in listed.stdout
    assert shown.returncode == 0
    assert "fetch_all" in shown.stdout and "base_url" in shown.stdout
    assert "failures_to_open" in shown.stdout  # the limits every connection takes
    assert missing.returncode == 3 and "no connection type 'nope'" in missing.stderr


def test_connectors_check_reaches_each_connection(env, tmp_path: Path):
    (tmp_path / "noop.yaml").write_text(
        """flow: noop
card:
  trigger: by hand
  data: {entity: nothing, sensitivity: public}
  transform: none
  target: none
  on_failure: dead letter
  owner: team@example.com
trigger: {manual: {}}
steps:
  - map: {ok: true}
"""
    )
    (tmp_path / "connections.yaml").write_text(
        f"""connections:
  store: {{type: sql, url: "postgresql://postgres@127.0.0.1:5432/postgres"}}
  gone: {{type: http, base_url: "http://127.0.0.1:{support.free_port()}/api"}}
"""
    )

    result = support.cli(env, "connectors", "check", str(tmp_path))

    assert result.returncode == 1
    assert "store" in result.stdout and "connected to postgresql" in result.stdout
    assert "gone" in result.stdout and "failed" in result.stdout
    assert "1 connection(s) failed: gone" in result.stderr
