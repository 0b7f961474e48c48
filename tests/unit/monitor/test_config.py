from __future__ import annotations

from pathlib import Path

import pytest

from lobflows import errors
from lobflows.connectors.base import build_connections
from lobflows.monitor import config
from lobflows.secrets import SecretStore
from lobflows.spec import loader

CARD = """flow: demo
card:
  trigger: by hand
  data: {entity: order, sensitivity: internal}
  transform: none
  target: erp
  on_failure: dead letter
  owner: ops@example.com
"""
REST = "trigger: {manual: {}}\nsteps:\n  - map: {a: x}\n"


def problems_of(text: str) -> list[str]:
    with pytest.raises(errors.FlowFileError) as caught:
        config.parse(text, "monitor.yaml")
    return [str(p) for p in caught.value.problems]


def test_load_gives_the_defaults_without_a_monitor_file(tmp_path: Path):
    found = config.load(tmp_path)

    assert found.checks.interval_seconds == 300
    assert found.checks.timeout_seconds == 10
    assert found.window_seconds == 3600
    assert found.checks.degraded_after_failures == 1
    assert found.checks.down_after_failures == 3
    assert found.alerts.rules == [] and found.alerts.throttle_seconds == 3600


def test_parse_reads_durations_rates_and_rules():
    found = config.parse(
        """checks: {interval: 1m, timeout: 5s, down_after: 15m}
window: 2h
error_rate: 5%
alerts:
  throttle: 30m
  rules:
    - when: {status: [degraded, down], subject: connection}
      send: {connection: chat, action: post}
""",
        "monitor.yaml",
    )

    assert found.checks.interval_seconds == 60 and found.checks.timeout_seconds == 5
    assert found.checks.down_after_seconds == 900
    assert found.window_seconds == 7200 and found.error_rate == 0.05
    rule = found.alerts.rules[0]
    assert rule.when.subject == ["connection"]
    assert rule.when.matches("connection", "erp", "degraded")
    assert not rule.when.matches("flow", "erp", "down")
    assert rule.send.with_ == {"text": "{{ alert.summary }}"}  # the default message


def test_parse_names_the_field_line_and_expectation_of_each_problem():
    found = problems_of(
        """checks:
  interval: soon
error_rate: 150%
alerts:
  rules:
    - when: {status: sideways}
      send: {connection: chat}
"""
    )

    assert any(
        "monitor.yaml:2: checks.interval: 'soon' is not a duration" in p for p in found
    )
    assert any("monitor.yaml:3: error_rate: '150%' is out of range" in p for p in found)
    assert any(
        "alerts.rules[0].when.status[0]: expected 'degraded'" in p for p in found
    )
    assert any(
        "alerts.rules[0].send.action: is required but missing" in p for p in found
    )


def test_parse_refuses_fewer_failures_for_down_than_for_degraded():
    found = problems_of(
        "checks: {degraded_after_failures: 4, down_after_failures: 2}\n"
    )

    assert found == [
        "monitor.yaml:1: checks: down_after_failures must be at least "
        "degraded_after_failures (got 2 < 4)"
    ]


def test_parse_refuses_unknown_fields():
    found = problems_of("checks: {intervall: 5m}\n")

    assert found == ["monitor.yaml:1: checks.intervall: is not a known field here"]


def test_rule_problems_name_an_undeclared_connection_or_action():
    connections = build_connections(
        {"chat": {"type": "slack_webhook", "url_secret": "hook"}}, SecretStore({})
    )
    found = config.parse(
        """alerts:
  rules:
    - send: {connection: pager, action: post}
    - send: {connection: chat, action: page}
""",
        "monitor.yaml",
    )

    problems = [p.message for p in config.rule_problems(found, connections, "m")]

    assert problems == [
        "no connection named 'pager'; declared: chat",
        "connection 'chat' (slack_webhook) has no action 'page'; known: post",
    ]


def test_card_expectations_are_parsed_and_checked_at_load():
    loaded = loader.load_flow_text(
        CARD
        + "  expect: {latency: 30s, every: 1d, error_rate: 5%, backlog: 10}\n"
        + REST,
        "demo.yaml",
    )
    expect = loaded.spec.card.expect
    assert expect is not None
    assert (expect.latency, expect.every, expect.error_rate, expect.backlog) == (
        30,
        86400,
        0.05,
        10,
    )

    with pytest.raises(errors.FlowFileError) as caught:
        loader.load_flow_text(
            CARD + "  expect: {latency: fast, error_rate: lots, every: 1d}\n" + REST,
            "demo.yaml",
        )
    shown = [str(p) for p in caught.value.problems]
    assert any("card.expect.latency: 'fast' is not a duration" in p for p in shown)
    assert any(
        "card.expect.error_rate: 'lots' is not a rate; expected a percentage" in p
        for p in shown
    )


def test_monitor_file_is_not_taken_for_a_flow(tmp_path: Path):
    (tmp_path / "demo.yaml").write_text(CARD + REST)
    (tmp_path / "monitor.yaml").write_text("window: 1h\n")

    assert [p.name for p in loader.flow_files([tmp_path])] == ["demo.yaml"]
