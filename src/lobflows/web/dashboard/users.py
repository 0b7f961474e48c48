"""The users page: who may sign in, with which roles and API tokens.

The same changes as ``lobflows users``, made by a signed-in admin and
written to the audit log under the same actions. An admin cannot remove
themselves or give up their own admin role here, so the dashboard never
locks out the person using it; another admin or the command line can.
"""

from __future__ import annotations

import asyncio
import urllib.parse
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from lobflows import errors
from lobflows.runtime import Runtime
from lobflows.store.access import ApiTokenRecord, UserRecord
from lobflows.web import auth, credentials
from lobflows.web.dashboard import render

MAX_TOKEN_NAME_CHARS = 200


class UserPages:
    """The users pages of one runtime."""

    def __init__(self, runtime: Runtime) -> None:
        self.store = runtime.store

    async def index(self, request: Request) -> Response:
        auth.require(request, "admin")
        return await self._index(request)

    async def add(self, request: Request) -> Response:
        principal = auth.require(request, "admin")
        form = await auth.verified_form(request)
        name = form.get("name", "").strip()
        email = form.get("email", "").strip() or None
        try:
            name = credentials.check_user_name(name)
            if email is not None:
                email = credentials.check_email(email)
            roles = auth.check_roles(_roles(form))
            password_hash = await _new_password_hash(form, required=False)
            await self.store.add_user(
                name, roles=roles, email=email, password_hash=password_hash
            )
        except (ValueError, errors.StoreError) as exc:
            return await self._index(request, problem=str(exc), given=form, status=400)
        await self.store.record_audit(
            principal.name,
            "user_add",
            f"user {name}",
            {"roles": roles, "email": email},
        )
        return RedirectResponse(f"{user_path(name)}?done=added", status_code=303)

    async def show(self, request: Request) -> Response:
        auth.require(request, "admin")
        user = await self._user(request)
        return await self._page(request, user, done=request.query_params.get("done"))

    async def set_roles(self, request: Request) -> Response:
        principal = auth.require(request, "admin")
        form = await auth.verified_form(request)
        user = await self._user(request)
        try:
            roles = auth.check_roles(_roles(form))
            if principal.is_called(user.name) and "admin" not in roles:
                raise ValueError(
                    "you cannot take away your own admin role; "
                    "another admin can, or lobflows users roles"
                )
        except ValueError as exc:
            return await self._page(request, user, problem=str(exc), status=400)
        await self.store.set_roles(user.name, roles)
        await self.store.record_audit(
            principal.name,
            "user_roles",
            f"user {user.name}",
            {"before": list(user.roles), "after": roles},
        )
        return _back(user, "roles")

    async def set_password(self, request: Request) -> Response:
        principal = auth.require(request, "admin")
        form = await auth.verified_form(request)
        user = await self._user(request)
        try:
            password_hash = await _new_password_hash(form, required=True)
        except ValueError as exc:
            return await self._page(request, user, problem=str(exc), status=400)
        await self.store.set_password_hash(user.name, password_hash)
        await self.store.record_audit(
            principal.name, "user_password", f"user {user.name}"
        )
        if principal.is_called(user.name):
            # Every session of this user has ended, this one too.
            return RedirectResponse("/login", status_code=303)
        return _back(user, "password")

    async def remove(self, request: Request) -> Response:
        principal = auth.require(request, "admin")
        await auth.verified_form(request)
        user = await self._user(request)
        if principal.is_called(user.name):
            return await self._page(
                request,
                user,
                problem="you cannot remove yourself; another admin can",
                status=409,
            )
        await self.store.remove_user(user.name)
        await self.store.record_audit(
            principal.name, "user_remove", f"user {user.name}"
        )
        return RedirectResponse("/users?done=removed", status_code=303)

    async def create_token(self, request: Request) -> Response:
        principal = auth.require(request, "admin")
        form = await auth.verified_form(request)
        user = await self._user(request)
        label = form.get("label", "").strip()
        token = credentials.new_api_token()
        try:
            if not label or len(label) > MAX_TOKEN_NAME_CHARS:
                raise ValueError(
                    f"the token name must have 1 to {MAX_TOKEN_NAME_CHARS} characters"
                )
            await self.store.add_api_token(
                user.name, name=label, token_hash=credentials.token_digest(token)
            )
        except (ValueError, errors.StoreError) as exc:
            return await self._page(request, user, problem=str(exc), status=400)
        await self.store.record_audit(
            principal.name, "token_create", f"user {user.name}", {"token": label}
        )
        # Shown on this answer only: never in a link, never stored.
        return await self._page(request, user, new_token=(label, token))

    async def revoke_token(self, request: Request) -> Response:
        principal = auth.require(request, "admin")
        form = await auth.verified_form(request)
        user = await self._user(request)
        label = form.get("label", "")
        try:
            await self.store.revoke_api_token(user.name, label)
        except errors.UserNotFoundError as exc:
            return await self._page(request, user, problem=str(exc), status=404)
        await self.store.record_audit(
            principal.name, "token_revoke", f"user {user.name}", {"token": label}
        )
        return _back(user, "revoked")

    async def _index(
        self,
        request: Request,
        *,
        problem: str | None = None,
        given: dict[str, str] | None = None,
        status: int = 200,
    ) -> Response:
        users = await self.store.users()
        live: dict[str, int] = {}
        for token in await self.store.api_tokens():
            if token.is_active:
                live[token.user] = live.get(token.user, 0) + 1
        return render.render(
            request,
            "users.html",
            status=status,
            title="Users",
            users=users,
            live_tokens=live,
            roles=auth.ROLES,
            problem=problem,
            given=_given(given),
            removed=request.query_params.get("done") == "removed",
        )

    async def _page(
        self,
        request: Request,
        user: UserRecord,
        *,
        problem: str | None = None,
        done: str | None = None,
        new_token: tuple[str, str] | None = None,
        status: int = 200,
    ) -> Response:
        tokens: list[ApiTokenRecord] = await self.store.api_tokens(user.name)
        return render.render(
            request,
            "user.html",
            status=status,
            title=f"User {user.name}",
            user=user,
            tokens=tokens,
            roles=auth.ROLES,
            problem=problem,
            done=done,
            new_token=new_token,
        )

    async def _user(self, request: Request) -> UserRecord:
        try:
            return await self.store.find_user(request.path_params["name"])
        except errors.UserNotFoundError as exc:
            raise HTTPException(404, str(exc)) from None


async def _new_password_hash(form: dict[str, str], *, required: bool) -> str | None:
    """The hash of the form's new password, checked and confirmed; None when
    the password is left empty where it may be."""
    password, confirm = form.get("password", ""), form.get("confirm", "")
    if not password and not confirm and not required:
        return None
    if password != confirm:
        raise ValueError("the password and its confirmation differ")
    credentials.check_password(password)
    # Hashing takes tens of milliseconds on purpose: off the event loop.
    return await asyncio.to_thread(credentials.hash_password, password)


def _roles(form: dict[str, str]) -> list[str]:
    """The roles ticked in a form: a checkbox ``role.<name>`` each."""
    return [role for role in auth.ROLES if form.get(f"role.{role}")]


def _given(form: dict[str, str] | None) -> dict[str, Any]:
    """What the add form held, to show again; never the password."""
    if form is None:
        return {"name": "", "email": "", "roles": []}
    return {
        "name": form.get("name", ""),
        "email": form.get("email", ""),
        "roles": _roles(form),
    }


def user_path(name: str) -> str:
    """The page of a user, with the name quoted for a URL path."""
    return "/users/" + urllib.parse.quote(name, safe="")


def _back(user: UserRecord, done: str) -> Response:
    return RedirectResponse(f"{user_path(user.name)}?done={done}", status_code=303)
