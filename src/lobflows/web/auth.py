"""Who is asking: sessions, API tokens, roles, CSRF, and sign-in pages.

Every request passes `AccessMiddleware`, which finds its principal (a bearer
token, else the session cookie, else a signed task link) and turns away
anonymous requests, except to the few open paths: webhook deliveries, the
load balancer probes, the sign-in pages, static files and signed task
links. Handlers then ask `require(request, permission)`.
"""

from __future__ import annotations

import functools
import hmac
import logging
import re
import secrets
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send

from lobflows import errors
from lobflows.runtime import Runtime
from lobflows.web import credentials

log = logging.getLogger(__name__)

ROLES = ("viewer", "approver", "operator", "admin")
# Each permission and the roles that carry it.
PERMISSIONS: dict[str, frozenset[str]] = {
    "view": frozenset(ROLES),
    "decide": frozenset({"approver", "operator", "admin"}),
    "operate": frozenset({"operator", "admin"}),
    "secrets": frozenset({"operator", "admin"}),
    "admin": frozenset({"admin"}),
}
SESSION_KEY_SECRET = "session_key"
SESSION_COOKIE = "lobflows_session"
# The key of the session id in the signed cookie.
SESSION_ID_KEY = "sid"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
STALE_FORM = "the form is stale or forged; reload the page"
# The principal of the REST API's shared token (LOBFLOWS_API_TOKEN).
SHARED_TOKEN_USER = "api"

_OPEN_PATHS = frozenset({"/healthz", "/readyz", "/login"})
_OPEN_PREFIXES = ("/auth/", "/static/")
_TASK_PAGE = re.compile(r"/tasks/[^/]+")
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Principal:
    """Who a request acts for, with which roles, and how that was shown."""

    name: str
    roles: frozenset[str]
    via: str  # "session" | "token" | "link"
    email: str | None = None

    @property
    def assignee(self) -> str:
        """The name tasks know this principal by: the e-mail address, else the
        user name."""
        return self.email or self.name

    def is_called(self, who: str) -> bool:
        """Whether `who` names this principal (user name or e-mail address)."""
        who = who.strip().lower()
        return bool(who) and who in {self.name.lower(), (self.email or "").lower()}

    def can(self, permission: str) -> bool:
        """Whether one of the principal's roles carries the permission."""
        if permission not in PERMISSIONS:
            raise ValueError(
                f"unknown permission {permission!r}; "
                f"expected one of {', '.join(PERMISSIONS)}"
            )
        return not self.roles.isdisjoint(PERMISSIONS[permission])


def check_roles(roles: list[str] | tuple[str, ...]) -> list[str]:
    """The roles, sorted and once each; an unknown role names the known ones."""
    unknown = sorted(set(roles) - set(ROLES))
    if unknown:
        raise ValueError(
            f"unknown role {unknown[0]!r}; expected one of {', '.join(ROLES)}"
        )
    if not roles:
        raise ValueError(f"give at least one role: {', '.join(ROLES)}")
    return sorted(set(roles))


def principal_of(request: HTTPConnection) -> Principal | None:
    """The principal the middleware found, or None on an open path."""
    return getattr(request.state, "principal", None)


def require(request: HTTPConnection, permission: str) -> Principal:
    """The principal if it has the permission; otherwise HTTP 401 or 403."""
    principal = principal_of(request)
    if principal is None:
        raise HTTPException(
            401, "sign in first", headers={"WWW-Authenticate": "Bearer"}
        )
    if not principal.can(permission):
        holders = [r for r in ROLES if r in PERMISSIONS[permission]]
        which = "the role" if len(holders) == 1 else "the roles"
        raise HTTPException(
            403,
            f"{principal.name} lacks the permission {permission!r} "
            f"(it comes with {which} {', '.join(holders)})",
        )
    return principal


def actor(principal: Principal) -> str:
    """How the audit log names a principal."""
    return principal.name


# -- CSRF ------------------------------------------------------------------


def csrf_token(request: HTTPConnection) -> str:
    """The session's CSRF token, made on first use; forms send it back."""
    token = request.session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        request.session["csrf"] = token
    return token


def csrf_matches(request: HTTPConnection, given: str | None) -> bool:
    expected = request.session.get("csrf")
    if not isinstance(expected, str) or not given:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


async def verified_form(request: Request) -> dict[str, str]:
    """The fields of a form post, once its CSRF token is checked.

    A request made with an API token carries no cookie a forger could
    borrow, so it needs no CSRF token.
    """
    async with request.form() as form:
        fields = {
            key: value
            for key, value in form.items()
            if not isinstance(value, UploadFile)
        }
    principal = principal_of(request)
    if principal is not None and principal.via == "token":
        return fields
    if not csrf_matches(request, fields.pop(CSRF_FIELD, None)):
        raise HTTPException(403, STALE_FORM)
    return fields


# -- sessions --------------------------------------------------------------


def session_key(runtime: Runtime) -> str:
    """The key that signs session cookies: the secret session_key when defined."""
    if SESSION_KEY_SECRET in runtime.secrets.names():
        return runtime.secrets.get(SESSION_KEY_SECRET)
    return _process_session_key()


@functools.cache
def _process_session_key() -> str:
    log.warning(
        "No session_key secret: sessions are signed with a key made for this "
        "process and end when it stops; set the secret session_key to keep them",
        extra={"event": "session_key_missing"},
    )
    return secrets.token_urlsafe(32)


async def start_session(request: HTTPConnection, runtime: Runtime, user: Any) -> None:
    """Sign the user in: a fresh session, stored, with a fresh CSRF token.

    The cookie carries a random session id; the store keeps only its
    digest, so signing out, a password change or removing the user ends
    the session on the server, whatever copies of the cookie exist.
    """
    session_id = secrets.token_urlsafe(32)
    lifetime_seconds = runtime.settings.session_hours * 3600
    await runtime.store.start_web_session(
        user.name,
        session_hash=credentials.token_digest(session_id),
        forget_before=time.time() - lifetime_seconds,
    )
    request.session.clear()
    request.session[SESSION_ID_KEY] = session_id
    request.session["csrf"] = secrets.token_urlsafe(32)


async def end_session(request: HTTPConnection, runtime: Runtime) -> None:
    """Sign out: end the stored session and forget the cookie's contents."""
    session_id = request.session.get(SESSION_ID_KEY)
    if isinstance(session_id, str):
        await runtime.store.end_web_session(credentials.token_digest(session_id))
    request.session.clear()


def local_path(target: str | None, default: str = "/") -> str:
    """`target` when it is a path on this site, else `default`."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return default
    parts = urllib.parse.urlsplit(target)
    if parts.scheme or parts.netloc or any(ord(c) < 32 for c in target):
        return default
    return target


# -- the middleware --------------------------------------------------------


class AccessMiddleware:
    """Finds each request's principal and turns away anonymous requests."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        runtime: Runtime,
        webhook_paths: frozenset[str],
        pages: list[BaseRoute],
    ) -> None:
        self.app = app
        self.runtime = runtime
        self.webhook_paths = webhook_paths
        # Every route but the webhooks' catch-all.
        self.pages = pages

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        if self._is_webhook(request):
            # Deliveries carry their own signature; nothing to look up.
            request.state.principal = None
            await self.app(scope, receive, send)
            return
        principal, problem = await authenticate(self.runtime, request)
        request.state.principal = principal
        if principal is None and not self._is_open(request):
            await _turned_away(request, problem)(scope, receive, send)
            return
        if not self._csrf_ok(request, principal):
            await _error(403, STALE_FORM)(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _is_open(self, request: Request) -> bool:
        path, method = request.scope["path"], request.method
        if path in _OPEN_PATHS or path.startswith(_OPEN_PREFIXES):
            return True
        # The signed token is the task page's credential; the page checks it.
        if _TASK_PAGE.fullmatch(path):
            return method == "POST" or "token" in request.query_params
        return False

    def _is_webhook(self, request: Request) -> bool:
        """A POST no page claims: a delivery to a flow's webhook, or to a path
        no flow listens on (which the webhooks answer with 404)."""
        if request.method != "POST":
            return False
        # The scope's path: building request.url parses the whole URL again.
        if (request.scope["path"].rstrip("/") or "/") in self.webhook_paths:
            return True
        return all(
            route.matches(request.scope)[0] == Match.NONE for route in self.pages
        )

    def _csrf_ok(self, request: Request, principal: Principal | None) -> bool:
        # Forms check their own token (verified_form); API calls made from a
        # signed-in browser carry it in a header.
        if principal is None or principal.via != "session":
            return True
        if request.method in _SAFE_METHODS or not request.url.path.startswith("/api/"):
            return True
        return csrf_matches(request, request.headers.get(CSRF_HEADER))


async def authenticate(
    runtime: Runtime, request: Request
) -> tuple[Principal | None, str | None]:
    """Who the request's credentials name, now: a bearer token, else the
    session cookie, else a signed task link; with the problem, if any.

    Long-lived responses (the live updates) ask again now and then, so
    they stop when the session ends or the token is revoked.
    """
    header = request.headers.get("authorization")
    if header is not None:
        return await _bearer(runtime, header)
    if "session" in request.scope and request.session.get(SESSION_ID_KEY):
        return await _session(runtime, request), None
    return _link(runtime, request), None


async def _bearer(runtime: Runtime, header: str) -> tuple[Principal | None, str | None]:
    scheme, _, given = header.partition(" ")
    given = given.strip()
    # The scheme name is case-insensitive (RFC 9110, section 11.1).
    if scheme.lower() != "bearer" or not given:
        return None, "give the API token as Authorization: Bearer <token>"
    shared = runtime.settings.api_token
    if shared and hmac.compare_digest(given.encode(), shared.encode()):
        return Principal(SHARED_TOKEN_USER, frozenset({"admin"}), "token"), None
    digest = credentials.token_digest(given)
    user = await runtime.store.user_by_token_hash(digest)
    if user is None:
        return None, "the bearer token is wrong or revoked"
    return Principal(user.name, frozenset(user.roles), "token", user.email), None


async def _session(runtime: Runtime, request: Request) -> Principal | None:
    session_id = request.session[SESSION_ID_KEY]
    lifetime_seconds = runtime.settings.session_hours * 3600
    user = (
        await runtime.store.user_by_session_hash(
            credentials.token_digest(session_id),
            started_after=time.time() - lifetime_seconds,
        )
        if isinstance(session_id, str)
        else None
    )
    if user is None:
        # Signed out, expired, the password changed or the user was removed.
        request.session.clear()
        return None
    return Principal(user.name, frozenset(user.roles), "session", user.email)


def _link(runtime: Runtime, request: Request) -> Principal | None:
    token = request.query_params.get("token")
    if token is None or not _TASK_PAGE.fullmatch(request.url.path):
        return None
    task_id = request.url.path.rsplit("/", 1)[1]
    try:
        grant = runtime.engine.links.verify(task_id, token)
    except errors.LobflowsError:
        return None
    return Principal(grant.user, frozenset(), "link")


def _turned_away(request: Request, problem: str | None) -> Response:
    accepts_html = "text/html" in request.headers.get("accept", "")
    if request.method in ("GET", "HEAD") and accepts_html:
        target = request.url.path + (
            f"?{request.url.query}" if request.url.query else ""
        )
        query = urllib.parse.urlencode({"next": target})
        return RedirectResponse(f"/login?{query}", status_code=303)
    challenge = 'Bearer error="invalid_token"' if problem else "Bearer"
    message = (
        problem or "sign in, or give an API token as Authorization: Bearer <token>"
    )
    return _error(401, message, headers={"WWW-Authenticate": challenge})


def _error(
    status: int, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def routes(runtime: Runtime) -> list[BaseRoute]:
    """Sign-in and sign-out pages, and the OpenID Connect callback."""
    from lobflows.web import login, oidc

    return [*login.routes(runtime), *oidc.routes(runtime)]
