"""The dashboard against a real store and real runs: pages, replays, the inbox,
permissions. People sign in through the login page like in a browser."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from lobflows.runtime import Runtime
from lobflows.settings import Settings
from lobflows.testing.servers import ServerThread, bind_socket, build_server
from lobflows.web import credentials
from lobflows.web.app import create_app
from lobflows.web.dashboard import dead_letters, live
from tests.support import drain

pytestmark = pytest.mark.integration

CARD = """card:
  trigger: by hand
  data: {entity: order, sensitivity: internal}
  transform: none
  target: the order service
  on_failure: dead letter
  owner: team@example.com
trigger: {manual: {}}
retry: {max_attempts: 1, initial_delay_seconds: 1, max_delay_seconds: 1}
"""

ORDERS = f"""flow: push-orders
description: Sends orders to the order service.
{CARD}
steps:
  - id: push
    call: shop.request
    with:
      method: POST
      path: /orders
      json: {{sku: "{{{{ input.sku }}}}", quantity: "{{{{ input.quantity }}}}"}}
"""

APPROVAL = f"""flow: approve-purchase
{CARD}
steps:
  - id: approval
    task:
      title: "Approve {{{{ input.item }}}}"
      assignees:
        - user: ann@example.com
      form:
        - {{name: budget_code, type: text, required: true}}
  - id: result
    map:
      outcome: "{{{{ steps.approval.outcome }}}}"
"""

PASSWORD = "correct horse battery staple"


class OrderService:
    """Refuses orders without a positive quantity (422), keeps the ones it took."""

    def __init__(self) -> None:
        self.taken: list[dict[str, Any]] = []

    def app(self) -> Starlette:
        async def orders(request: Request) -> JSONResponse:
            body = await request.json()
            if int(body.get("quantity") or 0) <= 0:
                return JSONResponse({"error": "quantity must be positive"}, 422)
            self.taken.append(body)
            return JSONResponse({"id": len(self.taken)}, 201)

        return Starlette(routes=[Route("/orders", orders, methods=["POST"])])


@pytest.fixture
def shop() -> Iterator[tuple[OrderService, str]]:
    service = OrderService()
    with ServerThread(service.app()) as server:
        yield service, server.url


@pytest.fixture
async def runtime(
    store_url: str, tmp_path: Path, shop: tuple[OrderService, str]
) -> AsyncIterator[Runtime]:
    (tmp_path / "push-orders.yaml").write_text(ORDERS)
    (tmp_path / "approve-purchase.yaml").write_text(APPROVAL)
    (tmp_path / "connections.yaml").write_text(
        f"connections:\n  shop:\n    type: http\n    base_url: '{shop[1]}'\n"
        "    limits: {rate_per_second: 50, burst: 5}\n"
    )
    opened = await Runtime.open(Settings(database_url=store_url), tmp_path)
    hashed = credentials.hash_password(PASSWORD)
    for name, role in [
        ("olga", "operator"),
        ("vic", "viewer"),
        ("ann", "approver"),
        ("ada", "admin"),
    ]:
        email = f"{name}@example.com"
        await opened.store.add_user(
            name, roles=[role], email=email, password_hash=hashed
        )
    yield opened
    await opened.close()


@pytest.fixture
async def browser(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(runtime, has_local_worker=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://dashboard.test",
        headers={"Accept": "text/html"},
    ) as client:
        yield client


async def sign_in(client: httpx.AsyncClient, name: str) -> None:
    page = await client.get("/login")
    reply = await client.post(
        "/login",
        data={"name": name, "password": PASSWORD, "csrf_token": csrf(page.text)},
    )
    assert reply.status_code == 303, reply.text


def csrf(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found is not None, "the page has no CSRF token"
    return found.group(1)


async def failed_order(runtime: Runtime, **order: Any) -> str:
    run, _ = await runtime.engine.start_run(
        "push-orders", input={"sku": "A-1", "quantity": 0, **order}, trigger="manual"
    )
    await drain(runtime)
    assert (await runtime.store.get_run(run.id)).status == "failed"
    return run.id


async def test_a_failed_run_shows_as_an_error_and_a_corrected_replay_succeeds(
    runtime: Runtime, browser: httpx.AsyncClient, shop: tuple[OrderService, str]
):
    run_id = await failed_order(runtime)
    await sign_in(browser, "olga")

    overview = await browser.get("/")
    assert overview.status_code == 200
    assert 'data-testid="tile-push-orders"' in overview.text
    assert f'href="/runs/{run_id}"' in overview.text  # in the recent errors
    assert "Signed in as <strong>olga</strong>" in overview.text

    page = await browser.get(f"/runs/{run_id}")
    assert page.status_code == 200
    assert 'data-testid="replay-section"' in page.text
    assert "422" in page.text
    letter = (await runtime.store.dead_letters_of_run(run_id))[0]

    refused = await browser.post(
        f"/dead-letters/{letter.id}/replay",
        data={"csrf_token": csrf(page.text), "back": "run", "input": "{not json"},
    )
    assert refused.status_code == 400
    assert "the corrected input is not valid JSON" in refused.text
    assert "{not json" in refused.text  # the text given is kept for correcting
    assert (await runtime.store.get_run(run_id)).status == "failed"

    corrected = (
        '{"method": "POST", "path": "/orders", "json": {"sku": "A-1", "quantity": 3}}'
    )
    replayed = await browser.post(
        f"/dead-letters/{letter.id}/replay",
        data={"csrf_token": csrf(page.text), "back": "run", "input": corrected},
    )
    assert replayed.status_code == 303
    assert (await runtime.store.get_run(run_id)).status == "queued"

    await drain(runtime)
    assert (await runtime.store.get_run(run_id)).status == "succeeded"
    assert shop[0].taken == [{"sku": "A-1", "quantity": 3}]
    done = await browser.get(f"/runs/{run_id}")
    assert 'data-testid="run-status">succeeded' in done.text
    assert 'data-testid="replay-section"' not in done.text
    [entry] = await runtime.store.audit_entries(action="replay")
    assert (entry.actor, entry.target) == ("olga", f"dead letter {letter.id}")
    assert entry.detail["corrected"] == ["step input"]


async def test_many_dead_letters_replay_in_the_background_and_one_is_discarded(
    runtime: Runtime, browser: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(dead_letters, "REPLAYS_PER_SECOND", 50.0)
    runs = [await failed_order(runtime, sku=f"S-{i}") for i in range(3)]
    letters = {
        run_id: (await runtime.store.dead_letters_of_run(run_id))[0].id
        for run_id in runs
    }
    await sign_in(browser, "olga")
    listing = await browser.get("/dead-letters")
    assert listing.text.count('data-testid="dead-letter-row"') == 3

    chosen = [letters[runs[0]], letters[runs[1]]]
    started = await browser.post(
        "/dead-letters/replay",
        data={"csrf_token": csrf(listing.text), "letter": [str(i) for i in chosen]},
    )
    assert started.status_code == 303
    job_path = started.headers["location"]
    deadline = time.monotonic() + 30
    while 'data-finished="yes"' not in (page := await browser.get(job_path)).text:
        assert time.monotonic() < deadline, page.text
        await asyncio.sleep(0.05)
    assert 'data-done="2" data-total="2"' in page.text
    assert [(await runtime.store.get_run(r)).status for r in runs] == [
        "queued",
        "queued",
        "failed",
    ]

    third = letters[runs[2]]
    no_reason = await browser.post(
        f"/dead-letters/{third}/discard",
        data={"csrf_token": csrf(listing.text), "reason": "  "},
    )
    assert no_reason.status_code == 400
    assert "give a reason" in no_reason.text
    discarded = await browser.post(
        f"/dead-letters/{third}/discard",
        data={"csrf_token": csrf(listing.text), "reason": "duplicate of S-1"},
    )
    assert discarded.status_code == 303
    assert (await runtime.store.dead_letter(third)).status == "discarded"
    closed = await browser.get("/dead-letters", params={"status": "discarded"})
    assert "duplicate of S-1 (olga)" in closed.text
    actions = [e.action for e in await runtime.store.audit_entries(actor="olga")]
    assert actions.count("replay") == 2 and actions.count("discard") == 1


async def test_a_replay_job_whose_process_stopped_is_taken_over_from_its_page(
    runtime: Runtime, browser: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(dead_letters, "REPLAYS_PER_SECOND", 50.0)
    runs = [await failed_order(runtime, sku=f"S-{i}") for i in range(3)]
    letters = [(await runtime.store.dead_letters_of_run(r))[0].id for r in runs]
    store = runtime.store
    # A process replayed the first letter, noted it, and stopped.
    stopped = await store.create_replay_job(
        "stoppedjob01", actor="olga", letter_ids=letters, owner="gone", lease_seconds=30
    )
    first_run = await store.replay_dead_letter(letters[0])
    await store.record_replay_result(
        stopped.id,
        {"letter": letters[0], "run_id": first_run},
        owner="gone",
        lease_seconds=-1,
    )
    # Another is still working on its job: its page only shows the progress.
    alive = await store.create_replay_job(
        "alivejob0001",
        actor="olga",
        letter_ids=letters[1:],
        owner="alive",
        lease_seconds=600,
    )
    await sign_in(browser, "olga")

    watched = await browser.get(f"/dead-letters/jobs/{alive.id}")
    deadline = time.monotonic() + 30
    path = f"/dead-letters/jobs/{stopped.id}"
    while 'data-finished="yes"' not in (page := await browser.get(path)).text:
        assert time.monotonic() < deadline, page.text
        await asyncio.sleep(0.05)

    assert 'data-done="0" data-total="2"' in watched.text
    assert (await store.replay_job(alive.id)).owner == "alive"
    assert 'data-done="3" data-total="3"' in page.text
    job = await store.replay_job(stopped.id)
    assert job.owner == runtime.engine.owner
    assert [letter for letter, _ in job.replayed] == letters
    assert job.refused == []
    assert [(await store.get_run(r)).status for r in runs] == ["queued"] * 3
    audited = [e.target for e in await store.audit_entries(action="replay")]
    assert sorted(audited) == [f"dead letter {i}" for i in letters[1:]]


async def test_a_decision_in_the_inbox_settles_the_task_and_resumes_the_run(
    runtime: Runtime, browser: httpx.AsyncClient
):
    run, _ = await runtime.engine.start_run(
        "approve-purchase", input={"item": "laptop"}, trigger="manual"
    )
    await drain(runtime)
    task = await runtime.store.task_of_step(run.id, "approval")
    assert task is not None
    await sign_in(browser, "ann")

    inbox = await browser.get("/inbox")
    assert f'data-task="{task.id}"' in inbox.text
    assert "Approve laptop" in inbox.text
    page = await browser.get(f"/inbox/{task.id}")
    refused = await browser.post(
        f"/inbox/{task.id}", data={"csrf_token": csrf(page.text), "decision": "approve"}
    )
    assert refused.status_code == 409
    assert "budget_code: a value is required" in refused.text

    decided = await browser.post(
        f"/inbox/{task.id}",
        data={
            "csrf_token": csrf(page.text),
            "decision": "approve",
            "field.budget_code": "IT-7",
        },
        follow_redirects=True,
    )
    assert decided.status_code == 200
    assert "the task is approved" in decided.text
    await drain(runtime)
    assert (await runtime.store.get_run(run.id)).status == "succeeded"
    assert (await runtime.store.completed_steps(run.id))["result"] == {
        "outcome": "approved"
    }
    assert 'data-testid="inbox-empty"' in (await browser.get("/inbox")).text
    [entry] = await runtime.store.audit_entries(action="decide")
    assert (entry.actor, entry.detail["decision"]) == ("ann", "approve")


async def test_the_flow_page_shows_card_versions_and_filtered_runs(
    runtime: Runtime, browser: httpx.AsyncClient
):
    failed = await failed_order(runtime)
    await sign_in(browser, "vic")

    page = await browser.get("/flows/push-orders")
    assert page.status_code == 200
    assert "Sends orders to the order service." in page.text
    assert "the order service" in page.text  # the card's target
    assert 'data-testid="versions"' in page.text
    assert failed[:12] in page.text

    none_succeeded = await browser.get(
        "/flows/push-orders", params={"status": "succeeded"}
    )
    assert failed[:12] not in none_succeeded.text
    by_id = await browser.get("/flows/push-orders", params={"run": failed[3:9]})
    assert failed[:12] in by_id.text
    wrong = await browser.get("/flows/push-orders", params={"status": "lost"})
    assert wrong.status_code == 400
    assert "status &#39;lost&#39; is not one of" in wrong.text
    missing = await browser.get("/flows/no-such-flow")
    assert missing.status_code == 404
    assert "Traceback" not in missing.text


async def test_map_and_connections_show_health_limits_and_breaker(
    runtime: Runtime, browser: httpx.AsyncClient
):
    await sign_in(browser, "vic")
    drawn = await browser.get("/map")
    assert drawn.status_code == 200
    assert "<svg" in drawn.text and "<?xml" not in drawn.text
    assert 'class="system connection health-' in drawn.text
    assert 'data-testid="map-flow-push-orders"' in drawn.text

    listed = await browser.get("/connections")
    assert 'data-testid="connection-shop"' in listed.text
    assert 'data-breaker="closed"' in listed.text
    assert "50.0/s (burst 5)" in listed.text
    assert "not checked yet" in listed.text

    await runtime.monitor.checker.run_due(force=True)
    checked = await browser.get("/connections")
    assert "not checked yet" not in checked.text
    assert " answered " in checked.text


async def test_each_page_asks_for_its_permission(
    runtime: Runtime, browser: httpx.AsyncClient
):
    run_id = await failed_order(runtime)
    letter = (await runtime.store.dead_letters_of_run(run_id))[0]

    anonymous = await browser.get("/dead-letters")
    assert anonymous.status_code == 303
    assert anonymous.headers["location"].startswith("/login")

    await sign_in(browser, "vic")
    for path in ("/", "/map", "/connections", f"/runs/{run_id}", "/flows/push-orders"):
        assert (await browser.get(path)).status_code == 200, path
    for path in ("/dead-letters", "/secrets", "/audit", "/inbox"):
        refused = await browser.get(path)
        assert refused.status_code == 403, path
        assert "Traceback" not in refused.text
    page = await browser.get(f"/runs/{run_id}")
    assert 'data-testid="replay-section"' not in page.text  # no form for a viewer
    replay = await browser.post(
        f"/dead-letters/{letter.id}/replay", data={"csrf_token": csrf(page.text)}
    )
    assert replay.status_code == 403
    assert (await runtime.store.dead_letter(letter.id)).status == "open"


async def test_an_approver_cannot_see_secrets_and_an_admin_sees_the_audit(
    runtime: Runtime, browser: httpx.AsyncClient
):
    await sign_in(browser, "ann")
    assert (await browser.get("/secrets")).status_code == 403
    assert (await browser.get("/inbox")).status_code == 200

    browser.cookies.clear()
    await sign_in(browser, "ada")
    audit = await browser.get("/audit")
    assert audit.status_code == 200
    assert 'data-action="sign_in"' in audit.text
    assert (await browser.get("/secrets")).status_code == 200


async def test_a_form_without_its_csrf_token_is_refused(
    runtime: Runtime, browser: httpx.AsyncClient
):
    run_id = await failed_order(runtime)
    letter = (await runtime.store.dead_letters_of_run(run_id))[0]
    await sign_in(browser, "olga")

    forged = await browser.post(
        f"/dead-letters/{letter.id}/discard", data={"reason": "forged"}
    )
    assert forged.status_code == 403
    assert (await runtime.store.dead_letter(letter.id)).status == "open"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('"str"', "must be a JSON object, not a string"),  # valid JSON, not an object
        ("null", "must be a JSON object, not null"),
        ("[1, 2]", "must be a JSON object, not a list"),
    ],
)
async def test_a_replay_from_the_page_takes_only_a_json_object_as_input(
    runtime: Runtime, browser: httpx.AsyncClient, text: str, problem: str
):
    run_id = await failed_order(runtime)
    letter = (await runtime.store.dead_letters_of_run(run_id))[0]
    await sign_in(browser, "olga")
    page = await browser.get(f"/dead-letters/{letter.id}")

    refused = await browser.post(
        f"/dead-letters/{letter.id}/replay",
        data={"csrf_token": csrf(page.text), "input": text},
    )

    assert refused.status_code == 400
    assert problem in refused.text
    assert (await runtime.store.dead_letter(letter.id)).status == "open"
    assert (await runtime.store.get_run(run_id)).status == "failed"


@pytest.fixture
async def served(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[str]:
    """The app on a loopback port, served in this loop: streams arrive as sent."""
    monkeypatch.setattr(live, "INTERVAL_SECONDS", 0.05)
    server = build_server(create_app(runtime, has_local_worker=False))
    sock = bind_socket()
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and not serving.done()
        await asyncio.sleep(0.01)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    await serving


@contextlib.asynccontextmanager
async def signed_in_client(url: str, name: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=url, headers={"Accept": "text/html"}, timeout=30
    ) as client:
        await sign_in(client, name)
        yield client


async def next_event(lines: AsyncIterator[str]) -> str:
    async for line in lines:
        if line.startswith("event: "):
            return line.removeprefix("event: ")
    raise AssertionError("the stream ended")


@pytest.mark.parametrize("ending", ["sign-out", "user removed"])
async def test_live_updates_end_when_the_session_ends(
    runtime: Runtime, served: str, ending: str
):
    async with signed_in_client(served, "olga") as client:
        token = csrf((await client.get("/")).text)
        async with client.stream("GET", "/events") as stream:
            lines = stream.aiter_lines()
            assert await next_event(lines) == "snapshot"

            if ending == "sign-out":
                await client.post("/logout", data={"csrf_token": token})
            else:
                await runtime.store.remove_user("olga")

            # The server ends the stream (keep-alive comments would hold a
            # stream left open past any read timeout).
            async with asyncio.timeout(30):
                rest = [line async for line in lines]

    assert "event: signed_out" in rest
    assert "event: snapshot" not in rest


TWO_ERRORS = 'data-testid="tile-errors-push-orders">2<'


async def test_live_updates_are_sent_only_when_the_data_changes(
    runtime: Runtime, served: str
):
    # Given a tile with a last run, whose relative time changes every second
    await failed_order(runtime)
    received: list[dict[str, Any]] = []

    async def collect(stream: httpx.Response) -> None:
        event = ""
        async for line in stream.aiter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: ") and event == "snapshot":
                received.append(json.loads(line.removeprefix("data: ")))

    async with signed_in_client(served, "olga") as client:
        async with client.stream("GET", "/events") as stream:
            collecting = asyncio.create_task(collect(stream))
            await _until(lambda: len(received) >= 1)
            # When nothing happens for longer than the relative time takes
            # to change (the stream looks every 0.05 s)
            await asyncio.sleep(2.5)
            quiet = len(received)
            # and then a run fails
            await failed_order(runtime, sku="B-2")
            await _until(lambda: TWO_ERRORS in received[-1]["tiles"]["push-orders"])
            collecting.cancel()

    # Then the quiet time sent nothing, and the failure sent an update
    assert quiet == 1
    tile = received[-1]["tiles"]["push-orders"]
    assert re.search(r'<time datetime="[0-9T:+-]+" [^>]*data-ago>', tile)


async def _until(condition: Any, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.02)
