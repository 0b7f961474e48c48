"""The monitor against a real store (SQLite and PostgreSQL) and a real chat stand-in."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from starlette.applications import Starlette

from lobflows.connectors.base import build_connections
from lobflows.connectors.limits import Limiter
from lobflows.engine.clock import ManualClock
from lobflows.monitor import Monitor, config, metrics
from lobflows.secrets import SecretStore
from lobflows.secrets.inventory import SECONDS_PER_DAY, build_inventory
from lobflows.spec import loader
from lobflows.store import RunStore, tables
from lobflows.store.health import AlertState
from lobflows.testing.chat_webhooks import create_mattermost_app
from lobflows.testing.mailbox import Mailbox
from lobflows.testing.servers import ServerThread
from tests.support import Service

HOOK_KEY = "integrationhookkey000000"
FLOW = """flow: orders
card:
  trigger: by hand
  data: {entity: order, sensitivity: internal}
  transform: none
  target: erp
  on_failure: dead letter
  owner: ops@example.com
  expect: {latency: 30s, error_rate: 5%}
trigger: {manual: {}}
steps:
  - id: push
    call: erp.request
    with: {path: /orders}
"""


@pytest.fixture
def chat() -> Iterator[tuple[str, Starlette]]:
    app = create_mattermost_app(hook_key=HOOK_KEY)
    with ServerThread(app) as server:
        yield f"{server.url}/hooks/{HOOK_KEY}", app


def make_monitor(
    store: RunStore,
    *,
    owner: str,
    monitor_yaml: str = "",
    hook: str = "",
    secrets: SecretStore | None = None,
    limiter: Limiter | None = None,
    chat_limits: dict[str, float] | None = None,
    more_connections: dict[str, dict[str, object]] | None = None,
) -> Monitor:
    flow = loader.load_flow_text(FLOW, "orders.yaml")
    chat_settings: dict[str, object] = {
        "type": "mattermost_webhook",
        "url_secret": "hook",
    }
    if chat_limits is not None:
        chat_settings["limits"] = chat_limits
    declared = {
        "erp": {"type": "http", "base_url": "http://127.0.0.1:9/api"},
        "ops-chat": chat_settings,
        **(more_connections or {}),
    }
    project = loader.Project(flows={"orders": flow}, connections=declared)
    connections = build_connections(declared, SecretStore({"hook": hook or "x" * 8}))
    return Monitor(
        store=store,
        project=project,
        connections=connections,
        config=config.parse(monitor_yaml, "monitor.yaml"),
        owner=owner,
        limiter=limiter,
        secret_inventory=lambda: build_inventory(store, secrets or SecretStore()),
    )


async def add_run(
    store: RunStore,
    version_id: int,
    *,
    ok: bool,
    seconds: float = 1.0,
    error: str = "erp answered 503",
    retryable: bool = True,
) -> str:
    run, _ = await store.create_run(
        flow="orders", flow_version_id=version_id, input={}, trigger="manual"
    )
    started = time.time() - seconds
    if ok:
        await store.record_success(
            run_id=run.id,
            step="push",
            attempt=1,
            input={},
            output={},
            started_at=started,
        )
        await store.finish_run(run.id)
    else:
        await store.record_dead_letter(
            run_id=run.id,
            flow="orders",
            step="push",
            attempt=1,
            input={},
            error=error,
            retryable=retryable,
            started_at=started,
        )
    return run.id


async def test_snapshot_measures_runs_errors_latency_and_backlog(store: RunStore):
    monitor = make_monitor(store, owner="a")
    version_id, _ = await store.register_flow_version(
        flow="orders", digest="d1", definition={}
    )
    for _ in range(3):
        await add_run(store, version_id, ok=True, seconds=2.0)
    failed = await add_run(store, version_id, ok=False)
    await store.create_run(
        flow="orders", flow_version_id=version_id, input={}, trigger="manual"
    )

    snapshot = await monitor.snapshot()

    orders, erp = snapshot.flows["orders"], snapshot.connections["erp"]
    assert (orders.runs_today, orders.errors_today, orders.backlog) == (5, 1, 1)
    assert orders.error_rate == pytest.approx(0.25)
    assert orders.status == "degraded"
    assert orders.reasons[0].startswith("25% of runs failed in the last 60 min")
    assert orders.p50_seconds is not None and orders.p95_seconds is not None
    assert orders.last_success_at is not None
    assert orders.connections == ["erp"]
    assert (erp.runs_today, erp.errors_today) == (4, 1)
    assert erp.error_rate == pytest.approx(0.25)
    assert erp.p95_seconds is not None and erp.p95_seconds >= 2.0  # the step's time
    assert erp.status == "degraded"
    assert [e.run_id for e in snapshot.recent_errors] == [failed]
    assert snapshot.recent_errors[0].error == "erp answered 503"


async def test_data_refused_counts_against_the_flow_and_not_the_connection(
    store: RunStore,
):
    monitor = make_monitor(store, owner="a")
    version_id, _ = await store.register_flow_version(
        flow="orders", digest="d1", definition={}
    )
    for _ in range(3):
        await add_run(
            store,
            version_id,
            ok=False,
            error="erp answered 422: quantity must be positive",
            retryable=False,
        )

    refused = await monitor.snapshot()
    await add_run(store, version_id, ok=False, error="erp answered 503")
    broken = await monitor.snapshot()

    assert refused.connections["erp"].error_rate == 0
    assert refused.connections["erp"].status != "down"
    assert refused.flows["orders"].own_status == "down"
    assert "3 open dead letters" in " ".join(refused.flows["orders"].reasons)
    assert broken.connections["erp"].error_rate == pytest.approx(0.25)
    assert broken.connections["erp"].status == "degraded"


async def test_each_due_check_is_claimed_by_one_process(store: RunStore):
    first, second = make_monitor(store, owner="a"), make_monitor(store, owner="b")

    claims = await asyncio.gather(
        *(
            m.store.claim_checks(["erp"], owner=m.owner, lease_seconds=30)
            for m in (first, second)
        )
    )

    assert sorted(claims) == [[], ["erp"]]


async def test_a_failed_check_counts_in_a_row_and_is_due_again_after_the_interval(
    store: RunStore,
):
    monitor = make_monitor(store, owner="a", monitor_yaml="checks: {interval: 1h}\n")

    for _ in range(3):
        outcomes = await monitor.checker.run_due(force=True)
        # Both connections fail: erp's port is closed, and ops-chat's secret
        # is no webhook URL.
        assert {o.connection: o.ok for o in outcomes} == {
            "erp": False,
            "ops-chat": False,
        }
    again = await monitor.checker.run_due()

    record = (await store.check_records())["erp"]
    assert again == []  # the next check is due in an hour
    assert record.failures == 3 and record.ok is False
    assert "failed" in (record.message or "")
    snapshot = await monitor.snapshot()
    assert snapshot.connections["erp"].status == "down"
    assert snapshot.flows["orders"].status == "down"
    assert snapshot.flows["orders"].own_status == "unknown"


async def test_an_alert_state_change_lands_for_one_process_only(store: RunStore):
    state = AlertState(
        key="0:connection:erp",
        subject="connection",
        name="erp",
        state="firing",
        status="down",
        reasons=["refused"],
        since=1.0,
        last_sent_at=1.0,
        sent_count=1,
        version=1,
    )

    first = await asyncio.gather(
        store.save_alert_state(state, expected_version=None),
        store.save_alert_state(state, expected_version=None),
    )
    newer = AlertState(**{**state.__dict__, "state": "resolved", "version": 2})
    second = await asyncio.gather(
        store.save_alert_state(newer, expected_version=1),
        store.save_alert_state(newer, expected_version=1),
    )

    assert sorted(first) == [False, True] and sorted(second) == [False, True]
    assert (await store.alert_states())["0:connection:erp"].state == "resolved"


async def test_alerts_fire_once_across_processes_and_resolve_once(
    store: RunStore, chat: tuple[str, Starlette]
):
    hook, app = chat
    rules = """alerts:
  throttle: 1h
  rules:
    - when: {subject: [connection, dead_letter]}
      send: {connection: ops-chat, action: post}
"""
    first = make_monitor(store, owner="a", monitor_yaml=rules, hook=hook)
    second = make_monitor(store, owner="b", monitor_yaml=rules, hook=hook)
    for _ in range(3):
        await first.checker.run_due(force=True)

    sent = await asyncio.gather(first.alerter.evaluate(), second.alerter.evaluate())
    again = await asyncio.gather(first.alerter.evaluate(), second.alerter.evaluate())
    await store.record_check("erp", ok=True, message="ok", next_due_at=time.time() + 60)
    resolved = await asyncio.gather(first.alerter.evaluate(), second.alerter.evaluate())

    texts = [m.payload["text"] for m in app.state.chat.messages]
    assert (sum(sent), sum(again), sum(resolved)) == (1, 0, 1)
    assert texts[0].startswith("[DOWN] connection erp: 3 checks failed in a row")
    assert texts[1].startswith("[RESOLVED] connection erp: healthy again (was down")


async def test_alerts_go_through_the_breaker_of_their_connection(
    store: RunStore, chat: tuple[str, Starlette]
):
    hook, app = chat
    app.state.chat.add_fault(503)
    rules = """alerts:
  rules:
    - when: {subject: connection}
      send: {connection: ops-chat, action: post}
"""
    clock = ManualClock()
    monitor = make_monitor(
        store,
        owner="a",
        monitor_yaml=rules,
        hook=hook,
        limiter=Limiter(store, clock.now),
        chat_limits={"failures_to_open": 1, "cool_down_seconds": 600},
    )
    for _ in range(3):
        await monitor.checker.run_due(force=True)

    failed = await monitor.alerter.evaluate()  # a 503 opens the chat's breaker
    held = await monitor.alerter.evaluate()  # not sent while it is open
    calls_while_open = sum(app.state.chat.request_counts.values())
    breakers = await store.breaker_states()
    clock.advance(601)
    sent = await monitor.alerter.evaluate()  # the cool-down is over: one probe

    assert (failed, held, sent) == (0, 0, 1)
    assert calls_while_open == 1
    assert breakers == {"ops-chat": "open"}
    [message] = app.state.chat.messages
    assert message.payload["text"].startswith("[DOWN] connection erp")
    assert await store.breaker_states() == {}


async def test_alerts_reach_a_mailbox_and_a_webhook(store: RunStore):
    rules = """alerts:
  rules:
    - when: {subject: connection, name: erp}
      send:
        connection: mail
        action: send
        with: {to: it-ops@example.com, subject: "{{ alert.summary }}", text: "{{ alert.reason }}"}
    - when: {subject: connection, name: erp}
      send:
        connection: pager
        action: request
        with: {method: POST, path: /alerts, json: {state: "{{ alert.state }}", about: "{{ alert.name }}"}}
"""
    pager = Service()
    with Mailbox() as mailbox, ServerThread(pager.app()) as hooks:
        monitor = make_monitor(
            store,
            owner="a",
            monitor_yaml=rules,
            more_connections={
                "mail": {
                    "type": "smtp",
                    "host": "127.0.0.1",
                    "port": mailbox.port,
                    "security": "none",
                    "from": "lobflows@example.com",
                },
                "pager": {"type": "http", "base_url": hooks.url},
            },
        )
        for _ in range(3):  # erp's port is closed: down after three checks
            await monitor.checker.run_due(force=True)
        sent = await monitor.alerter.evaluate()
        [mail] = mailbox.wait_for(1)

    assert sent == 2
    assert mail.rcpt_tos == ("it-ops@example.com",)
    assert mail.message["Subject"].startswith("[DOWN] connection erp")
    assert "checks failed in a row" in mail.message.get_content()
    # The pager's health checks are GETs; the alert is the one POST.
    assert [call for call in pager.log if call.startswith("POST")] == ["POST /alerts"]


async def test_a_dead_letter_alerts_once_per_flow(
    store: RunStore, chat: tuple[str, Starlette]
):
    hook, app = chat
    rules = """alerts:
  rules:
    - when: {subject: dead_letter}
      send: {connection: ops-chat, action: post, with: {text: "{{ alert.name }}: {{ alert.reason }}"}}
"""
    monitor = make_monitor(store, owner="a", monitor_yaml=rules, hook=hook)
    version_id, _ = await store.register_flow_version(
        flow="orders", digest="d1", definition={}
    )
    await add_run(store, version_id, ok=False)
    await add_run(store, version_id, ok=False)

    sent = [await monitor.alerter.evaluate() for _ in range(2)]

    texts = [m.payload["text"] for m in app.state.chat.messages]
    assert sent == [1, 0]
    assert texts == [
        "orders: 2 open dead letters; newest at step push: erp answered 503"
    ]


async def test_a_secret_past_its_rotation_policy_alerts_once_and_resolves_on_rotation(
    store: RunStore, chat: tuple[str, Starlette]
):
    hook, app = chat
    rules = """alerts:
  rules:
    - when: {subject: secret}
      send: {connection: ops-chat, action: post}
"""
    monitor = make_monitor(store, owner="a", monitor_yaml=rules, hook=hook)
    await store.add_secret("erp-token", "ciphertext-v1", rotate_every_days=30)
    await store.add_secret("fresh-token", "ciphertext-v1", rotate_every_days=30)
    forty_days_ago = time.time() - 40 * SECONDS_PER_DAY
    async with store.engine.begin() as conn:
        await conn.execute(
            tables.secrets.update()
            .where(tables.secrets.c.name == "erp-token")
            .values(created_at=forty_days_ago)
        )

    overdue = [await monitor.alerter.evaluate() for _ in range(2)]
    await store.rotate_secret("erp-token", "ciphertext-v2", grace_seconds=60)
    resolved = [await monitor.alerter.evaluate() for _ in range(2)]

    texts = [m.payload["text"] for m in app.state.chat.messages]
    assert (overdue, resolved) == ([1, 0], [1, 0])
    assert texts[0].startswith("[DEGRADED] secret erp-token: not rotated within")
    assert "every 30 days" in texts[0]
    assert texts[1].startswith("[RESOLVED] secret erp-token")


async def test_metrics_expose_health_from_the_store(store: RunStore):
    monitor = make_monitor(store, owner="a")
    version_id, _ = await store.register_flow_version(
        flow="orders", digest="d1", definition={}
    )
    await add_run(store, version_id, ok=True)
    await monitor.checker.run_due(force=True)

    text = (await metrics.render(monitor)).decode()

    assert 'lobflows_runs_today{flow="orders",status="succeeded"} 1.0' in text
    assert 'lobflows_flow_status{flow="orders",status="degraded"} 1.0' in text
    assert 'lobflows_connection_check_ok{connection="erp"} 0.0' in text
    assert (
        'lobflows_connection_breaker_state{connection="erp",state="closed"} 1.0' in text
    )
    assert 'lobflows_flow_last_success_timestamp_seconds{flow="orders"}' in text
    assert 'lobflows_flow_latency_seconds{flow="orders",quantile="0.95"}' in text


async def test_schema_problem_is_none_when_current_and_names_an_old_schema(
    store: RunStore,
):
    assert await store.schema_problem() is None

    await store._write(
        lambda conn: conn.execute(
            sa.text("UPDATE alembic_version SET version_num='0010'")
        )
    )

    assert (
        await store.schema_problem() == "the run store schema is at 0010, expected 0013"
    )
