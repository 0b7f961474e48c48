"""The dashboard in a real headless Chromium against a real ``lobflows serve``:
an operator fixes and replays a failed run and watches its flow's tile turn
healthy; a manager approves a purchase request from the inbox; a viewer
cannot replay and a forged form is refused. Screenshots of each key step are
kept under test-artifacts/screenshots/<test>/."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from playwright.async_api import Page, expect
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from lobflows.store import RunStore
from lobflows.testing.servers import ServerThread
from tests import browser, support

pytestmark = pytest.mark.acceptance

ORDERS_FLOW = """flow: push-orders
card:
  trigger: the web shop posts each order
  data: {entity: order, sensitivity: internal}
  transform: none
  target: the order service
  on_failure: dead letter
  owner: shop-ops@example.com
trigger:
  webhook: {path: /hooks/orders}
retry: {max_attempts: 1, initial_delay_seconds: 1, max_delay_seconds: 1}
steps:
  - id: push
    call: shop.request
    with: {method: POST, path: /orders, json: "{{ input }}"}
"""
PURCHASES = support.REPO / "examples" / "purchase-to-payment"
MANAGER = "mona.klein@example.com"
API_TOKEN = "browser-test-api-token"


@dataclass
class OrderService:
    """The order system the flow pushes to: like its real API, it refuses an
    order without a positive whole quantity with 422 and takes the rest."""

    url: str = ""
    accepted: list[dict[str, Any]] = field(default_factory=list)
    refused: list[dict[str, Any]] = field(default_factory=list)

    def app(self) -> Starlette:
        async def orders(request: Request) -> JSONResponse:
            order = await request.json()
            quantity = order.get("quantity")
            if not isinstance(quantity, int) or quantity < 1:
                self.refused.append(order)
                problem = f"quantity must be a whole number from 1, got {quantity!r}"
                return JSONResponse({"error": problem}, status_code=422)
            self.accepted.append(order)
            return JSONResponse({"id": f"SO-{len(self.accepted)}"}, status_code=201)

        async def home(request: Request) -> JSONResponse:
            return JSONResponse({"service": "orders"})

        return Starlette(
            routes=[
                Route("/", home, methods=["GET"]),
                Route("/orders", orders, methods=["POST"]),
            ]
        )


@dataclass
class Served:
    server: support.ServerProcess
    env: dict[str, str]
    store_url: str

    def post(self, path: str, body: Any, **headers: str) -> str:
        """Deliver a webhook; the run id it started."""
        reply = httpx.post(
            self.server.url + path,
            content=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", **headers},
            timeout=30,
        )
        assert reply.status_code in (200, 202), reply.text
        return str(reply.json()["run_id"])


User = tuple[str, list[str], str | None]  # name, roles, e-mail address


def served(
    tmp_path: Path, flows: Path, users: list[User], **env_extra: str
) -> Iterator[Served]:
    """`lobflows serve` on a SQLite store in tmp_path, its users added with the CLI."""
    store_url = f"sqlite:///{tmp_path / 'runs.db'}"
    env = support.base_env(
        store_url,
        LOBFLOWS_POLL_INTERVAL="0.1",
        LOBFLOWS_SECRET_SESSION_KEY="browser-test-session-key",
        LOBFLOWS_API_TOKEN=API_TOKEN,
        **env_extra,
    )
    server = support.ServerProcess(env, flows, tmp_path / "server.log").start()
    try:
        for name, roles, email in users:
            browser.add_user(env, name, *roles, email=email)
        yield Served(server, env, store_url)
    finally:
        server.stop()


@pytest.fixture
def order_service() -> Iterator[OrderService]:
    service = OrderService()
    with ServerThread(service.app()) as thread:
        service.url = thread.url
        yield service


@pytest.fixture
def orders(tmp_path: Path, order_service: OrderService) -> Iterator[Served]:
    """The order flow served, an operator olga and a viewer vic."""
    users = [("olga", ["operator"], None), ("vic", ["viewer"], None)]
    yield from served(tmp_path, order_flows(tmp_path, order_service), users)


@pytest.fixture
def admins(tmp_path: Path, order_service: OrderService) -> Iterator[Served]:
    """The order flow served with one admin, ada, and nobody else."""
    users = [("ada", ["admin"], None)]
    yield from served(tmp_path, order_flows(tmp_path, order_service), users)


def order_flows(tmp_path: Path, order_service: OrderService) -> Path:
    """A flows folder with the order flow and its connection to the service."""
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "push-orders.yaml").write_text(ORDERS_FLOW)
    (flows / "connections.yaml").write_text(
        f"connections:\n  shop: {{type: http, base_url: '{order_service.url}'}}\n"
    )
    return flows


@pytest.fixture
def purchases(tmp_path: Path, standins: Any) -> Iterator[Served]:
    """The purchase-to-payment example served against the stand-ins, with the
    manager of its sample request as an approver."""
    users = [("mona", ["approver"], MANAGER)]
    yield from served(
        tmp_path,
        PURCHASES / "flows",
        users,
        ERPNEXT_URL=standins.erpnext_url,
        SMTP_PORT=str(standins.mailbox.port),
        LOBFLOWS_SECRETS_FILE=str(PURCHASES / "secrets.demo.yaml"),
        LOBFLOWS_SECRET_ERPNEXT_API=standins.erpnext_credentials,
    )


@pytest.fixture
def shots(request: pytest.FixtureRequest) -> browser.Screenshots:
    return browser.Screenshots(request.node.name)


async def poll(
    check: Callable[[], Awaitable[Any]], what: str, *, timeout: float = 30
) -> Any:
    """The first truthy result of `check()`, polled until a generous deadline."""
    deadline = time.monotonic() + timeout
    while not (found := await check()):
        assert time.monotonic() < deadline, f"never happened: {what}"
        await asyncio.sleep(0.1)
    return found


BAD_ORDER = {"order": "WEB-1002", "sku": "DESK-120", "quantity": -2}
GOOD_ORDER = {"order": "WEB-1001", "sku": "CHAIR-7", "quantity": 4}


async def test_operator_fixes_a_dead_letter_and_watches_the_tile_turn_healthy(
    orders: Served, order_service: OrderService, shots: browser.Screenshots
):
    async with browser.chromium() as chromium:
        context = await browser.new_context(chromium, orders.server.url)
        # The operator keeps the overview open in one tab and works in another.
        overview = await context.new_page()
        await browser.sign_in(overview, "olga")
        await shots.take(overview, "signed-in")
        tile = overview.get_by_test_id("tile-push-orders")
        await expect(tile).to_have_attribute("data-status", "unknown")

        # Given one order that goes through and one the service refuses.
        orders.post("/hooks/orders", GOOD_ORDER)
        await expect(tile).to_have_attribute("data-status", "healthy")
        run_id = orders.post("/hooks/orders", BAD_ORDER)

        # Then the tile turns degraded live, and the error is listed.
        await expect(tile).to_have_attribute("data-status", "degraded")
        await expect(overview.get_by_test_id("tile-errors-push-orders")).to_have_text(
            "1"
        )
        await expect(overview.get_by_test_id("recent-error")).to_have_count(1)
        await shots.take(overview, "tile-degraded")

        # When the operator opens the failing run from the recent errors.
        work = await context.new_page()
        await work.goto("/")
        await work.get_by_test_id("recent-error-run").click()
        await work.wait_for_url(f"**/runs/{run_id}")
        await expect(work.get_by_test_id("run-status")).to_have_text("failed")
        await expect(work.get_by_test_id("run-error")).to_contain_text("422")
        await shots.take(work, "failing-run")

        # And goes to the dead letters, and opens the run's letter.
        await work.get_by_test_id("nav-dead-letters").click()
        row = work.locator(f'[data-testid="dead-letter-row"][data-run="{run_id}"]')
        await expect(row).to_have_count(1)
        letter_id = await row.get_attribute("data-letter")
        await shots.take(work, "dead-letters")
        await work.get_by_test_id(f"inspect-{letter_id}").click()
        await work.wait_for_url(f"**/dead-letters/{letter_id}")

        # A correction that is not JSON is refused and kept for another try.
        box = work.get_by_test_id("replay-input")
        shown = json.loads(await box.input_value())
        assert shown["json"] == BAD_ORDER
        await box.fill('{"json": {"quantity": 2')
        await work.get_by_test_id("replay-button").click()
        await expect(work.get_by_test_id("replay-problem")).to_contain_text(
            "not valid JSON"
        )
        await expect(box).to_have_value('{"json": {"quantity": 2')
        await shots.take(work, "correction-refused")

        # The quantity fixed, the letter is replayed.
        fixed = {**shown, "json": {**BAD_ORDER, "quantity": 2}}
        await box.fill(json.dumps(fixed, indent=2))
        await shots.take(work, "correction")
        await work.get_by_test_id("replay-button").click()
        await work.wait_for_url(f"**/runs/{run_id}?replayed=1")
        await expect(work.get_by_test_id("replayed-notice")).to_be_visible()

        # Then the overview, never reloaded, turns the tile healthy live.
        await expect(tile).to_have_attribute("data-status", "healthy")
        updates = await overview.locator("body").get_attribute("data-live-updates")
        assert updates is not None and int(updates) >= 3
        await overview.bring_to_front()
        await shots.take(overview, "tile-healthy")
        await work.reload()
        await expect(work.get_by_test_id("run-status")).to_have_text("succeeded")
        await shots.take(work, "run-succeeded")
        await context.close()

    assert order_service.refused == [BAD_ORDER]
    assert [o["order"] for o in order_service.accepted] == ["WEB-1001", "WEB-1002"]
    assert order_service.accepted[1]["quantity"] == 2
    store = RunStore(orders.store_url)
    try:
        [letter] = await store.dead_letters_of_run(run_id)
        [replay] = await store.audit_entries(action="replay")
    finally:
        await store.close()
    assert letter.status == "replayed"
    assert replay.actor == "olga" and replay.target == f"dead letter {letter_id}"
    assert replay.detail is not None and replay.detail["corrected"] == ["step input"]


async def test_manager_approves_a_purchase_request_from_the_inbox(
    purchases: Served, standins: Any, shots: browser.Screenshots
):
    # Given a purchase request from the form, signed as the form signs it.
    secrets = yaml.safe_load((PURCHASES / "secrets.demo.yaml").read_text())
    request = json.loads((PURCHASES / "samples" / "purchase-request.json").read_text())
    raw = json.dumps(request).encode()
    run_id = purchases.post(
        "/hooks/purchase-requests",
        request,
        **{"X-Signature-256": support.sign(raw, secrets["purchase-webhook-secret"])},
    )
    store = RunStore(purchases.store_url)
    try:
        task = await poll(
            lambda: store.task_of_step(run_id, "manager_approval"),
            "the manager's approval task",
        )
        assert task.assignees == [MANAGER]

        async with browser.chromium() as chromium:
            context = await browser.new_context(chromium, purchases.server.url)
            page = await context.new_page()
            # When the manager signs in and opens the inbox.
            await browser.sign_in(page, "mona", path="/inbox")
            entry = page.locator(f'[data-testid="inbox-task"][data-task="{task.id}"]')
            await expect(entry).to_contain_text(task.title)
            await shots.take(page, "inbox")

            # And opens the task and approves it.
            await page.get_by_test_id(f"open-task-{task.id}").click()
            await page.wait_for_url(f"**/inbox/{task.id}")
            await expect(page.locator("h1")).to_have_text(task.title)
            await shots.take(page, "task")
            await page.get_by_test_id("decide-approve").click()
            await expect(page.get_by_test_id("task-notice")).to_contain_text(
                "the task is approved"
            )
            await expect(page.get_by_test_id("task-form")).to_have_count(0)
            await shots.take(page, "approved")

            # An approver has no way to the secrets.
            await expect(page.get_by_test_id("nav-secrets")).to_have_count(0)
            refused = await page.goto("/secrets")
            assert refused is not None and refused.status == 403
            await expect(page.get_by_test_id("error-message")).to_contain_text(
                "'secrets'"
            )
            await shots.take(page, "secrets-refused")
            await context.close()

        # Then the API shows the task decided by the manager.
        reply = httpx.get(
            f"{purchases.server.url}/api/tasks/{task.id}",
            headers={"Authorization": f"Bearer {API_TOKEN}"},
            timeout=10,
        )
        decided = reply.json()
        assert decided["status"] == "approved", reply.text
        decisions = [
            (h["action"], h["by"])
            for h in decided["history"]
            if h["action"] in ("approve", "reject")
        ]
        assert decisions == [("approve", MANAGER)]

        # And the run moved on: the order is in ERPNext, goods are awaited.
        async def at_goods_received() -> bool:
            run = await store.get_run(run_id)
            return run.current_step == "goods_received" and run.status == "waiting"

        await poll(at_goods_received, "the run waiting for the goods")
    finally:
        await store.close()
    [order] = standins.erpnext.query("Purchase Order")
    assert order["custom_request_id"] == request["request_id"]
    assert order["docstatus"] == 1


async def test_a_viewer_cannot_replay_and_a_forged_form_is_refused(
    orders: Served, order_service: OrderService, shots: browser.Screenshots
):
    run_id = orders.post("/hooks/orders", BAD_ORDER)
    store = RunStore(orders.store_url)
    try:
        [letter] = await poll(
            lambda: store.dead_letters_of_run(run_id), "the dead letter"
        )
        async with browser.chromium() as chromium:
            # Anonymous: the browser is sent to sign in, the API answers 401.
            anonymous = await browser.new_context(chromium, orders.server.url)
            page = await anonymous.new_page()
            await page.goto(f"/runs/{run_id}")
            await expect(page).to_have_url(re.compile(r"/login\?next=%2Fruns%2F"))
            await shots.take(page, "anonymous-sign-in")
            api = await anonymous.request.get(f"/api/runs/{run_id}")
            assert api.status == 401
            await anonymous.close()

            # A viewer sees the failed run but no way to replay it.
            viewer = await browser.new_context(chromium, orders.server.url)
            page = await viewer.new_page()
            await browser.sign_in(page, "vic", path=f"/runs/{run_id}")
            await expect(page.get_by_test_id("run-status")).to_have_text("failed")
            await expect(page.get_by_test_id("replay-button")).to_have_count(0)
            await expect(page.get_by_test_id("nav-dead-letters")).to_have_count(0)
            await shots.take(page, "viewer-run")
            refused = await page.goto("/dead-letters")
            assert refused is not None and refused.status == 403
            await shots.take(page, "viewer-dead-letters-refused")
            # Nor by posting the replay form itself, with a valid CSRF token.
            await page.goto(f"/runs/{run_id}")
            status = await post_form(page, f"/dead-letters/{letter.id}/replay")
            assert status == 403
            await expect(page.get_by_test_id("error-message")).to_contain_text(
                "'operate'"
            )
            await shots.take(page, "viewer-replay-refused")
            await viewer.close()

            # An operator's replay form without its CSRF token is refused.
            operator = await browser.new_context(chromium, orders.server.url)
            page = await operator.new_page()
            await browser.sign_in(page, "olga", path=f"/dead-letters/{letter.id}")
            await page.evaluate(
                "document.querySelectorAll('input[name=csrf_token]')"
                ".forEach(field => field.remove())"
            )
            async with page.expect_response(
                lambda r: r.url.endswith(f"/dead-letters/{letter.id}/replay")
            ) as answer:
                await page.get_by_test_id("replay-button").click()
            assert (await answer.value).status == 403
            await expect(page.get_by_test_id("error-message")).to_contain_text(
                "stale or forged"
            )
            await shots.take(page, "forged-form-refused")
            await operator.close()

        # Nothing was replayed.
        assert (await store.dead_letter(letter.id)).status == "open"
        assert (await store.get_run(run_id)).status == "failed"
        assert order_service.refused == [BAD_ORDER]
        assert order_service.accepted == []
    finally:
        await store.close()


async def test_an_admin_adds_an_operator_who_signs_in_and_uses_a_new_token(
    admins: Served, shots: browser.Screenshots
):
    new_password = "omar's long password"
    async with browser.chromium() as chromium:
        admin = await browser.new_context(chromium, admins.server.url)
        page = await admin.new_page()
        await browser.sign_in(page, "ada", path="/users")
        await page.get_by_test_id("user-name").fill("omar")
        await page.get_by_test_id("user-email").fill("omar@example.com")
        await page.get_by_test_id("role-operator").check()
        await page.get_by_test_id("user-password").fill(new_password)
        await page.get_by_test_id("user-confirm").fill(new_password)
        await shots.take(page, "add-user-form")
        await page.get_by_test_id("user-add").click()
        await page.wait_for_url(re.compile(r"/users/omar\?done=added$"))
        await expect(page.get_by_test_id("user-notice")).to_have_text("User added.")

        await page.get_by_test_id("token-label").fill("reporting")
        await page.get_by_test_id("token-create").click()
        token = await page.get_by_test_id("new-token-value").inner_text()
        await shots.take(page, "token-shown-once")
        await admin.close()

        # The new operator signs in with the password the admin chose.
        operator = await browser.new_context(chromium, admins.server.url)
        page = await operator.new_page()
        await page.goto("/login")
        await page.get_by_label("User name").fill("omar")
        await page.get_by_label("Password").fill(new_password)
        await page.get_by_role("button", name="Sign in").click()
        await expect(page.get_by_test_id("signed-in-user")).to_contain_text("omar")
        await expect(page.get_by_test_id("nav-dead-letters")).to_have_count(1)
        await expect(page.get_by_test_id("nav-users")).to_have_count(0)
        await shots.take(page, "operator-signed-in")
        await operator.close()

    # The token acts as omar, an operator, on the REST API.
    with httpx.Client(base_url=admins.server.url) as api:
        listed = api.get(
            "/api/dead-letters", headers={"Authorization": f"Bearer {token.strip()}"}
        )
    assert listed.status_code == 200
    store = RunStore(admins.store_url)
    try:
        omar = await store.find_user("omar")
        actions = [e.action for e in await store.audit_entries(actor="ada")]
    finally:
        await store.close()
    assert omar.roles == ("operator",) and omar.email == "omar@example.com"
    assert {"user_add", "token_create"} <= set(actions)


async def post_form(page: Page, action: str) -> int:
    """Post a form built in the page with its own CSRF token; the answer's status."""
    async with page.expect_response(lambda r: r.url.endswith(action)) as answer:
        await page.evaluate(
            """action => {
                const form = document.createElement("form");
                form.method = "post";
                form.action = action;
                const token = document.querySelector("input[name=csrf_token]");
                form.append(token.cloneNode());
                const input = document.createElement("textarea");
                input.name = "input";
                form.append(input);
                document.body.append(form);
                form.submit();
            }""",
            action,
        )
    await page.wait_for_load_state()
    return (await answer.value).status
