"""The purchase-to-payment example end to end: approvals (the manager, and
two of finance above the threshold), the order in ERPNext, goods receipt and
supplier invoice as ERPNext webhooks, the three-way match, payment; and the
paths where it is rejected, times out, mismatches or is cancelled. Real SMTP,
the ERPNext stand-in, a clock moved by the test; on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from lobflows.triggers.webhook import sign
from tests import support
from tests.examples import EXAMPLES, Example, mails_to

pytestmark = pytest.mark.acceptance

MANAGER, REQUESTER = "mona.klein@example.com", "rick.meyer@example.com"
FINANCE = ["fiona.berg@example.com", "frank.osei@example.com"]
DAY = 86400


@pytest.fixture
async def buying(store_url, standins, monkeypatch):
    example = await Example.open(
        "purchase-to-payment", store_url, standins, monkeypatch
    )
    yield example
    await example.close()


async def request(buying: Example, **changes) -> str:
    body = buying.sample("purchase-request", **changes)
    reply = await buying.post(
        "/hooks/purchase-requests", body, secret="purchase-webhook-secret"
    )
    await buying.settle()
    return reply.json()["run_id"]


async def erpnext_event(buying: Example, path: str, doc: dict) -> None:
    """ERPNext posting a submitted document to its webhook, signed its way."""
    await buying.post(
        path,
        doc,
        secret="erpnext-webhook-secret",
        header="X-Frappe-Webhook-Signature",
        prefix="",
        encoding="base64",
    )
    await buying.settle()


async def receive_and_bill(buying: Example, standins, order: dict, *, rate_factor=1.0):
    """The warehouse posts the receipt and accounts payable the supplier invoice."""
    rows = [
        {
            "item_code": i["item_code"],
            "qty": i["qty"],
            "rate": i["rate"],
            "purchase_order": order["name"],
        }
        for i in order["items"]
    ]
    receipt = standins.erpnext.insert(
        "Purchase Receipt",
        {
            "supplier": order["supplier"],
            "company": order["company"],
            "items": rows,
            "docstatus": 1,
        },
    )
    await erpnext_event(buying, "/hooks/erpnext/purchase-receipt", receipt)
    billed = [{**row, "rate": row["rate"] * rate_factor} for row in rows]
    invoice = standins.erpnext.insert(
        "Purchase Invoice",
        {
            "supplier": order["supplier"],
            "company": order["company"],
            "bill_no": "NW-5531",
            "items": billed,
            "docstatus": 1,
        },
    )
    await erpnext_event(buying, "/hooks/erpnext/purchase-invoice", invoice)
    return receipt, invoice


async def test_an_approved_request_is_ordered_received_matched_and_paid(
    buying, standins
):
    run_id = await request(buying)
    task = await buying.task(run_id, "manager_approval")
    assert task.assignees == [MANAGER] and task.requester == REQUESTER
    [ask] = mails_to(standins, MANAGER)
    assert ask.subject == "Purchase PR-1042: 3380 EUR from Northwind Hardware"
    assert f"/tasks/{task.id}?token=" in ask.text and "&decision=approve" in ask.text

    await buying.decide(task, MANAGER, "approve")

    order = standins.erpnext.get(
        "Purchase Order", (await buying.steps(run_id))["purchase_order"]["name"]
    )
    assert order["docstatus"] == 1 and order["grand_total"] == 3380
    assert order["custom_request_id"] == "PR-1042"
    assert (await buying.store.get_run(run_id)).current_step == "goods_received"

    receipt, invoice = await receive_and_bill(buying, standins, order)

    assert await buying.status(run_id) == "succeeded", (
        await buying.store.get_run(run_id)
    ).error
    steps = await buying.steps(run_id)
    assert steps["match"]["mismatches"] == ""
    payment = standins.erpnext.get("Payment Entry", steps["payment"]["name"])
    assert (
        payment["docstatus"] == 1 and payment["paid_amount"] == invoice["grand_total"]
    )
    assert payment["references"][0]["reference_name"] == invoice["name"]
    assert mails_to(standins, REQUESTER)[-1].subject == "Purchase PR-1042 is paid"


async def test_above_the_threshold_two_of_finance_approve_and_one_rejection_stops_it(
    buying, standins
):
    run_id = await request(
        buying, items=[{"item_code": "LAPTOP-14", "qty": 5, "rate": 1450}]
    )
    await buying.decide(
        await buying.task(run_id, "manager_approval"), MANAGER, "approve"
    )
    finance = await buying.task(run_id, "finance_approval")
    assert finance.required == 2 and len(finance.assignees) == 3

    await buying.decide(finance, FINANCE[0], "approve")
    assert await buying.status(run_id) == "waiting"
    await buying.decide(finance, FINANCE[1], "reject")

    assert await buying.status(run_id) == "succeeded"
    assert "purchase_order" not in await buying.steps(run_id)
    assert standins.erpnext.query("Purchase Order") == []
    rejected = mails_to(standins, REQUESTER)[-1]
    assert rejected.subject == "Purchase PR-1042 was not approved"
    assert f"{FINANCE[1]}: no reason given" in rejected.text


async def test_no_decision_within_three_days_reminds_then_tells_the_requester(
    buying, standins
):
    run_id = await request(buying)

    await buying.advance(2 * DAY + 60)
    reminder = mails_to(standins, MANAGER)[-1]
    assert reminder.subject.startswith("Reminder: Purchase PR-1042")

    await buying.advance(DAY)
    assert await buying.status(run_id) == "succeeded"
    assert (await buying.steps(run_id))["manager_approval"]["outcome"] == "timed_out"
    told = mails_to(standins, REQUESTER)[-1]
    assert "No decision came before the deadline." in told.text


async def test_an_invoice_priced_above_the_tolerance_goes_to_review_and_is_held(
    buying, standins
):
    run_id = await request(buying)
    await buying.decide(
        await buying.task(run_id, "manager_approval"), MANAGER, "approve"
    )
    order = standins.erpnext.get(
        "Purchase Order", (await buying.steps(run_id))["purchase_order"]["name"]
    )

    await receive_and_bill(buying, standins, order, rate_factor=1.05)

    review = await buying.task(run_id, "review_mismatch")
    assert "LAPTOP-14: ordered at 1450.0, invoiced at 1522.5." in review.description
    assert standins.erpnext.query("Payment Entry") == []
    await buying.decide(review, review.assignees[0], "complete", resolution="hold")

    assert await buying.status(run_id) == "succeeded"
    assert mails_to(standins, REQUESTER)[-1].subject == "Purchase PR-1042 is on hold"
    assert standins.erpnext.query("Payment Entry") == []


async def test_no_goods_within_sixty_days_cancels_the_order(buying, standins):
    run_id = await request(buying)
    await buying.decide(
        await buying.task(run_id, "manager_approval"), MANAGER, "approve"
    )
    name = (await buying.steps(run_id))["purchase_order"]["name"]

    await buying.advance(60 * DAY + 60)

    assert standins.erpnext.get("Purchase Order", name)["docstatus"] == 2
    failed = await buying.store.get_run(run_id)
    assert failed.status == "failed"
    assert "no event 'buying.goods_received'" in failed.error
    assert "(undone: submit_order)" in failed.error


async def test_runs_waiting_on_people_survive_a_killed_server(
    store_url, store, standins, tmp_path
):
    folder = EXAMPLES / "purchase-to-payment"
    env = support.base_env(
        store_url,
        ERPNEXT_URL=standins.erpnext_url,
        SMTP_PORT=str(standins.mailbox.port),
        LOBFLOWS_SECRET_ERPNEXT_API=standins.erpnext_credentials,
        LOBFLOWS_SECRETS_FILE=str(folder / "secrets.demo.yaml"),
        LOBFLOWS_POLL_INTERVAL="0.1",
        LOBFLOWS_LEASE_SECONDS="2",
    )
    server = support.ServerProcess(env, folder / "flows", tmp_path / "server.log")
    server.start()
    try:
        sample = json.loads((folder / "samples" / "purchase-request.json").read_text())
        run_ids = []
        for n in range(3):
            raw = json.dumps({**sample, "request_id": f"PR-{n}"}).encode()
            reply = httpx.post(
                server.url + "/hooks/purchase-requests",
                content=raw,
                headers={
                    "Content-Type": "application/json",
                    "X-Signature-256": sign(raw, "demo-purchase-signing-key"),
                },
            )
            run_ids.append(reply.json()["run_id"])
        for run_id in run_ids:
            await support.wait_for_run(store, run_id, statuses=("waiting",))
        standins.mailbox.wait_for(3)

        server.kill()
        task = await store.task_of_step(run_ids[0], "manager_approval")
        decided = support.cli(
            env, "tasks", "decide", task.id[:8], "approve", "--as", MANAGER
        )
        assert decided.returncode == 0, decided.stderr
        server.start()

        resumed = await wait_for_step(store, run_ids[0], "goods_received")
        assert resumed.status == "waiting"
        [order] = standins.erpnext.query("Purchase Order")
        assert order["custom_request_id"] == "PR-0"
        for other in run_ids[1:]:
            parked = await store.get_run(other)
            assert (parked.status, parked.current_step) == (
                "waiting",
                "manager_approval",
            )
        # a restart sends nobody a second request for the same decision
        assert len(mails_to(standins, MANAGER)) == 3
    finally:
        server.stop()


async def wait_for_step(store, run_id: str, step: str, timeout: float = 30):
    """The run once it has reached `step` (waiting there, or retrying it)."""
    deadline = time.monotonic() + timeout
    while (run := await store.get_run(run_id)).current_step != step:
        assert time.monotonic() < deadline, f"run {run_id} never reached {step}"
        await asyncio.sleep(0.05)
    return run
