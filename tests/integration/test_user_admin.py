"""The users page: an admin adds people, changes their roles and passwords,
makes and revokes API tokens and removes users, through the app against a
real store; every change reaches the audit log."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from lobflows.runtime import Runtime
from lobflows.settings import Settings
from tests.integration.test_access import (
    APPROVAL,
    PASSWORD,
    add_user,
    client_for,
    sign_in,
)

pytestmark = pytest.mark.integration

NEW_PASSWORD = "a long and new password"


@pytest.fixture
def store_url(sqlite_store_url: str) -> str:
    """The page works on the store's user operations, which the access tests
    run on both kinds of store."""
    return sqlite_store_url


@pytest.fixture
async def runtime(store_url: str, tmp_path: Path) -> AsyncIterator[Runtime]:
    (tmp_path / "approve-spend.yaml").write_text(APPROVAL)
    (tmp_path / "secrets.yaml").write_text("session_key: a-session-key-for-tests\n")
    settings = Settings(database_url=store_url, secrets_file=tmp_path / "secrets.yaml")
    opened = await Runtime.open(settings, tmp_path)
    await add_user(opened, "ada", "admin", email="ada@example.com")
    await add_user(opened, "olga", "operator", email="olga@example.com")
    await add_user(opened, "vic", "viewer")
    yield opened
    await opened.close()


@pytest.fixture
async def admin(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(runtime) as client:
        assert (await sign_in(client, "ada")).status_code == 303
        yield client


def csrf(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found is not None, "the page has no form"
    return found.group(1)


async def post_form(
    client: httpx.AsyncClient, page: str, action: str, fields: dict[str, str]
) -> httpx.Response:
    """Post a form of `page` as a browser would, with the page's CSRF token."""
    token = csrf((await client.get(page)).text)
    return await client.post(action, data={"csrf_token": token, **fields})


async def audit_actions(runtime: Runtime) -> list[tuple[str, str, str]]:
    entries = await runtime.store.audit_entries(limit=50)
    return [(e.actor, e.action, e.target) for e in entries if e.action != "sign_in"]


async def test_an_admin_adds_a_user_who_can_then_sign_in(
    runtime: Runtime, admin: httpx.AsyncClient
):
    listing = await admin.get("/users")
    assert listing.status_code == 200
    assert 'data-testid="user-olga"' in listing.text

    added = await post_form(
        admin,
        "/users",
        "/users",
        {
            "name": "bea",
            "email": "bea@example.com",
            "role.approver": "on",
            "role.viewer": "on",
            "password": NEW_PASSWORD,
            "confirm": NEW_PASSWORD,
        },
    )

    assert added.status_code == 303
    assert added.headers["location"] == "/users/bea?done=added"
    bea = await runtime.store.find_user("bea")
    assert bea.roles == ("approver", "viewer")
    assert bea.email == "bea@example.com"
    async with client_for(runtime) as client:
        signed_in = await sign_in(client, "bea", NEW_PASSWORD)
        inbox = await client.get("/inbox", headers={"Accept": "text/html"})
    assert signed_in.status_code == 303 and inbox.status_code == 200
    assert ("ada", "user_add", "user bea") in await audit_actions(runtime)


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"name": "bea", "confirm": "x"}, "give at least one role"),
        (
            {"name": "bea", "role.viewer": "on", "password": NEW_PASSWORD},
            "the password and its confirmation differ",
        ),
        (
            {
                "name": "bea",
                "role.viewer": "on",
                "password": "short",
                "confirm": "short",
            },
            "the password must have at least",
        ),
        ({"name": "  ", "role.viewer": "on"}, "the user name must have 1 to 200"),
        (
            {"name": "bea", "email": "not-an-address", "role.viewer": "on"},
            "is not an e-mail address",
        ),
        ({"name": "olga", "role.viewer": "on"}, "a user named 'olga' already exists"),
        ({"name": "OLGA", "role.viewer": "on"}, "a user named 'olga' already exists"),
        (
            {"name": "bea", "email": "OLGA@example.com", "role.viewer": "on"},
            "a user with e-mail 'olga@example.com' (olga) already exists",
        ),
        (
            {
                "name": "bea",
                "email": "a@example.com,b@example.com",
                "role.viewer": "on",
            },
            "is not an e-mail address",
        ),
        ({"name": "cli:root", "role.admin": "on"}, "how the audit log names actions"),
        ({"name": "api", "role.admin": "on"}, "how the audit log names actions"),
        ({"name": "ann/../ada", "role.viewer": "on"}, "must not hold a slash"),
        ({"name": "two\nlines", "role.viewer": "on"}, "or a control character"),
        (
            {"name": "bea", "role.viewer": "on", "confirm": NEW_PASSWORD},
            "the password and its confirmation differ",
        ),
        (
            {
                "name": "bea",
                "role.viewer": "on",
                "password": " " * 12,
                "confirm": " " * 12,
            },
            "the password must not be blank",
        ),
    ],
)
async def test_a_refused_new_user_is_not_stored_and_the_form_keeps_its_input(
    runtime: Runtime, admin: httpx.AsyncClient, fields: dict[str, str], problem: str
):
    before = [u.name for u in await runtime.store.users()]

    refused = await post_form(admin, "/users", "/users", fields)

    assert refused.status_code == 400
    assert problem in html.unescape(refused.text)
    assert f'value="{html.escape(fields["name"])}"' in refused.text
    assert NEW_PASSWORD not in refused.text
    assert [u.name for u in await runtime.store.users()] == before
    assert await audit_actions(runtime) == []


async def test_roles_change_and_an_admin_cannot_drop_their_own_admin_role(
    runtime: Runtime, admin: httpx.AsyncClient
):
    changed = await post_form(
        admin, "/users/vic", "/users/vic/roles", {"role.operator": "on"}
    )
    own = await post_form(
        admin, "/users/ada", "/users/ada/roles", {"role.viewer": "on"}
    )
    async with client_for(runtime) as client:
        await sign_in(client, "vic")
        letters = await client.get("/dead-letters", headers={"Accept": "text/html"})

    assert changed.status_code == 303
    assert (await runtime.store.find_user("vic")).roles == ("operator",)
    assert letters.status_code == 200  # an operator's page now
    assert own.status_code == 400
    assert "you cannot take away your own admin role" in own.text
    assert (await runtime.store.find_user("ada")).roles == ("admin",)
    [entry] = [
        e
        for e in await runtime.store.audit_entries(limit=50)
        if e.action == "user_roles"
    ]
    assert entry.actor == "ada" and entry.target == "user vic"
    assert entry.detail == {"before": ["viewer"], "after": ["operator"]}


async def test_a_token_is_shown_once_works_for_its_user_and_stops_when_revoked(
    runtime: Runtime, admin: httpx.AsyncClient
):
    created = await post_form(
        admin, "/users/olga", "/users/olga/tokens", {"label": "reporting"}
    )
    token = re.search(r'data-testid="new-token-value">([^<]+)<', created.text).group(1)
    again = await admin.get("/users/olga")

    async with client_for(runtime) as api:
        bearer = {"Authorization": f"Bearer {token}"}
        before = await api.get("/api/dead-letters", headers=bearer)
        revoked = await post_form(
            admin, "/users/olga", "/users/olga/tokens/revoke", {"label": "reporting"}
        )
        after = await api.get("/api/dead-letters", headers=bearer)

    assert created.status_code == 200
    assert token not in again.text  # shown only on the answer that made it
    assert 'data-testid="token-reporting"' in again.text
    assert before.status_code == 200 and after.status_code == 401
    assert revoked.status_code == 303
    assert [t.is_active for t in await runtime.store.api_tokens("olga")] == [False]
    actions = [a for _, a, _ in await audit_actions(runtime)]
    assert sorted(actions) == ["token_create", "token_revoke"]
    assert token not in str(await runtime.store.audit_entries(limit=50))


async def test_a_new_password_ends_the_users_sessions(
    runtime: Runtime, admin: httpx.AsyncClient
):
    async with client_for(runtime) as olga:
        await sign_in(olga, "olga")
        mismatched = await post_form(
            admin,
            "/users/olga",
            "/users/olga/password",
            {"password": NEW_PASSWORD, "confirm": "something else"},
        )
        still = await olga.get("/api/tasks")
        changed = await post_form(
            admin,
            "/users/olga",
            "/users/olga/password",
            {"password": NEW_PASSWORD, "confirm": NEW_PASSWORD},
        )
        ended = await olga.get("/api/tasks")

    async with client_for(runtime) as client:
        old = await sign_in(client, "olga", PASSWORD)
        new = await sign_in(client, "olga", NEW_PASSWORD)

    assert mismatched.status_code == 400 and still.status_code == 200
    assert changed.status_code == 303
    assert ended.status_code == 401
    assert old.status_code != 303 and new.status_code == 303
    assert ("ada", "user_password", "user olga") in await audit_actions(runtime)


async def test_a_removed_user_is_signed_out_and_an_admin_cannot_remove_themselves(
    runtime: Runtime, admin: httpx.AsyncClient
):
    async with client_for(runtime) as vic:
        await sign_in(vic, "vic")
        removed = await post_form(admin, "/users/vic", "/users/vic/remove", {})
        after = await vic.get("/api/tasks")
    self_removal = await post_form(admin, "/users/ada", "/users/ada/remove", {})
    listing = await admin.get(removed.headers["location"])

    assert removed.status_code == 303 and after.status_code == 401
    assert "User removed" in listing.text
    assert 'data-testid="user-vic"' not in listing.text
    assert self_removal.status_code == 409
    assert "you cannot remove yourself" in self_removal.text
    assert [u.name for u in await runtime.store.users()] == ["ada", "olga"]
    assert ("ada", "user_remove", "user vic") in await audit_actions(runtime)


async def test_only_admins_reach_the_users_pages(
    runtime: Runtime, admin: httpx.AsyncClient
):
    async with client_for(runtime) as olga:
        await sign_in(olga, "olga")
        browser = {"Accept": "text/html"}
        page = await olga.get("/users", headers=browser)
        own_token = csrf((await olga.get("/", headers=browser)).text)
        post = await olga.post(
            "/users",
            data={"csrf_token": own_token, "name": "eve", "role.admin": "on"},
            headers=browser,
        )
    forged = await admin.post("/users", data={"name": "eve", "role.admin": "on"})
    missing = await admin.get("/users/nobody")

    assert page.status_code == 403 and post.status_code == 403
    assert "lacks the permission 'admin'" in html.unescape(page.text)
    assert forged.status_code == 403
    assert missing.status_code == 404
    assert "no user named 'nobody'" in html.unescape(missing.text)
    assert "eve" not in [u.name for u in await runtime.store.users()]
