from __future__ import annotations

from pathlib import Path

import pytest

from lobflows import errors
from lobflows.spec import loader

CARD = """card:
  trigger: a form is sent
  data: {entity: request, sensitivity: internal}
  transform: form -> ticket
  target: helpdesk
  on_failure: retry, then dead letter
  owner: ops@example.com
"""


def flow_text(
    steps: str, *, card: str = CARD, trigger: str = "trigger: {manual: {}}\n"
) -> str:
    return "flow: demo\n" + card + trigger + "steps:\n" + steps


def problems_of(text: str) -> list[errors.Problem]:
    with pytest.raises(errors.FlowFileError) as caught:
        loader.load_flow_text(text, "demo.yaml")
    return caught.value.problems


def test_load_flow_text_accepts_a_complete_flow_and_names_steps():
    loaded = loader.load_flow_text(
        flow_text("  - map: {a: x}\n  - call: crm.request\n  - call: crm.request\n"),
        "demo.yaml",
    )

    assert [s.id for s in loaded.spec.steps] == ["map", "crm_request", "crm_request_2"]
    assert loaded.spec.card.data.sensitivity == "internal"


def test_load_flow_text_refuses_a_flow_without_a_complete_card():
    card = CARD.replace("  owner: ops@example.com\n", "").replace(
        "  target: helpdesk\n", ""
    )

    problems = problems_of(flow_text("  - map: {a: x}\n", card=card))

    assert {(p.field, p.line) for p in problems} == {
        ("card.owner", 2),
        ("card.target", 2),
    }
    assert all(p.message == "is required but missing" for p in problems)


def test_load_flow_text_reports_the_line_and_field_of_nested_problems():
    steps = "  - map: {a: x}\n  - if: input.x\n    then:\n      - call: crm.request\n        retry: {max_attempts: 0}\n"

    [problem] = problems_of(flow_text(steps))

    assert problem.field == "steps[1].then[0].retry.max_attempts"
    assert problem.line == 15
    assert (
        "greater than or equal to 1" in problem.message and "got 0" in problem.message
    )
    assert str(problem).startswith("demo.yaml:15: steps[1].then[0].retry.max_attempts:")


def test_load_flow_text_names_an_unknown_step_kind():
    [problem] = problems_of(flow_text("  - map: {a: x}\n  - frobnicate: 1\n"))

    assert problem.field == "steps[1]"
    assert (
        "expected a step with one of: map, call, if, switch, respond" in problem.message
    )


def test_load_flow_text_refuses_duplicate_step_ids():
    [problem] = problems_of(
        flow_text("  - id: a\n    map: {x: y}\n  - id: a\n    map: {x: y}\n")
    )

    assert "step id 'a' is used twice" in problem.message


def test_load_flow_text_refuses_an_unknown_policy_with_the_choices():
    [problem] = problems_of(
        flow_text("  - map:\n      a: {from: input.a, on_missing: explode}\n")
    )

    assert problem.field == "steps[0].map.a.on_missing"
    assert "'error', 'skip', 'null' or 'default'" in problem.message


def test_load_flow_text_reads_a_bare_yaml_null_as_the_null_policy():
    loaded = loader.load_flow_text(
        flow_text("  - map:\n      a: {from: input.a, on_missing: null}\n"), "demo.yaml"
    )

    assert loaded.spec.steps[0].map["a"].on_missing == "null"


def test_load_flow_text_reports_yaml_syntax_errors_with_their_line():
    [problem] = problems_of("flow: demo\nsteps:\n  - map: {a: x\n")

    assert problem.line is not None and problem.line >= 3
    assert problem.message.startswith("YAML:")


def test_load_flow_text_gives_the_same_digest_to_the_same_content():
    text = flow_text("  - map: {a: x}\n")

    assert (
        loader.load_flow_text(text, "a.yaml").digest
        == loader.load_flow_text(text + "\n# note\n", "b.yaml").digest
    )
    assert (
        loader.load_flow_text(text, "a.yaml").digest
        != loader.load_flow_text(text.replace("a: x", "a: y"), "a.yaml").digest
    )


def test_load_connections_expands_environment_references(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("CRM_URL", "http://crm.test")
    path = tmp_path / "connections.yaml"
    path.write_text(
        "connections:\n  crm:\n    type: http\n    base_url: ${CRM_URL}\n    other: ${UNSET_VARIABLE_X:-fallback}\n"
    )

    assert loader.load_connections(path) == {
        "crm": {"type": "http", "base_url": "http://crm.test", "other": "fallback"}
    }


def test_load_connections_names_an_unset_variable(tmp_path: Path):
    path = tmp_path / "connections.yaml"
    path.write_text(
        "connections:\n  crm: {type: http, base_url: '${NO_SUCH_VARIABLE_Y}'}\n"
    )

    with pytest.raises(errors.FlowFileError, match="NO_SUCH_VARIABLE_Y is not set"):
        loader.load_connections(path)


def test_load_project_loads_the_onboarding_example():
    project = loader.load_project(
        Path(__file__).parents[3] / "examples" / "onboarding" / "flows"
    )

    assert list(project.flows) == [
        "directory-account",
        "employee-onboarding",
        "onboarding-buddy",
    ]
    assert set(project.connections) == {"erpnext", "mail", "chat", "directory"}
    assert "people-team@example.com" in project.roles["hr"]


def test_load_flow_text_refuses_a_key_given_twice():
    text = flow_text("  - map: {a: x}\n") + "steps:\n  - map: {b: y}\n"

    [problem] = problems_of(text)

    assert problem.field == "steps" and problem.line == 12
    assert "is given twice (first on line 10)" in problem.message


def test_load_flow_text_compiles_every_template_at_load():
    steps = "  - map: {a: '{{ input.b '}\n  - if: 'input.x |'\n    then: []\n  - call: crm.request\n    with: {q: '{{ x | nosuchfilter }}'}\n"

    problems = problems_of(flow_text(steps))

    assert [p.field for p in problems] == [
        "steps[0].map.a",
        "steps[1].if",
        "steps[2].with.q",
    ]
    assert "nosuchfilter" in problems[2].message


def test_flow_files_skips_connections_secrets_hidden_and_nested_files(tmp_path: Path):
    for name in (
        "a.yaml",
        "b.yml",
        "connections.yaml",
        "secrets.demo.yaml",
        ".hidden.yaml",
        "notes.txt",
    ):
        (tmp_path / name).write_text("x")
    (tmp_path / "nested").mkdir()
    (tmp_path / "nested" / "c.yaml").write_text("x")

    assert [p.name for p in loader.flow_files([tmp_path])] == ["a.yaml", "b.yml"]


def test_subflow_problems_name_a_missing_flow():
    parent = loader.load_flow_text(
        flow_text("  - subflow: {flow: nowhere, input: {}}\n"), "parent.yaml"
    )

    [problem] = loader.subflow_problems(loader.Project(flows={"demo": parent}))

    assert problem.field == "steps[0].subflow.flow" and problem.line == 11
    assert (
        "no flow named 'nowhere' beside this one; flows here: demo" in problem.message
    )
