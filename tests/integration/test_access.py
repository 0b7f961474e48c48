"""Access control: sign-in, sessions, API tokens, roles, CSRF, single sign-on
and the audit log, through the app against a real store."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from lobflows import errors
from lobflows.engine.clock import ManualClock
from lobflows.runtime import Runtime
from lobflows.settings import Settings
from lobflows.store import tables
from lobflows.testing.oidc import OidcProvider
from lobflows.testing.servers import ServerThread
from lobflows.web import credentials, throttle
from lobflows.web.app import create_app
from tests.support import Service, pass_once

pytestmark = pytest.mark.integration

FLOW = """flow: place-order
card:
  trigger: webhook from the shop
  data: {entity: order, sensitivity: internal}
  transform: none
  target: a local service
  on_failure: dead letter
  owner: ops@example.com
trigger: {webhook: {path: /hooks/order}}
retry: {max_attempts: 1}
steps:
  - id: send
    call: svc.request
    with: {method: POST, path: /orders, json: "{{ input }}"}
"""

APPROVAL = """flow: approve-spend
card:
  trigger: by hand
  data: {entity: purchase, sensitivity: internal}
  transform: none
  target: nobody
  on_failure: dead letter
  owner: finance@example.com
trigger: {manual: {}}
steps:
  - id: approval
    task:
      kind: approval
      title: "Approve {{ input.item }}"
      assignees:
        - user: ann@example.com
"""

PASSWORD = "correct horse battery"
BASE = "http://flows.test"
CLIENT_ID, CLIENT_SECRET = "lobflows-test", "oidc-client-secret-value"


@pytest.fixture
async def runtime(store_url: str, tmp_path: Path) -> AsyncIterator[Runtime]:
    service = Service()
    with ServerThread(service.app()) as server:
        (tmp_path / "place-order.yaml").write_text(FLOW)
        (tmp_path / "approve-spend.yaml").write_text(APPROVAL)
        (tmp_path / "connections.yaml").write_text(
            f"connections:\n  svc: {{type: http, base_url: '{server.url}'}}\n"
        )
        (tmp_path / "secrets.yaml").write_text(
            f"session_key: a-session-key-for-tests\noidc_client_secret: {CLIENT_SECRET}\n"
        )
        settings = Settings(
            database_url=store_url,
            secrets_file=tmp_path / "secrets.yaml",
            public_url=BASE,
            api_token="shared-api-token",
        )
        opened = await Runtime.open(settings, tmp_path)
        # A replay queues the run by the real time; the test clock stays ahead.
        opened.engine.clock = ManualClock(start=time.time() + 3600)
        opened.service = service  # type: ignore[attr-defined]
        yield opened
        await opened.close()


def client_for(runtime: Runtime) -> httpx.AsyncClient:
    app = create_app(runtime, has_local_worker=False)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE)


async def add_user(runtime: Runtime, name: str, *roles: str, email: str | None = None):
    await runtime.store.add_user(
        name,
        roles=list(roles),
        email=email,
        password_hash=credentials.hash_password(PASSWORD),
    )


async def token_for(runtime: Runtime, name: str) -> dict[str, str]:
    token = credentials.new_api_token()
    await runtime.store.add_api_token(
        name, name="tests", token_hash=credentials.token_digest(token)
    )
    return {"Authorization": f"Bearer {token}"}


async def sign_in(client: httpx.AsyncClient, name: str, password: str = PASSWORD):
    page = await client.get("/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    return await client.post(
        "/login",
        data={"csrf_token": csrf, "name": name, "password": password, "next": "/x"},
    )


async def dead_letter(runtime: Runtime) -> int:
    runtime.service.failures["/orders"] = [422]  # type: ignore[attr-defined]
    await runtime.engine.start_run("place-order", input={"n": 1}, trigger="manual")
    await pass_once(runtime)
    [letter] = await runtime.store.dead_letters()
    return letter.id


async def test_anonymous_api_calls_get_401_and_browsers_go_to_the_sign_in_page(
    runtime: Runtime,
):
    async with client_for(runtime) as client:
        api = await client.get("/api/tasks")
        page = await client.get("/inbox?x=1", headers={"Accept": "text/html"})
        wrong = await client.get(
            "/api/tasks", headers={"Authorization": "Bearer lft_wrong"}
        )

    assert api.status_code == 401 and "error" in api.json()
    assert api.headers["www-authenticate"].startswith("Bearer")
    assert page.status_code == 303
    assert page.headers["location"] == "/login?next=%2Finbox%3Fx%3D1"
    assert wrong.status_code == 401 and "wrong or revoked" in wrong.json()["error"]


async def test_webhooks_health_and_the_sign_in_page_are_open(runtime: Runtime):
    async with client_for(runtime) as client:
        hook = await client.post("/hooks/order", json={"n": 2})
        health = await client.get("/healthz")
        login = await client.get("/login")
        other_post = await client.post("/hooks/not-declared", json={})
        api_post = await client.post("/api/dead-letters/1/replay", json={})
        page_post = await client.post("/dead-letters/1/discard", data={"reason": "x"})

    assert hook.status_code == 202 and hook.json()["flow"] == "place-order"
    assert health.status_code == 200 and login.status_code == 200
    assert 'name="csrf_token"' in login.text
    # A POST no page claims is a delivery to a webhook no flow declares.
    assert other_post.status_code == 404
    assert other_post.json()["error"] == "no flow listens on /hooks/not-declared"
    # The API's and the pages' own POSTs are not webhooks.
    assert (api_post.status_code, page_post.status_code) == (401, 401)


async def test_a_viewer_cannot_replay_and_an_operator_replays_with_an_audit_entry(
    runtime: Runtime,
):
    letter_id = await dead_letter(runtime)
    await add_user(runtime, "vic", "viewer")
    await add_user(runtime, "olga", "operator")
    viewer, operator = await token_for(runtime, "vic"), await token_for(runtime, "olga")

    async with client_for(runtime) as client:
        seen = await client.get(
            f"/api/runs/{(await runtime.store.dead_letter(letter_id)).run_id}",
            headers=viewer,
        )
        refused = await client.post(
            f"/api/dead-letters/{letter_id}/replay", json={}, headers=viewer
        )
        listed = await client.get("/api/dead-letters", headers=operator)
        replayed = await client.post(
            f"/api/dead-letters/{letter_id}/replay",
            json={"input": {"method": "POST", "path": "/orders", "json": {"n": 3}}},
            headers=operator,
        )
        again = await client.post(
            f"/api/dead-letters/{letter_id}/replay", headers=operator
        )

    assert seen.status_code == 200
    assert refused.status_code == 403 and "operate" in refused.json()["error"]
    assert [d["id"] for d in listed.json()["dead_letters"]] == [letter_id]
    assert replayed.status_code == 200 and replayed.json()["status"] == "replayed"
    assert again.status_code == 409
    [entry] = await runtime.store.audit_entries(action="replay")
    assert (entry.actor, entry.target) == ("olga", f"dead letter {letter_id}")
    assert entry.detail["corrected_input"] is True
    assert abs(entry.at - time.time()) < 600
    await pass_once(runtime)
    run = await runtime.store.get_run(replayed.json()["run_id"])
    assert run.status == "succeeded"


async def test_discard_needs_a_reason_and_is_audited(runtime: Runtime):
    letter_id = await dead_letter(runtime)
    await add_user(runtime, "olga", "operator")
    operator = await token_for(runtime, "olga")

    async with client_for(runtime) as client:
        bare = await client.post(
            f"/api/dead-letters/{letter_id}/discard", json={}, headers=operator
        )
        done = await client.post(
            f"/api/dead-letters/{letter_id}/discard",
            json={"reason": "duplicate order"},
            headers=operator,
        )

    assert bare.status_code == 400 and "reason" in bare.json()["error"]
    assert done.status_code == 200
    assert (await runtime.store.dead_letter(letter_id)).status == "discarded"
    [entry] = await runtime.store.audit_entries(action="discard")
    assert entry.actor == "olga" and entry.detail["reason"] == "duplicate order"


async def test_an_approver_cannot_see_secrets_or_the_audit_log(runtime: Runtime):
    await add_user(runtime, "ann", "approver", email="ann@example.com")
    approver = await token_for(runtime, "ann")

    async with client_for(runtime) as client:
        secrets = await client.get("/api/secrets", headers=approver)
        audit = await client.get("/api/audit", headers=approver)
        shared = await client.get(
            "/api/audit", headers={"Authorization": "Bearer shared-api-token"}
        )

    assert secrets.status_code == 403 and "secrets" in secrets.json()["error"]
    assert audit.status_code == 403
    assert shared.status_code == 200 and "entries" in shared.json()


async def test_decisions_act_for_the_principal_and_only_admins_act_for_others(
    runtime: Runtime,
):
    run, _ = await runtime.engine.start_run(
        "approve-spend", input={"item": "desk"}, trigger="manual"
    )
    await pass_once(runtime)
    [task] = await runtime.store.list_tasks(status="open", user=None, limit=10)
    await add_user(runtime, "ann", "approver", email="ann@example.com")
    await add_user(runtime, "vic", "viewer")
    ann, vic = await token_for(runtime, "ann"), await token_for(runtime, "vic")

    async with client_for(runtime) as client:
        viewer = await client.post(
            f"/api/tasks/{task.id}/decisions", json={"decision": "approve"}, headers=vic
        )
        for_other = await client.post(
            f"/api/tasks/{task.id}/decisions",
            json={"decision": "approve", "by": "bob@example.com"},
            headers=ann,
        )
        own = await client.post(
            f"/api/tasks/{task.id}/decisions", json={"decision": "approve"}, headers=ann
        )

    assert viewer.status_code == 403 and "decide" in viewer.json()["error"]
    assert for_other.status_code == 403
    assert own.status_code == 200 and own.json()["status"] == "approved"
    [entry] = await runtime.store.audit_entries(action="decide")
    assert entry.actor == "ann" and entry.detail["by"] == "ann@example.com"


async def test_password_sign_in_opens_a_session_and_sign_out_ends_it(
    runtime: Runtime,
):
    await add_user(runtime, "olga", "operator")

    async with client_for(runtime) as client:
        signed_in = await sign_in(client, "olga")
        cookie = client.cookies.get("lobflows_session")
        listed = await client.get("/api/tasks")
        page = await client.get("/login?next=/inbox")
        signed_out = await client.post(
            "/logout", data={"csrf_token": await _csrf(client)}
        )
        after = await client.get("/api/tasks")

    assert signed_in.status_code == 303 and signed_in.headers["location"] == "/x"
    assert cookie and listed.status_code == 200
    assert page.status_code == 303 and page.headers["location"] == "/inbox"
    assert signed_out.status_code == 303 and after.status_code == 401
    actions = [e.action for e in await runtime.store.audit_entries(actor="olga")]
    assert actions == ["sign_out", "sign_in"]


async def _csrf(client: httpx.AsyncClient) -> str:
    """A signed-in session's CSRF token, from the sign-out form of /login."""
    page = await client.get("/login")
    assert "You are signed in as" in page.text
    return re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)


async def test_a_wrong_password_and_an_unknown_user_get_the_same_answer(
    runtime: Runtime,
):
    await add_user(runtime, "olga", "operator")

    async with client_for(runtime) as client:
        wrong = await sign_in(client, "olga", "not the password")
        unknown = await sign_in(client, "nobody", "not the password")
        after = await client.get("/api/tasks")

    assert wrong.status_code == unknown.status_code == 401
    assert "Wrong user name or password." in wrong.text
    assert _without_tokens(wrong.text).replace("olga", "") == _without_tokens(
        unknown.text
    ).replace("nobody", "")
    assert after.status_code == 401
    failed = await runtime.store.audit_entries(action="sign_in_failed")
    assert {e.target for e in failed} == {"user olga", "user nobody"}


def _without_tokens(html: str) -> str:
    return re.sub(r'value="[A-Za-z0-9_-]{30,}"', "", html)


async def test_a_forged_or_missing_csrf_token_gets_403(runtime: Runtime):
    await add_user(runtime, "olga", "operator")
    letter_id = await dead_letter(runtime)

    async with client_for(runtime) as client:
        missing = await client.post(
            "/login", data={"name": "olga", "password": PASSWORD}
        )
        await sign_in(client, "olga")
        forged = await client.post("/logout", data={"csrf_token": "forged"})
        api_without_header = await client.post(
            f"/api/dead-letters/{letter_id}/discard", json={"reason": "x"}
        )
        api_with_header = await client.post(
            f"/api/dead-letters/{letter_id}/discard",
            json={"reason": "x"},
            headers={"X-CSRF-Token": await _csrf(client)},
        )

    assert missing.status_code == 403
    assert "stale or forged" in missing.text
    assert forged.status_code == 403
    assert api_without_header.status_code == 403
    assert api_with_header.status_code == 200


async def test_passwords_and_tokens_are_stored_hashed(runtime: Runtime):
    await add_user(runtime, "olga", "operator")
    token = credentials.new_api_token()
    await runtime.store.add_api_token(
        "olga", name="ci", token_hash=credentials.token_digest(token)
    )

    async with runtime.store.engine.connect() as conn:
        users = (await conn.execute(sa.select(tables.users))).all()
        tokens = (await conn.execute(sa.select(tables.api_tokens))).all()
    stored = repr(users) + repr(tokens)

    assert PASSWORD not in stored and token not in stored
    assert users[0].password_hash.startswith("$argon2id$")
    assert tokens[0].token_hash == credentials.token_digest(token)
    async with client_for(runtime) as client:
        ok = await client.get(
            "/api/tasks", headers={"Authorization": f"Bearer {token}"}
        )
        await runtime.store.revoke_api_token("olga", "ci")
        revoked = await client.get(
            "/api/tasks", headers={"Authorization": f"Bearer {token}"}
        )
    assert ok.status_code == 200 and revoked.status_code == 401


async def test_a_session_ends_when_the_user_is_removed_or_the_password_changes(
    runtime: Runtime,
):
    await add_user(runtime, "olga", "operator")
    await add_user(runtime, "vic", "viewer")

    async with client_for(runtime) as first, client_for(runtime) as second:
        await sign_in(first, "olga")
        await sign_in(second, "vic")
        await runtime.store.set_password_hash(
            "olga", credentials.hash_password("another password")
        )
        await runtime.store.remove_user("vic")
        olga = await first.get("/api/tasks")
        vic = await second.get("/api/tasks")

    assert olga.status_code == 401 and vic.status_code == 401


async def test_sign_in_redirects_only_to_local_paths(runtime: Runtime):
    await add_user(runtime, "olga", "operator")
    async with client_for(runtime) as client:
        page = await client.get("/login")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        response = await client.post(
            "/login",
            data={
                "csrf_token": csrf,
                "name": "olga",
                "password": PASSWORD,
                "next": "//evil.example.com/",
            },
        )
    assert response.status_code == 303 and response.headers["location"] == "/"


# -- single sign-on ---------------------------------------------------------


@pytest.fixture
def provider() -> Any:
    issuer = OidcProvider(
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        redirect_uris=[f"{BASE}/auth/oidc/callback"],
    )
    with ServerThread(issuer.app) as server:
        issuer.url = server.url  # type: ignore[attr-defined]
        yield issuer


def sso_client(runtime: Runtime, provider: Any, **settings: Any) -> httpx.AsyncClient:
    """A browser: the app in process, the issuer over loopback, redirects followed."""
    configured = runtime.settings.model_copy(
        update={
            "oidc_issuer": provider.url,
            "oidc_client_id": CLIENT_ID,
            **settings,
        }
    )
    app = create_app(
        Runtime(
            settings=configured,
            store=runtime.store,
            secrets=runtime.secrets,
            engine=runtime.engine,
            worker=runtime.worker,
        ),
        has_local_worker=False,
    )
    return httpx.AsyncClient(
        base_url=BASE,
        mounts={
            BASE: httpx.ASGITransport(app=app),
            provider.url: httpx.AsyncHTTPTransport(),
        },
        follow_redirects=True,
    )


async def test_single_sign_on_signs_in_a_known_user_end_to_end(
    runtime: Runtime, provider: Any
):
    await add_user(runtime, "ann", "approver", email="ann@example.com")
    provider.sign_in_as(
        sub="u-ann", email="Ann@Example.com", email_verified=True, name="Ann Lee"
    )

    async with sso_client(runtime, provider) as browser:
        landed = await browser.get("/auth/oidc/login?next=/api/tasks")
        hops = [str(r.url).split("?")[0] for r in landed.history]

    assert landed.status_code == 200 and "tasks" in landed.json()
    assert hops == [
        f"{BASE}/auth/oidc/login",
        f"{provider.url}/authorize",
        f"{BASE}/auth/oidc/callback",
    ]
    assert provider.token_requests == 1
    [entry] = await runtime.store.audit_entries(action="sign_in")
    assert entry.actor == "ann" and entry.detail == {"method": "oidc"}


async def test_single_sign_on_adds_a_user_whose_group_maps_to_a_role(
    runtime: Runtime, provider: Any
):
    provider.sign_in_as(
        sub="u-olga",
        preferred_username="olga",
        email="olga@example.com",
        groups=["staff", "integration-ops"],
    )

    async with sso_client(
        runtime, provider, oidc_role_map={"integration-ops": "operator"}
    ) as browser:
        landed = await browser.get("/auth/oidc/login?next=/api/dead-letters")

    assert landed.status_code == 200 and landed.json() == {"dead_letters": []}
    user = await runtime.store.find_user("olga")
    assert user.roles == ("operator",) and user.password_hash is None
    [added] = await runtime.store.audit_entries(action="user_add")
    assert added.actor == "oidc" and added.target == "user olga"


async def test_single_sign_on_refuses_a_stranger_with_a_clear_page(
    runtime: Runtime, provider: Any
):
    provider.sign_in_as(sub="u-zed", preferred_username="zed", groups=["staff"])

    async with sso_client(runtime, provider) as browser:
        refused = await browser.get("/auth/oidc/login")
        after = await browser.get("/api/tasks")

    assert refused.status_code == 403
    assert "zed is not a user of LoB Flows" in refused.text
    assert after.status_code == 401
    [entry] = await runtime.store.audit_entries(action="sign_in_failed")
    assert entry.target == "user zed"


async def test_single_sign_on_gives_users_it_added_their_mapped_roles_at_each_sign_in(
    runtime: Runtime, provider: Any
):
    role_map = {"integration-ops": "operator", "integration-admins": "admin"}
    claims = {"sub": "u-olga", "preferred_username": "olga"}

    # Given olga, added at her first sign-in as an operator
    provider.sign_in_as(**claims, groups=["integration-ops"])
    async with sso_client(runtime, provider, oidc_role_map=role_map) as browser:
        await browser.get("/auth/oidc/login")
    # and given roles by hand since, which her groups do not give
    await runtime.store.set_roles("olga", ["viewer"])

    # When she signs in again, now in the admins' group
    provider.sign_in_as(**claims, groups=["staff", "integration-admins"])
    async with sso_client(runtime, provider, oidc_role_map=role_map) as browser:
        landed = await browser.get("/auth/oidc/login?next=/api/audit")

    # Then her roles are the mapped ones, and the change is audited
    assert landed.status_code == 200 and "entries" in landed.json()
    assert (await runtime.store.find_user("olga")).roles == ("admin",)
    [change] = await runtime.store.audit_entries(action="user_roles")
    assert change.actor == "oidc" and change.target == "user olga"
    assert change.detail == {"before": ["viewer"], "after": ["admin"]}

    # When none of her groups maps to a role any more, she cannot sign in
    provider.sign_in_as(**claims, groups=["staff"])
    async with sso_client(runtime, provider, oidc_role_map=role_map) as browser:
        refused = await browser.get("/auth/oidc/login")
        after = await browser.get("/api/tasks")
    assert refused.status_code == 403 and "gives a role" in refused.text
    assert after.status_code == 401
    assert (await runtime.store.find_user("olga")).roles == ("admin",)
    [failed] = await runtime.store.audit_entries(action="sign_in_failed")
    assert failed.detail == {"method": "oidc", "reason": "no mapped role"}


async def test_single_sign_on_keeps_the_roles_of_a_user_added_by_hand(
    runtime: Runtime, provider: Any
):
    # Given ann, added by hand as an approver (as `lobflows users add` records)
    await add_user(runtime, "ann", "approver", email="ann@example.com")
    await runtime.store.record_audit(
        "cli:ops", "user_add", "user ann", {"roles": ["approver"]}
    )
    provider.sign_in_as(
        sub="u-ann",
        email="ann@example.com",
        email_verified=True,
        groups=["integration-admins"],
    )

    # When she signs in through single sign-on with a group mapped to admin
    async with sso_client(
        runtime, provider, oidc_role_map={"integration-admins": "admin"}
    ) as browser:
        landed = await browser.get("/auth/oidc/login?next=/api/tasks")
        audit = await browser.get("/api/audit")

    # Then she is signed in with the roles an admin gave her, unchanged
    assert landed.status_code == 200 and "tasks" in landed.json()
    assert audit.status_code == 403
    assert (await runtime.store.find_user("ann")).roles == ("approver",)
    assert await runtime.store.audit_entries(action="user_roles") == []


# -- throttling of failed sign-ins -------------------------------------------


def client_from(runtime: Runtime, address: str) -> httpx.AsyncClient:
    """A browser at a given network address."""
    app = create_app(runtime, has_local_worker=False)
    transport = httpx.ASGITransport(app=app, client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url=BASE)


async def test_sign_in_is_refused_after_five_failures_for_a_user_name(
    runtime: Runtime,
):
    await add_user(runtime, "olga", "operator")
    await add_user(runtime, "vic", "viewer")

    # Given five wrong passwords for olga from one address
    async with client_from(runtime, "10.0.0.1") as guesser:
        failures = [await sign_in(guesser, "olga", "wrong password") for _ in range(5)]

    # When olga then signs in with her password from another address
    async with client_from(runtime, "10.0.0.2") as browser:
        refused = await sign_in(browser, "olga")
        after = await browser.get("/api/tasks")
        other = await sign_in(browser, "vic")

    # Then she is refused without a session, told when to try again
    assert [f.status_code for f in failures] == [401] * 5
    assert refused.status_code == 429
    assert "Too many failed sign-ins for this user name" in refused.text
    when = r"Try again after \d\d:\d\d UTC \(in \d+ minutes?\)"
    assert re.search(when, refused.text)
    assert 0 < int(refused.headers["Retry-After"]) <= throttle.WINDOW_SECONDS
    assert after.status_code == 401
    # and the refusal is audited; other user names are not held back
    [entry] = await runtime.store.audit_entries(action="sign_in_throttled")
    assert entry.target == "user olga" and entry.detail["by"] == "user"
    assert entry.detail["client"] == "10.0.0.2"
    assert other.status_code == 303
    signed_in = await runtime.store.audit_entries(action="sign_in")
    assert [e.actor for e in signed_in] == ["vic"]


async def test_sign_in_is_refused_after_five_failures_from_one_address(
    runtime: Runtime,
):
    await add_user(runtime, "ann", "approver")

    async with client_from(runtime, "10.0.0.3") as guesser:
        for name in ("root", "admin", "ops", "ann", "bob"):
            await sign_in(guesser, name, "wrong password")
        refused = await sign_in(guesser, "ann")
    async with client_from(runtime, "10.0.0.4") as elsewhere:
        allowed = await sign_in(elsewhere, "ann")

    assert refused.status_code == 429
    assert "Too many failed sign-ins for your network address" in refused.text
    assert allowed.status_code == 303
    [entry] = await runtime.store.audit_entries(action="sign_in_throttled")
    assert entry.detail["by"] == "client" and entry.detail["client"] == "10.0.0.3"


async def test_simultaneous_guesses_cannot_pass_the_limit_together(
    runtime: Runtime,
):
    await add_user(runtime, "olga", "operator")
    async with client_from(runtime, "10.0.0.9") as guesser:
        for _ in range(throttle.MAX_FAILURES - 1):
            await sign_in(guesser, "olga", "wrong password")
        # Ten guesses at once to one server process, each in a session of its own.
        app = create_app(runtime, has_local_worker=False)
        transport = httpx.ASGITransport(app=app, client=("10.0.0.9", 40000))
        clients = [
            httpx.AsyncClient(transport=transport, base_url=BASE) for _ in range(10)
        ]
        try:
            answers = await asyncio.gather(
                *(sign_in(client, "olga", "wrong password") for client in clients)
            )
        finally:
            for client in clients:
                await client.aclose()

    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [401] + [429] * 9
    failed = await runtime.store.audit_entries(action="sign_in_failed")
    assert len(failed) == throttle.MAX_FAILURES


async def test_a_successful_sign_in_clears_the_count_of_its_user_name(
    runtime: Runtime,
):
    await add_user(runtime, "olga", "operator")

    # Four failures, a success, four more (from two addresses, whose own
    # counts stay under the limit): eight in the window, four since the success
    async with client_from(runtime, "10.0.0.5") as first:
        before = [await sign_in(first, "olga", "wrong password") for _ in range(4)]
        success = await sign_in(first, "olga")
    async with client_from(runtime, "10.0.0.6") as second:
        since = [await sign_in(second, "olga", "wrong password") for _ in range(4)]
        again = await sign_in(second, "olga")

    assert [r.status_code for r in before + since] == [401] * 8
    assert success.status_code == 303 and again.status_code == 303
    assert await runtime.store.audit_entries(action="sign_in_throttled") == []


@pytest.mark.parametrize(
    ("age_seconds", "status"),
    [
        (throttle.WINDOW_SECONDS + 60, 303),  # older than the window: forgotten
        (throttle.WINDOW_SECONDS - 60, 429),  # within the window: still counted
    ],
)
async def test_failures_count_only_within_the_window(
    runtime: Runtime, age_seconds: float, status: int
):
    await add_user(runtime, "olga", "operator")
    failed_at = time.time() - age_seconds
    rows = [
        {
            "at": failed_at + n,
            "actor": "anonymous",
            "action": "sign_in_failed",
            "target": "user olga",
            "detail": {"client": "10.0.0.7"},
        }
        for n in range(5)
    ]
    async with runtime.store.engine.begin() as conn:
        await conn.execute(tables.audit_log.insert(), rows)

    async with client_from(runtime, "10.0.0.8") as browser:
        answer = await sign_in(browser, "olga")

    assert answer.status_code == status


async def test_signing_out_ends_the_session_for_every_copy_of_its_cookie(
    runtime: Runtime,
):
    await add_user(runtime, "olga", "operator")

    # Given a signed-in browser, and a copy of its cookie kept elsewhere
    async with client_for(runtime) as client:
        await sign_in(client, "olga")
        cookie = {"lobflows_session": client.cookies["lobflows_session"]}
        async with client_for(runtime) as copy:
            copy.cookies.update(cookie)
            before = await copy.get("/api/tasks")
            # When the browser signs out
            await client.post("/logout", data={"csrf_token": await _csrf(client)})
            after = await copy.get("/api/tasks")

    # Then the copy no longer works, and the stored session says it ended
    assert before.status_code == 200
    assert after.status_code == 401
    async with runtime.store.engine.connect() as conn:
        rows = (await conn.execute(sa.select(tables.web_sessions))).all()
    assert len(rows) == 1 and rows[0].ended_at is not None
    assert rows[0].id == credentials.token_digest(_session_id(cookie))


def _session_id(cookie: dict[str, str]) -> str:
    """The session id inside a signed session cookie."""
    payload = cookie["lobflows_session"].split(".")[0]
    data = json.loads(base64.b64decode(payload + "=" * (-len(payload) % 4)))
    return data["sid"]


@pytest.mark.parametrize("change", ["password", "removal"])
async def test_copies_of_a_session_cookie_stop_working_when_the_user_changes(
    runtime: Runtime, change: str
):
    await add_user(runtime, "olga", "operator")

    async with client_for(runtime) as first, client_for(runtime) as second:
        await sign_in(first, "olga")
        await sign_in(second, "olga")
        cookie = {"lobflows_session": first.cookies["lobflows_session"]}
        if change == "password":
            await runtime.store.set_password_hash(
                "olga", credentials.hash_password("another password")
            )
        else:
            await runtime.store.remove_user("olga")
            # Re-added under the same name: the old sessions stay ended.
            await add_user(runtime, "olga", "operator")
        async with client_for(runtime) as copy:
            copy.cookies.update(cookie)
            copied = await copy.get("/api/tasks")
        other = await second.get("/api/tasks")
        again = await sign_in(first, "olga", "another password")
        fresh = await first.get("/api/tasks")

    assert (copied.status_code, other.status_code) == (401, 401)
    # Signing in again works, with a new session.
    if change == "password":
        assert again.status_code == 303 and fresh.status_code == 200


HUGE_ID = "99999999999999999999999"


@pytest.mark.parametrize(
    "letter_id",
    [
        HUGE_ID,  # beyond 64 bits
        str(2**63),  # one past the largest 64-bit id
        "0",  # ids start at 1
        "-1",
        "abc",  # not a number
        "1e3",
    ],
)
async def test_dead_letter_ids_that_cannot_exist_are_not_found(
    runtime: Runtime, letter_id: str
):
    await add_user(runtime, "olga", "operator")
    operator = await token_for(runtime, "olga")
    html = {**operator, "Accept": "text/html"}

    async with client_for(runtime) as client:
        api_replay = await client.post(
            f"/api/dead-letters/{letter_id}/replay", json={}, headers=operator
        )
        api_discard = await client.post(
            f"/api/dead-letters/{letter_id}/discard",
            json={"reason": "x"},
            headers=operator,
        )
        page = await client.get(f"/dead-letters/{letter_id}", headers=html)
        form = await client.post(
            f"/dead-letters/{letter_id}/replay", data={"input": ""}, headers=html
        )

    assert api_replay.status_code == 404, api_replay.text
    assert api_discard.status_code == 404, api_discard.text
    assert "no dead letter" in api_replay.json()["error"]
    assert page.status_code == 404 and "no dead letter" in page.text
    assert form.status_code == 404 and "no dead letter" in form.text


async def test_bad_query_values_are_refused_with_400_and_the_field(
    runtime: Runtime,
):
    await add_user(runtime, "ada", "admin")
    admin = await token_for(runtime, "ada")
    await runtime.store.record_audit("ada", "replay", "dead letter 1")

    async with client_for(runtime) as client:
        text = await client.get("/api/audit", params={"limit": "abc"}, headers=admin)
        negative = await client.get("/api/audit", params={"limit": -1}, headers=admin)
        huge = await client.get("/api/audit", params={"limit": 5000}, headers=admin)
        tasks = await client.get("/api/tasks", params={"limit": 0}, headers=admin)
        fine = await client.get("/api/audit", params={"limit": 1}, headers=admin)
        unknown = await client.get("/api/nothing-here", headers=admin)

    assert text.status_code == 400
    assert text.json() == {"error": "limit: expected a whole number, got 'abc'"}
    assert negative.status_code == 400
    assert negative.json() == {"error": "limit: expected at least 1, got -1"}
    assert huge.status_code == 400 and "at most 1000" in huge.json()["error"]
    assert tasks.status_code == 400 and tasks.json()["error"].startswith("limit:")
    assert fine.status_code == 200 and len(fine.json()["entries"]) == 1
    assert unknown.status_code == 404 and "error" in unknown.json()


async def test_a_decision_the_task_does_not_take_is_a_bad_request(runtime: Runtime):
    await runtime.engine.start_run(
        "approve-spend", input={"item": "desk"}, trigger="manual"
    )
    await pass_once(runtime)
    [task] = await runtime.store.list_tasks()
    await add_user(runtime, "ann", "approver", email="ann@example.com")
    approver = await token_for(runtime, "ann")

    async with client_for(runtime) as client:
        wrong = await client.post(
            f"/api/tasks/{task.id}/decisions",
            json={"decision": "complete"},
            headers=approver,
        )

    assert wrong.status_code == 400
    assert wrong.json()["error"] == (
        f"task {task.id}: an approval takes approve or reject, not 'complete'"
    )
    assert (await runtime.store.get_task(task.id)).status == "open"


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"input": None}, "input: the failed step's corrected input must be a JSON"),
        ({"input": "str"}, "must be a JSON object, not a string"),
        ({"input": [1]}, "must be a JSON object, not a list"),
        ({"run_input": None}, "run_input: the run's corrected input must be a JSON"),
    ],
)
async def test_a_replay_through_the_api_takes_only_a_json_object_as_input(
    runtime: Runtime, body: dict[str, Any], problem: str
):
    letter_id = await dead_letter(runtime)
    await add_user(runtime, "olga", "operator")
    operator = await token_for(runtime, "olga")

    async with client_for(runtime) as client:
        refused = await client.post(
            f"/api/dead-letters/{letter_id}/replay", json=body, headers=operator
        )
        unchanged = await client.post(
            f"/api/dead-letters/{letter_id}/replay", json={}, headers=operator
        )

    assert refused.status_code == 400
    assert problem in refused.json()["error"]
    assert "leave" in refused.json()["error"]  # and how to replay unchanged
    assert unchanged.status_code == 200
    assert (await runtime.store.get_run(unchanged.json()["run_id"])).overrides is None


async def test_unknown_pages_are_not_found_for_a_signed_in_person(runtime: Runtime):
    await add_user(runtime, "olga", "operator")

    async with client_for(runtime) as client:
        await sign_in(client, "olga")
        html = {"Accept": "text/html"}
        favicon = await client.get("/favicon.ico")
        page = await client.get("/nonexistent", headers=html)
        reports = await client.get("/reports")
        webhook = await client.get("/hooks/order")

    assert favicon.status_code == 404 and "error" in favicon.json()
    assert page.status_code == 404 and "<h1>404</h1>" in page.text
    assert page.headers["content-type"].startswith("text/html")
    assert reports.status_code == 404 and "allow" not in reports.headers
    assert webhook.status_code == 405 and webhook.headers["allow"] == "POST"


async def test_names_and_addresses_are_unique_without_regard_to_case(
    runtime: Runtime,
):
    await add_user(runtime, "olga", "operator", email="olga@example.com")

    with pytest.raises(errors.StoreError, match="a user named 'olga' already exists"):
        await runtime.store.add_user("OLGA", roles=["viewer"])
    with pytest.raises(errors.StoreError, match=r"e-mail 'olga@example.com' \(olga\)"):
        await runtime.store.add_user(
            "other", roles=["viewer"], email="Olga@Example.COM"
        )

    assert [u.name for u in await runtime.store.users()] == ["olga"]
