"""The sign-in page, password sign-in and sign-out.

A wrong password and an unknown user get the same answer after the same
work (see `credentials.verify_password`), so the page tells no one which
user names exist.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from lobflows import errors
from lobflows.runtime import Runtime
from lobflows.store.access import UserRecord
from lobflows.web import auth, credentials, throttle

log = logging.getLogger(__name__)

WRONG_CREDENTIALS = "Wrong user name or password."
MAX_NAME_CHARS = 200

PAGE = jinja2.Environment(
    autoescape=True, undefined=jinja2.StrictUndefined
).from_string(
    """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>{{ heading }} · LoB Flows</title>
<style>
body{font:16px/1.5 system-ui,sans-serif;max-width:24rem;margin:4rem auto;padding:0 1rem;color:#1d232b}
h1{font-size:1.35rem} label{display:block;margin:.8rem 0 .2rem}
input{font:inherit;width:100%;padding:.4rem;box-sizing:border-box}
button,.button{display:inline-block;font:inherit;padding:.5rem 1.2rem;margin:1rem 0 0;border:1px solid #1d232b;border-radius:4px;background:#1d232b;color:#fff;cursor:pointer;text-decoration:none}
.button{background:#fff;color:#1d232b} .notice{padding:.8rem;border-radius:4px;background:#fbeaea}
hr{border:0;border-top:1px solid #d5dae0;margin:1.5rem 0}
</style></head><body>
<h1>{{ heading }}</h1>
{% if notice %}<p class="notice" role="alert">{{ notice }}</p>{% endif %}
{% if show_form %}
<form method="post" action="/login">
<input type="hidden" name="csrf_token" value="{{ csrf_token }}">
<input type="hidden" name="next" value="{{ next }}">
<label for="name">User name</label>
<input id="name" name="name" autocomplete="username" value="{{ name }}" required autofocus>
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required>
<button type="submit">Sign in</button>
</form>
{% if sso %}<hr><a class="button" href="/auth/oidc/login?next={{ next | urlencode }}">Sign in with single sign-on</a>{% endif %}
{% endif %}
{% if signed_in_as %}
<p>You are signed in as {{ signed_in_as }}. <a href="/">Go to the overview</a>.</p>
<form method="post" action="/logout">
<input type="hidden" name="csrf_token" value="{{ csrf_token }}">
<button type="submit">Sign out</button>
</form>
{% endif %}
</body></html>
"""
)

# Sign-in pages hold a CSRF token: keep them out of caches and frames.
HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'"
    ),
}


def page(
    request: Request,
    *,
    heading: str = "Sign in",
    notice: str | None = None,
    status_code: int = 200,
    name: str = "",
    show_form: bool = True,
    signed_in_as: str | None = None,
) -> HTMLResponse:
    """The sign-in page, or with show_form false a page that only explains."""
    html = PAGE.render(
        heading=heading,
        notice=notice,
        show_form=show_form,
        csrf_token=auth.csrf_token(request),
        next=auth.local_path(request.query_params.get("next")),
        name=name,
        signed_in_as=signed_in_as,
        sso=bool(request.app.state.runtime.settings.oidc_issuer),
    )
    return HTMLResponse(html, status_code=status_code, headers=HEADERS)


class LoginPages:
    """GET and POST /login, POST /logout."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.turns = throttle.Turns()

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/login", self.show, methods=["GET"]),
            Route("/login", self.sign_in, methods=["POST"]),
            Route("/logout", self.sign_out, methods=["POST"]),
        ]

    async def show(self, request: Request) -> Response:
        principal = auth.principal_of(request)
        if principal is None or principal.via != "session":
            return page(request)
        if "next" in request.query_params:
            target = auth.local_path(request.query_params.get("next"))
            return RedirectResponse(target, status_code=303)
        return page(
            request, heading="Signed in", show_form=False, signed_in_as=principal.name
        )

    async def sign_in(self, request: Request) -> Response:
        form = await auth.verified_form(request)
        name = form.get("name", "").strip()[:MAX_NAME_CHARS]
        password = form.get("password", "")
        target = auth.local_path(form.get("next"))
        client = request.client.host if request.client else None
        # The count is read and a failure written in one turn per name and address.
        async with self.turns.taken(f"user:{name}", f"client:{client}"):
            refused = await self._throttled(request, name, client)
            if refused is not None:
                return refused
            user = await self._user(name)
            stored = user.password_hash if user is not None else None
            matches = await asyncio.to_thread(
                credentials.verify_password, stored, password
            )
            if user is None or not matches:
                await self.runtime.store.record_audit(
                    "anonymous", "sign_in_failed", f"user {name}", {"client": client}
                )
                return page(
                    request, notice=WRONG_CREDENTIALS, status_code=401, name=name
                )

        await auth.start_session(request, self.runtime, user)
        await self.runtime.store.record_audit(
            user.name,
            "sign_in",
            f"user {user.name}",
            {"method": "password", "client": client},
        )
        return RedirectResponse(target, status_code=303)

    async def sign_out(self, request: Request) -> Response:
        await auth.verified_form(request)
        principal = auth.principal_of(request)
        if principal is not None:
            await self.runtime.store.record_audit(
                principal.name, "sign_out", f"user {principal.name}"
            )
        await auth.end_session(request, self.runtime)
        return RedirectResponse("/login", status_code=303)

    async def _throttled(
        self, request: Request, name: str, client: str | None
    ) -> Response | None:
        """The refusal page when too many sign-ins failed lately, else None."""
        now = time.time()
        refusal = await throttle.refusal(
            self.runtime.store, name=name, client=client, now=now
        )
        if refusal is None:
            return None
        await self.runtime.store.record_audit(
            "anonymous",
            "sign_in_throttled",
            f"user {name}",
            {"client": client, "by": refusal.by, "retry_at": refusal.retry_at},
        )
        response = page(
            request, notice=refusal.message(now), status_code=429, name=name
        )
        wait_seconds = max(1, math.ceil(refusal.retry_at - now))
        response.headers["Retry-After"] = str(wait_seconds)
        return response

    async def _user(self, name: str) -> UserRecord | None:
        if not name:
            return None
        try:
            return await self.runtime.store.find_user(name)
        except errors.UserNotFoundError:
            return None


def routes(runtime: Runtime) -> list[BaseRoute]:
    return LoginPages(runtime).routes()
