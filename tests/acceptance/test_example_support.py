"""The support ticket example end to end: triage by rules, round-robin
assignment, an SLA by priority that escalates when it runs out, the
customer told and the ERPNext Issue closed. Real SMTP, the ERPNext
stand-in, a clock moved by the test; on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from tests.examples import Example, mails_to

pytestmark = pytest.mark.acceptance

HOOK = "/hooks/support/tickets"


@pytest.fixture
async def support(store_url, standins, monkeypatch):
    example = await Example.open("support-tickets", store_url, standins, monkeypatch)
    yield example
    await example.close()


async def open_ticket(support: Example, **changes) -> str:
    body = support.sample("support-ticket", **changes)
    reply = await support.post(HOOK, body, secret="support-webhook-secret")
    await support.settle()
    return reply.json()["run_id"]


def issue(standins, name: str) -> dict:
    return standins.erpnext.get("Issue", name)


async def test_a_ticket_resolved_within_its_sla_is_closed_and_the_customer_told(
    support: Example, standins
):
    run_id = await open_ticket(support)

    assert await support.status(run_id) == "waiting"
    triage = (await support.steps(run_id))["triage"]
    assert (triage["priority"], triage["queue"]) == ("High", "technical")
    task = await support.task(run_id, "resolve")
    assert task.assignees == ["tara.nguyen@example.com"]
    assert task.due_at == pytest.approx(support.clock.now() + 8 * 3600, abs=5)
    name = (await support.steps(run_id))["issue"]["name"]
    assert issue(standins, name)["priority"] == "High"
    [ack] = mails_to(standins, "lena.vogt@example.org")
    assert "within 8h" in ack.text
    [to_agent] = mails_to(standins, "tara.nguyen@example.com")
    assert f"https://flows.example.com/tasks/{task.id}?token=" in to_agent.text

    await support.advance(3 * 3600)
    await support.decide(
        task,
        "tara.nguyen@example.com",
        "complete",
        resolution="Session store restarted.",
    )

    assert await support.status(run_id) == "succeeded"
    closed = issue(standins, name)
    assert (closed["status"], closed["resolution_details"]) == (
        "Closed",
        "Session store restarted.",
    )
    resolved = mails_to(standins, "lena.vogt@example.org")[-1]
    assert resolved.subject.startswith(f"[{name}] Resolved")
    assert "Session store restarted." in resolved.text
    assert (await support.steps(run_id))["outcome"]["sla_met"] is True


async def test_a_breached_sla_tells_the_lead_raises_priority_and_escalates(
    support: Example, standins
):
    run_id = await open_ticket(
        support, customer_tier="silver", subject="Export is slow"
    )
    task = await support.task(run_id, "resolve")
    name = (await support.steps(run_id))["issue"]["name"]
    assert (await support.steps(run_id))["triage"]["priority"] == "Medium"

    await support.advance(86400 - 60)
    assert await support.status(run_id) == "waiting"
    assert mails_to(standins, "support-lead@example.com") == []
    await support.advance(120)

    breach, escalation = mails_to(standins, "support-lead@example.com")
    assert breach.subject == f"SLA breached: {name} (Medium)"
    assert escalation.subject.startswith(f"Escalated: [{name}]")
    assert issue(standins, name)["priority"] == "Urgent"
    assert (await support.store.get_task(task.id)).status == "timed_out"
    escalated = await support.task(run_id, "resolve_escalated")
    assert escalated.assignees == [task.assignees[0], "support-lead@example.com"]

    await support.decide(
        escalated, "support-lead@example.com", "complete", resolution="Index rebuilt."
    )

    assert await support.status(run_id) == "succeeded"
    assert issue(standins, name)["status"] == "Closed"
    outcome = (await support.steps(run_id))["outcome"]
    assert outcome == {"resolution": "Index rebuilt.", "sla_met": False}


async def test_billing_words_route_to_the_billing_queue_in_turn(support: Example):
    first = await open_ticket(
        support,
        ticket_id="T-1",
        customer_tier="standard",
        subject="Refund for invoice 7",
    )
    second = await open_ticket(
        support, ticket_id="T-2", customer_tier="standard", subject="Billing address"
    )

    tasks = [await support.task(run, "resolve") for run in (first, second)]
    assert [t.assignees for t in tasks] == [
        ["bea.costa@example.com"],
        ["ben.ito@example.com"],
    ]
    triage = (await support.steps(first))["triage"]
    assert (triage["queue"], triage["priority"]) == ("billing", "Low")
    assert tasks[0].due_at == pytest.approx(support.clock.now() + 3 * 86400, abs=5)
