"""``lobflows health`` and ``validate`` as an operator meets them: exit codes
that tell a bad settings file from a system that is down, file:line messages,
a mistyped store path refused, and why a connection has no check result."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from lobflows.runtime import open_store
from lobflows.settings import Settings
from tests import support

pytestmark = pytest.mark.acceptance

FLOW = """flow: order-sync
card:
  trigger: by hand
  data: {entity: order, sensitivity: internal}
  transform: none
  target: the order system
  on_failure: dead letter
  owner: ops@example.com
  expect: {error_rate: 5%}
trigger: {manual: {}}
steps:
  - call: orders.request
    with: {path: /orders}
"""

BROKEN_TEMPLATE = """alerts:
  rules:
    - when: {status: down}
      send:
        connection: orders
        action: request
        with: {path: /alerts, body: "{{ alert.summary "}
"""


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'runs.db'}"

    async def create() -> None:
        store = await open_store(Settings(database_url=url))
        await store.close()

    asyncio.run(create())
    return url


@pytest.fixture
def env(store_url: str) -> dict[str, str]:
    return support.base_env(store_url)


def _flows(tmp_path: Path, *, monitor: str = "", flow: str = FLOW) -> Path:
    folder = tmp_path / "flows"
    folder.mkdir()
    (folder / "order-sync.yaml").write_text(flow)
    # Nothing listens on this port: every check of orders fails.
    closed = f"http://127.0.0.1:{support.free_port()}/api"
    (folder / "connections.yaml").write_text(
        f'connections:\n  orders: {{type: http, base_url: "{closed}"}}\n'
    )
    if monitor:
        (folder / "monitor.yaml").write_text(monitor)
    return folder


@pytest.mark.parametrize(
    ("monitor", "expected"),
    [
        # Not YAML at all.
        ("window: [1h\n", "monitor.yaml:2: YAML:"),
        # A value of the wrong kind.
        ("checks:\n  interval: soon\n", "monitor.yaml:2: checks.interval: 'soon'"),
        # A duration past its maximum.
        ("window: 699999999999993.0 d\n", "monitor.yaml:1: window: "),
        # A message template that would fail at every alert.
        (
            BROKEN_TEMPLATE,
            "monitor.yaml:7: alerts.rules[0].send.with.body: "
            "template '{{ alert.summary ' is not valid",
        ),
        # A rule sending through a connection that is not declared.
        (
            "alerts:\n  rules:\n    - send: {connection: nope, action: post}\n",
            "monitor.yaml:3: alerts.rules[0].send.connection: no connection named",
        ),
    ],
)
def test_health_exits_4_with_file_and_line_for_bad_monitor_settings(
    env, tmp_path: Path, monitor: str, expected: str
):
    folder = _flows(tmp_path, monitor=monitor)

    result = support.cli(env, "health", str(folder))

    assert result.returncode == 4, result.stderr
    assert f"{folder / 'monitor.yaml'}:" in result.stderr
    assert expected in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_health_exits_4_for_a_bad_card_expect(env, tmp_path: Path):
    folder = _flows(tmp_path, flow=FLOW.replace("error_rate: 5%", "latency: fast"))

    result = support.cli(env, "health", str(folder))

    assert result.returncode == 4, result.stderr
    assert (
        f"{folder / 'order-sync.yaml'}:9: card.expect.latency: 'fast' is not a duration"
        in result.stderr
    )


def test_health_exits_1_naming_what_is_down(env, tmp_path: Path):
    monitor = "checks: {degraded_after_failures: 1, down_after_failures: 1}\n"
    folder = _flows(tmp_path, monitor=monitor)

    result = support.cli(env, "health", str(folder), "--check")

    assert result.returncode == 1, result.stderr
    assert "down: order-sync, orders" in result.stderr


def test_health_refuses_a_store_that_does_not_exist_and_creates_none(
    tmp_path: Path,
):
    folder = _flows(tmp_path)
    missing = tmp_path / "typo.db"
    env = support.base_env(f"sqlite:///{missing}")

    plain = support.cli(env, "health", str(folder))
    checked = support.cli(env, "health", str(folder), "--check")

    for result in (plain, checked):
        assert result.returncode == 4, result.stderr
        assert (
            f"no run store at {missing}; check LOBFLOWS_DB, or make the store "
            "with `lobflows serve` or the first `lobflows users add`" in result.stderr
        )
    assert not missing.exists()
    assert list(tmp_path.iterdir()) == [folder]


def test_health_says_why_a_connection_has_no_check_result(env, tmp_path: Path):
    folder = _flows(tmp_path)

    before = support.cli(env, "health", str(folder))
    checked = support.cli(env, "health", str(folder), "--check")

    assert before.returncode == 0, before.stderr
    assert _last_check_cell(before.stdout, "orders") == "not checked yet"
    assert checked.returncode == 0, checked.stderr
    cell = _last_check_cell(checked.stdout, "orders")
    assert "orders: GET /api/ failed" in cell, checked.stdout


def _last_check_cell(table: str, connection: str) -> str:
    """The "last check" cell of a connection's row, its folded lines joined."""
    lines = table.splitlines()
    start = next(i for i, line in enumerate(lines) if f"│ {connection} " in line)
    parts = []
    for line in lines[start:]:
        cells = line.split("│")
        if len(cells) < 5 or (line is not lines[start] and cells[1].strip()):
            break
        parts.append(cells[4].strip())
    return " ".join(parts)


def test_validate_reports_a_broken_alert_template_of_a_flows_folder(
    env, tmp_path: Path
):
    folder = _flows(tmp_path, monitor=BROKEN_TEMPLATE)

    result = support.cli(env, "validate", str(folder))

    assert result.returncode == 1
    assert (
        f"{folder / 'monitor.yaml'}:7: alerts.rules[0].send.with.body: "
        "template '{{ alert.summary ' is not valid"
    ) in result.stderr


def test_worker_refuses_to_start_with_a_broken_alert_template(env, tmp_path: Path):
    folder = _flows(tmp_path, monitor=BROKEN_TEMPLATE)

    result = support.cli(env, "worker", str(folder))

    assert result.returncode == 1
    assert "alerts.rules[0].send.with.body: template" in result.stderr
    assert "Traceback" not in result.stderr
