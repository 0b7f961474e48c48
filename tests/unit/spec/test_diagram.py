"""Flow diagrams are drawn from the steps: forks meet again, joins and deadlines show."""

from __future__ import annotations

from lobflows.spec import diagram, loader

FLOW = """flow: drawn
card:
  trigger: by hand
  data: {entity: thing, sensitivity: internal}
  transform: none
  target: none
  on_failure: dead letter
  owner: team@example.com
trigger: {webhook: {path: /hooks/drawn}}
steps:
  - id: check
    if: input.ok
    then:
      - id: note
        map: {ok: true}
  - id: both
    parallel:
      left:
        - id: a
          map: {x: 1}
      right:
        - id: b
          map: {y: 2}
    join: any
  - id: ask
    task:
      title: "Say \\"yes\\""
      assignees: [{role: deciders}]
      due_in: 1d
    escalate:
      - id: late
        map: {late: true}
"""


def test_a_flow_is_drawn_with_its_branches_joins_and_deadline_path():
    flow = loader.load_flow_text(FLOW, "drawn.yaml").spec

    text = diagram.mermaid(flow)

    assert text.startswith("flowchart TD\n")
    assert 'n1(["webhook /hooks/drawn"])' in text
    assert 'n2{"check: input.ok?"}' in text
    assert 'n2 -->|"yes"| n3' in text  # then: note
    assert 'n2 -->|"no"| n4' in text  # no else: straight to the next step
    assert "n3 --> n4" in text
    assert 'n5["first branch done"]' in text
    assert 'n4 -->|"left"| n6' in text and "n6 --> n5" in text
    assert 'n8[/"ask: approval by role deciders, due in 1d"/]' in text
    assert 'n8 -->|"deadline passed"| n9' in text
    assert 'n8 -->|"decided"| n10' in text and "n9 --> n10" in text
    assert 'n10(("end"))' in text
