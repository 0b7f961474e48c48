"""Human tasks: approvals of N of M, reviews with a form, delegation, reminders,
deadlines with escalation, round-robin assignment and signed links. Messages
go through a real SMTP server; time is moved by hand."""

from __future__ import annotations

import dataclasses
import re
import time
from pathlib import Path

import httpx
import pytest

from lobflows import errors
from lobflows.engine import tasks
from lobflows.engine.clock import ManualClock
from lobflows.runtime import Runtime
from lobflows.settings import Settings
from lobflows.testing.mailbox import Mailbox
from lobflows.web.app import create_app
from tests.support import pass_once

pytestmark = pytest.mark.integration

CARD = """card:
  trigger: by hand
  data: {entity: purchase request, sensitivity: internal}
  transform: none
  target: the run store
  on_failure: dead letter
  owner: team@example.com
trigger: {manual: {}}
retry: {max_attempts: 3, initial_delay_seconds: 1, max_delay_seconds: 2}
"""

APPROVAL = f"""flow: approve-purchase
{CARD}
steps:
  - id: approval
    task:
      title: "Approve {{{{ input.item }}}} for {{{{ input.amount }}}} EUR"
      assignees:
        - user: "{{{{ input.manager }}}}"
        - role: finance
      required: 2
      requester: "{{{{ input.requester }}}}"
      due_in: 3d
      remind_before: [1d]
      form:
        - {{name: budget_code, type: text, required: true}}
      notify:
        call: mail.send
        with:
          to: "{{{{ task.assignee }}}}"
          subject: "{{% if task.reminder %}}Reminder: {{% endif %}}{{{{ task.title }}}}"
          text: "Approve: {{{{ task.links.approve }}}}"
    escalate:
      - id: tell_hr
        call: mail.send
        with:
          to: hr@example.com
          subject: "No decision on {{{{ input.item }}}}"
          text: "Task {{{{ steps.approval.task_id }}}} timed out."
  - id: result
    map:
      outcome: "{{{{ steps.approval.outcome }}}}"
      approvers: "{{{{ steps.approval.decisions | map(attribute='by') | join(',') }}}}"
"""

REVIEW = f"""flow: support-review
{CARD}
steps:
  - id: resolve
    task:
      kind: review
      title: "Resolve ticket {{{{ input.ticket }}}}"
      assignees:
        - role: support
          pick: round_robin
      form:
        - {{name: resolution, type: choice, choices: [fixed, wont_fix], required: true}}
        - {{name: minutes, type: number}}
"""

ROLES = """roles:
  finance: [fiona@example.com, frank@example.com]
  support: [ann@example.com, bob@example.com, cy@example.com]
"""

PURCHASE = {
    "item": "laptop",
    "amount": 1800,
    "manager": "mona@example.com",
    "requester": "rick@example.com",
}


@pytest.fixture
def mailbox():
    with Mailbox() as box:
        yield box


@pytest.fixture
async def runtime(store_url: str, tmp_path: Path, mailbox: Mailbox):
    (tmp_path / "approve-purchase.yaml").write_text(APPROVAL)
    (tmp_path / "support-review.yaml").write_text(REVIEW)
    (tmp_path / "roles.yaml").write_text(ROLES)
    (tmp_path / "connections.yaml").write_text(
        "connections:\n  mail: {type: smtp, host: 127.0.0.1, port: "
        f"{mailbox.port}, security: none, from: flows@example.com}}\n"
    )
    (tmp_path / "secrets.yaml").write_text("task_link_key: 5f0c1d2e-link-key\n")
    settings = Settings(
        database_url=store_url,
        secrets_file=tmp_path / "secrets.yaml",
        public_url="https://flows.example.com",
    )
    opened = await Runtime.open(settings, tmp_path)
    # Decisions wake runs by the real time; the test clock stays ahead of it.
    opened.engine.clock = ManualClock(start=time.time() + 3600)
    yield opened
    await opened.close()


async def approve(runtime: Runtime, task_id: str, by: str, code: str = "IT-7"):
    return await tasks.decide(
        runtime.store,
        task_id,
        by=by,
        decision="approve",
        data={"budget_code": code},
    )


async def open_approval(runtime: Runtime):
    run, _ = await runtime.engine.start_run(
        "approve-purchase", input=PURCHASE, trigger="manual"
    )
    await pass_once(runtime)
    task = await runtime.store.task_of_step(run.id, "approval")
    assert task is not None
    return run, task


async def test_two_of_three_approvals_settle_the_task_and_resume_the_run(
    runtime: Runtime, mailbox: Mailbox
):
    run, task = await open_approval(runtime)

    assert task.assignees == [
        "mona@example.com",
        "fiona@example.com",
        "frank@example.com",
    ]
    assert (await runtime.store.get_run(run.id)).status == "waiting"
    sent = mailbox.wait_for(3)
    assert sorted(m.rcpt_tos[0] for m in sent) == sorted(task.assignees)
    assert all(m.subject == "Approve laptop for 1800 EUR" for m in sent)

    await approve(runtime, task.id, "mona@example.com", "IT-7")
    assert await pass_once(runtime) == 0  # one of two approvals: the run sleeps on
    assert (await runtime.store.get_task(task.id)).status == "open"

    await approve(runtime, task.id, "frank@example.com", "IT-7")
    await pass_once(runtime)

    done = await runtime.store.get_run(run.id)
    assert done.status == "succeeded"
    result = (await runtime.store.completed_steps(run.id))["result"]
    assert result == {
        "outcome": "approved",
        "approvers": "mona@example.com,frank@example.com",
    }
    assert (await runtime.store.get_task(task.id)).data == {"budget_code": "IT-7"}
    assert len(mailbox.messages) == 3  # no second notification on wake-ups


async def test_one_rejection_settles_an_approval(runtime: Runtime):
    run, task = await open_approval(runtime)

    await tasks.decide(
        runtime.store,
        task.id,
        by="fiona@example.com",
        decision="reject",
        comment="Not this quarter",
    )
    await pass_once(runtime)

    outcome = (await runtime.store.completed_steps(run.id))["approval"]
    assert outcome["outcome"] == "rejected"
    assert outcome["decisions"][0]["comment"] == "Not this quarter"


async def test_decisions_that_break_the_rules_are_refused_and_change_nothing(
    runtime: Runtime,
):
    run, task = await open_approval(runtime)
    store = runtime.store

    with pytest.raises(errors.DecisionRefusedError, match="not an assignee"):
        await tasks.decide(
            store, task.id, by="eve@example.com", decision="approve", data={}
        )
    with pytest.raises(
        errors.DecisionRefusedError, match="budget_code: a value is required"
    ):
        await tasks.decide(store, task.id, by="mona@example.com", decision="approve")
    with pytest.raises(errors.DecisionRefusedError, match="takes approve or reject"):
        await tasks.decide(store, task.id, by="mona@example.com", decision="complete")
    await approve(runtime, task.id, "mona@example.com", "IT-7")
    with pytest.raises(errors.DecisionRefusedError, match="has already decided"):
        await approve(runtime, task.id, "mona@example.com", "IT-7")

    decided = [a for a in await store.task_actions(task.id) if a.action == "approve"]
    assert [a.by for a in decided] == ["mona@example.com"]
    assert (await store.get_task(task.id)).status == "open"


async def test_the_requester_cannot_approve_even_through_a_delegation(
    runtime: Runtime,
):
    run, task = await open_approval(runtime)
    store = runtime.store

    with pytest.raises(errors.DecisionRefusedError, match="made the request"):
        await store.delegate(task.id, by="fiona@example.com", to="rick@example.com")

    await store.delegate(task.id, by="fiona@example.com", to="dave@example.com")
    assert [t.id for t in await store.list_tasks(user="dave@example.com")] == [task.id]
    await approve(runtime, task.id, "dave@example.com", "X")
    await approve(runtime, task.id, "frank@example.com", "X")
    await pass_once(runtime)

    outcome = (await store.completed_steps(run.id))["approval"]
    assert [(d["by"], d["for"]) for d in outcome["decisions"]] == [
        ("dave@example.com", "fiona@example.com"),
        ("frank@example.com", None),
    ]


async def test_a_reminder_goes_out_a_day_before_and_the_deadline_escalates(
    runtime: Runtime, mailbox: Mailbox
):
    run, task = await open_approval(runtime)
    mailbox.wait_for(3)
    clock = runtime.engine.clock

    clock.advance(2 * 86400 - 60)
    assert await pass_once(runtime) == 0
    clock.advance(120)
    assert await pass_once(runtime) == 1
    reminders = mailbox.wait_for(6)[3:]
    assert all(m.subject.startswith("Reminder: ") for m in reminders)

    clock.advance(86400)
    await pass_once(runtime)
    await pass_once(runtime)

    escalation = mailbox.wait_for(7)[6]
    assert escalation.rcpt_tos == ("hr@example.com",)
    assert f"Task {task.id} timed out." in escalation.text
    assert (await runtime.store.get_task(task.id)).status == "timed_out"
    result = (await runtime.store.completed_steps(run.id))["result"]
    assert result["outcome"] == "timed_out"
    with pytest.raises(errors.DecisionRefusedError, match="already timed_out"):
        await approve(runtime, task.id, "mona@example.com", "late")


async def test_a_signed_link_acts_as_its_assignee_on_its_task_only(
    runtime: Runtime, mailbox: Mailbox
):
    run, task = await open_approval(runtime)
    [to_mona] = [m for m in mailbox.wait_for(3) if m.rcpt_tos[0] == "mona@example.com"]
    link = re.search(r"https://\S+", to_mona.text).group(0)
    assert link.startswith(f"https://flows.example.com/tasks/{task.id}?token=")
    token = re.search(r"token=([^&\s]+)", link).group(1)

    grant = runtime.engine.links.verify(task.id, token)
    assert grant.user == "mona@example.com"
    with pytest.raises(errors.DecisionRefusedError, match="another task"):
        runtime.engine.links.verify("0" * 32, token)
    forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    with pytest.raises(errors.DecisionRefusedError, match="not valid"):
        runtime.engine.links.verify(task.id, forged)
    with pytest.raises(errors.DecisionRefusedError, match="expired"):
        runtime.engine.links.verify(task.id, token, now=task.due_at + 15 * 86400)


async def test_round_robin_assigns_the_role_members_in_turn(runtime: Runtime):
    assignees = []
    for ticket in range(4):
        run, _ = await runtime.engine.start_run(
            "support-review", input={"ticket": ticket}, trigger="manual"
        )
        await pass_once(runtime)
        task = await runtime.store.task_of_step(run.id, "resolve")
        assignees.append(task.assignees)

    assert assignees == [
        ["ann@example.com"],
        ["bob@example.com"],
        ["cy@example.com"],
        ["ann@example.com"],
    ]


async def test_a_review_takes_its_form_converted_and_checked(runtime: Runtime):
    run, _ = await runtime.engine.start_run(
        "support-review", input={"ticket": 7}, trigger="manual"
    )
    await pass_once(runtime)
    task = await runtime.store.task_of_step(run.id, "resolve")
    [agent] = task.assignees

    with pytest.raises(errors.DecisionRefusedError) as refused:
        await tasks.decide(
            runtime.store,
            task.id,
            by=agent,
            decision="complete",
            data={"resolution": "maybe", "minutes": "ten", "extra": 1},
        )
    message = str(refused.value)
    assert "unknown field 'extra'" in message
    assert "resolution: expected one of fixed, wont_fix" in message
    assert "minutes: expected a number" in message

    await tasks.decide(
        runtime.store,
        task.id,
        by=agent,
        decision="complete",
        data={"resolution": "fixed", "minutes": "25"},
    )
    await pass_once(runtime)

    output = (await runtime.store.completed_steps(run.id))["resolve"]
    assert output["outcome"] == "completed"
    assert output["data"] == {"resolution": "fixed", "minutes": 25}


async def test_people_decide_through_the_signed_link_page(
    runtime: Runtime, mailbox: Mailbox
):
    run, task = await open_approval(runtime)
    links = {
        m.rcpt_tos[0]: re.search(r"https://\S+", m.text).group(0)
        for m in mailbox.wait_for(3)
    }
    app = create_app(runtime, has_local_worker=False)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="https://flows.example.com"
    ) as client:
        page = await client.get(links["mona@example.com"])
        assert page.status_code == 200
        assert "Approve laptop for 1800 EUR" in page.text
        assert 'value="approve" class="chosen"' in page.text
        token = re.search(r'name="token" value="([^"]+)"', page.text).group(1)
        assert (
            await runtime.store.get_task(task.id)
        ).status == "open"  # GET decides nothing

        refused = await client.post(
            f"/tasks/{task.id}", data={"token": token, "decision": "approve"}
        )
        assert refused.status_code == 409
        assert "budget_code: a value is required" in refused.text

        done = await client.post(
            f"/tasks/{task.id}",
            data={
                "token": token,
                "decision": "approve",
                "field.budget_code": "IT-7",
                "comment": "<b>ok</b>",
            },
        )
        assert done.status_code == 200
        assert "waits for more approvals" in done.text

        forged = await client.post(
            f"/tasks/{task.id}",
            data={"token": token.replace(".", ".x"), "decision": "reject"},
        )
        assert forged.status_code == 403

    [decision] = [
        a for a in await runtime.store.task_actions(task.id) if a.action == "approve"
    ]
    assert (decision.by, decision.comment) == ("mona@example.com", "<b>ok</b>")


async def test_the_rest_api_lists_and_decides_tasks_with_the_bearer_token(
    store_url: str, tmp_path: Path, mailbox: Mailbox, runtime: Runtime
):
    run, task = await open_approval(runtime)
    api_runtime = dataclasses.replace(
        runtime, settings=runtime.settings.model_copy(update={"api_token": "t0ken"})
    )
    app = create_app(api_runtime, has_local_worker=False)
    auth = {"Authorization": "Bearer t0ken"}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as client:
        assert (await client.get("/api/tasks")).status_code == 401
        listed = (
            await client.get(
                "/api/tasks", params={"user": "fiona@example.com"}, headers=auth
            )
        ).json()
        assert [t["id"] for t in listed["tasks"]] == [task.id]

        refused = await client.post(
            f"/api/tasks/{task.id}/decisions",
            json={"decision": "approve", "by": "rick@example.com", "data": {}},
            headers=auth,
        )
        assert refused.status_code == 409
        assert "not an assignee" in refused.json()["error"]

        rejected = await client.post(
            f"/api/tasks/{task.id}/decisions",
            json={"decision": "reject", "by": "fiona@example.com"},
            headers=auth,
        )
        assert rejected.json()["status"] == "rejected"
        history = (await client.get(f"/api/tasks/{task.id[:8]}", headers=auth)).json()
        assert [h["action"] for h in history["history"]][-1] == "reject"

    await pass_once(runtime)
    assert (await runtime.store.get_run(run.id)).status == "succeeded"
