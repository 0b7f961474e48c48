"""Single sign-on through OpenID Connect (authorization code flow, with PKCE).

``/auth/oidc/login`` sends the browser to the issuer; ``/auth/oidc/callback``
trades the code for an ID token (authlib checks its signature against the
issuer's keys, its audience, expiry and nonce) and signs the person in as
the user with the same e-mail address, else the same user name. A person
who is not a user is added when their roles claim maps to a role
(``oidc_role_map``); anyone else gets a page that says why they cannot sign in.
A user added this way gets the mapped roles again at every sign-in, so the
issuer's groups stay the source of their roles; a user added by hand keeps
the roles an administrator gave.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import authlib.deprecate
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from lobflows import errors
from lobflows.runtime import Runtime
from lobflows.store.access import UserRecord
from lobflows.web import auth, credentials, login

with warnings.catch_warnings():
    # authlib prefers the httpx2 package; plain httpx works the same. Its own
    # "always" filter comes with authlib.deprecate, so this one goes after it.
    warnings.simplefilter("ignore", authlib.deprecate.AuthlibDeprecationWarning)
    from authlib.integrations.starlette_client import OAuth, OAuthError

log = logging.getLogger(__name__)

CLIENT_SECRET = "oidc_client_secret"
CALLBACK_PATH = "/auth/oidc/callback"
NEXT_KEY = "oidc_next"
SOURCE = "oidc"


class SingleSignOn:
    """The two routes of the sign-on, bound to one runtime and one issuer."""

    def __init__(self, runtime: Runtime) -> None:
        settings = runtime.settings
        if not settings.oidc_client_id:
            raise errors.ConfigurationError(
                "LOBFLOWS_OIDC_ISSUER is set but LOBFLOWS_OIDC_CLIENT_ID is not: "
                "give the client id registered at the issuer"
            )
        self.runtime = runtime
        self.redirect_uri = settings.public_url.rstrip("/") + CALLBACK_PATH
        registry = OAuth()
        self.client: Any = registry.register(
            name="lobflows",
            client_id=settings.oidc_client_id,
            client_secret=runtime.secrets.get(CLIENT_SECRET),
            server_metadata_url=_discovery_url(settings.oidc_issuer or ""),
            client_kwargs={
                "scope": "openid email profile",
                "code_challenge_method": "S256",
                "timeout": 10.0,
            },
        )

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/auth/oidc/login", self.start, methods=["GET"]),
            Route(CALLBACK_PATH, self.finish, methods=["GET"]),
        ]

    async def start(self, request: Request) -> Response:
        """Send the browser to the issuer, remembering where it was going."""
        request.session[NEXT_KEY] = auth.local_path(request.query_params.get("next"))
        try:
            return await self.client.authorize_redirect(request, self.redirect_uri)
        except Exception as exc:  # noqa: BLE001 - any failure to reach the issuer
            log.warning(
                "Single sign-on issuer unreachable",
                extra={"event": "oidc_unreachable", "error": type(exc).__name__},
            )
            return _refused(
                request,
                "The single sign-on service cannot be reached; "
                "sign in with a password or try again later.",
                status_code=502,
            )

    async def finish(self, request: Request) -> Response:
        """Check the issuer's answer and sign the user in."""
        try:
            token = await self.client.authorize_access_token(request)
        except OAuthError as exc:
            return await self._failed(request, f"{exc.error}: {exc.description}")
        except Exception as exc:  # noqa: BLE001 - network or token trouble
            return await self._failed(request, type(exc).__name__)
        claims = dict(token.get("userinfo") or {})
        user = await self._user_for(claims)
        if user is None:
            who = _display(claims)
            await self.runtime.store.record_audit(
                "anonymous", "sign_in_failed", f"user {who}", {"method": SOURCE}
            )
            return _refused(
                request,
                f"You signed in at the single sign-on service as {who}, but {who} "
                "is not a user of LoB Flows. Ask an administrator to add you.",
            )

        user = await self._refresh_roles(user, claims)
        if user is None:
            return await self._without_role(request, claims)

        target = auth.local_path(request.session.get(NEXT_KEY))
        await auth.start_session(request, self.runtime, user)
        await self.runtime.store.record_audit(
            user.name, "sign_in", f"user {user.name}", {"method": SOURCE}
        )
        return RedirectResponse(target, status_code=303)

    async def _user_for(self, claims: dict[str, Any]) -> UserRecord | None:
        store = self.runtime.store
        email = _verified_email(claims)
        if email is not None:
            found = await store.user_by_email(email)
            if found is not None:
                return found
        name = _user_name(claims)
        if name is not None:
            try:
                return await store.find_user(name)
            except errors.UserNotFoundError:
                pass
        return await self._add_user(claims, name or email)

    async def _refresh_roles(
        self, user: UserRecord, claims: dict[str, Any]
    ) -> UserRecord | None:
        """A user added at single sign-on gets the roles its claim maps to now,
        or None when it maps to none; a user added by hand keeps its roles."""
        if not await self._added_at_sign_on(user):
            return user
        roles = self._mapped_roles(claims)
        if not roles:
            return None
        if list(user.roles) == roles:
            return user

        updated = await self.runtime.store.set_roles(user.name, roles)
        await self.runtime.store.record_audit(
            SOURCE,
            "user_roles",
            f"user {user.name}",
            {"before": list(user.roles), "after": roles},
        )
        return updated

    async def _added_at_sign_on(self, user: UserRecord) -> bool:
        # The newest addition under this name tells: one made by hand after
        # an earlier single sign-on user of that name was removed is by hand.
        added = await self.runtime.store.latest_audit("user_add", f"user {user.name}")
        return (
            added is not None and added.actor == SOURCE and added.at >= user.created_at
        )

    async def _without_role(self, request: Request, claims: dict[str, Any]) -> Response:
        who = _display(claims)
        await self.runtime.store.record_audit(
            "anonymous",
            "sign_in_failed",
            f"user {who}",
            {"method": SOURCE, "reason": "no mapped role"},
        )
        return _refused(
            request,
            f"You signed in at the single sign-on service as {who}, but none of "
            "your groups there gives a role in LoB Flows any more. Ask an "
            "administrator.",
        )

    def _mapped_roles(self, claims: dict[str, Any]) -> list[str]:
        settings = self.runtime.settings
        return mapped_roles(
            claims.get(settings.oidc_roles_claim), settings.oidc_role_map
        )

    async def _add_user(
        self, claims: dict[str, Any], name: str | None
    ) -> UserRecord | None:
        roles = self._mapped_roles(claims)
        if not roles or name is None:
            return None
        email = _verified_email(claims)
        try:
            name = credentials.check_user_name(name)
            user = await self.runtime.store.add_user(name, roles=roles, email=email)
        except (ValueError, errors.StoreError) as exc:
            log.warning(
                "A single sign-on user was not added: %s",
                exc,
                extra={"event": "sso_user_refused"},
            )
            return None
        await self.runtime.store.record_audit(
            SOURCE, "user_add", f"user {name}", {"roles": roles, "email": email}
        )
        return user

    async def _failed(self, request: Request, reason: str) -> Response:
        await self.runtime.store.record_audit(
            "anonymous", "sign_in_failed", "single sign-on", {"reason": reason}
        )
        return _refused(
            request,
            f"Single sign-on did not complete ({reason}). Try again from the "
            "sign-in page.",
            status_code=401,
        )


def mapped_roles(claim: Any, role_map: dict[str, str]) -> list[str]:
    """The roles a claim's values map to: a list of values or a single one."""
    values = claim if isinstance(claim, list) else [claim]
    return sorted({role_map[v] for v in values if isinstance(v, str) and v in role_map})


def _verified_email(claims: dict[str, Any]) -> str | None:
    email = claims.get("email")
    # An address the issuer has not verified could be anyone's.
    if not isinstance(email, str) or claims.get("email_verified") is False:
        return None
    return email.strip().lower() or None


def _user_name(claims: dict[str, Any]) -> str | None:
    name = claims.get("preferred_username")
    return name.strip() if isinstance(name, str) and name.strip() else None


def _display(claims: dict[str, Any]) -> str:
    return str(
        _user_name(claims) or claims.get("email") or claims.get("sub") or "someone"
    )[:200]


def _discovery_url(issuer: str) -> str:
    return issuer.rstrip("/") + "/.well-known/openid-configuration"


def _refused(request: Request, message: str, *, status_code: int = 403) -> Response:
    return login.page(
        request,
        heading="Cannot sign in",
        notice=message,
        status_code=status_code,
        show_form=False,
    )


def routes(runtime: Runtime) -> list[BaseRoute]:
    """The sign-on routes, when an issuer is set."""
    if not runtime.settings.oidc_issuer:
        return []
    return SingleSignOn(runtime).routes()
