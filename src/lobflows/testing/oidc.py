"""Stand-in for an OpenID Connect provider, for tests on loopback.

It follows the authorization code flow of OpenID Connect Core 1.0: a
discovery document, an authorize endpoint that signs in the configured test
user at once and redirects back with a code, a token endpoint that trades
the code (once, within a minute, with the client's secret and, when the
client sent one, its PKCE verifier) for an RS256-signed ID token, a JWKS
endpoint with the public key, and a userinfo endpoint.

The issuer is the base URL the stand-in is reached at, so it can run on a
port chosen when it starts::

    provider = OidcProvider(client_id="lobflows", client_secret="s3cret")
    provider.sign_in_as(sub="u-1", email="ada@example.com", groups=["ops"])
    with ServerThread(provider.app) as server:
        ...  # issuer is server.url
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from joserfc import jwt
from joserfc.jwk import RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

__all__ = ["OidcProvider"]

CODE_LIFETIME_SECONDS = 60
TOKEN_LIFETIME_SECONDS = 300


@dataclass
class _Grant:
    client_id: str
    redirect_uri: str
    nonce: str | None
    claims: dict[str, Any]
    code_challenge: str | None
    issued_at: float = field(default_factory=time.time)


class OidcProvider:
    """One client, one signed-in user at a time, one signing key."""

    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        redirect_uris: list[str] | None = None,
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        # None accepts any redirect URI on loopback.
        self.redirect_uris = redirect_uris
        self.key = RSAKey.generate_key(
            2048, parameters={"kid": secrets.token_hex(8), "use": "sig", "alg": "RS256"}
        )
        self.user: dict[str, Any] | None = None
        self.token_requests = 0
        self._grants: dict[str, _Grant] = {}
        self._access: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self.app = Starlette(
            routes=[
                Route("/.well-known/openid-configuration", self._discovery),
                Route("/authorize", self._authorize),
                Route("/token", self._token, methods=["POST"]),
                Route("/jwks", self._jwks),
                Route("/userinfo", self._userinfo),
            ]
        )

    def sign_in_as(self, *, sub: str, **claims: Any) -> None:
        """The user the authorize endpoint signs in; claims go into the ID token."""
        self.user = {"sub": sub, **claims}

    def sign_out(self) -> None:
        """No user: the authorize endpoint answers login_required."""
        self.user = None

    # -- endpoints ---------------------------------------------------------

    async def _discovery(self, request: Request) -> Response:
        issuer = _issuer(request)
        return JSONResponse(
            {
                "issuer": issuer,
                "authorization_endpoint": f"{issuer}/authorize",
                "token_endpoint": f"{issuer}/token",
                "jwks_uri": f"{issuer}/jwks",
                "userinfo_endpoint": f"{issuer}/userinfo",
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "scopes_supported": ["openid", "email", "profile"],
                "token_endpoint_auth_methods_supported": [
                    "client_secret_basic",
                    "client_secret_post",
                ],
                "code_challenge_methods_supported": ["S256"],
                "grant_types_supported": ["authorization_code"],
            }
        )

    async def _authorize(self, request: Request) -> Response:
        query = request.query_params
        redirect_uri = query.get("redirect_uri", "")
        if query.get("client_id") != self.client_id:
            return _oauth_error(400, "unauthorized_client", "unknown client_id")
        if not self._redirect_allowed(redirect_uri):
            return _oauth_error(400, "invalid_request", "redirect_uri not registered")
        if query.get("response_type") != "code":
            return _back(redirect_uri, query, error="unsupported_response_type")
        if "openid" not in query.get("scope", "").split():
            return _back(redirect_uri, query, error="invalid_scope")
        if self.user is None:
            return _back(redirect_uri, query, error="login_required")
        code = secrets.token_urlsafe(24)
        with self._lock:
            self._grants[code] = _Grant(
                client_id=self.client_id,
                redirect_uri=redirect_uri,
                nonce=query.get("nonce"),
                claims=dict(self.user),
                code_challenge=query.get("code_challenge"),
            )
        return _back(redirect_uri, query, code=code)

    async def _token(self, request: Request) -> Response:
        self.token_requests += 1
        async with request.form() as form:
            fields = {k: v for k, v in form.items() if isinstance(v, str)}
        if not self._client_authenticated(request, fields):
            return _oauth_error(401, "invalid_client", "client authentication failed")
        if fields.get("grant_type") != "authorization_code":
            return _oauth_error(
                400, "unsupported_grant_type", "authorization_code only"
            )
        with self._lock:
            grant = self._grants.pop(fields.get("code", ""), None)
        if grant is None or time.time() - grant.issued_at > CODE_LIFETIME_SECONDS:
            return _oauth_error(400, "invalid_grant", "unknown, used or expired code")
        if fields.get("redirect_uri") != grant.redirect_uri:
            return _oauth_error(400, "invalid_grant", "redirect_uri differs")
        if grant.code_challenge is not None and not _pkce_ok(
            grant.code_challenge, fields.get("code_verifier", "")
        ):
            return _oauth_error(400, "invalid_grant", "code_verifier does not match")
        access_token = secrets.token_urlsafe(24)
        with self._lock:
            self._access[access_token] = grant.claims
        return JSONResponse(
            {
                "access_token": access_token,
                "token_type": "Bearer",
                "expires_in": TOKEN_LIFETIME_SECONDS,
                "scope": "openid email profile",
                "id_token": self._id_token(_issuer(request), grant),
            },
            headers={"Cache-Control": "no-store"},
        )

    async def _jwks(self, request: Request) -> Response:
        return JSONResponse({"keys": [self.key.as_dict(private=False)]})

    async def _userinfo(self, request: Request) -> Response:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        claims = self._access.get(token) if scheme.lower() == "bearer" else None
        if claims is None:
            return _oauth_error(401, "invalid_token", "unknown access token")
        return JSONResponse(claims)

    # -- helpers -----------------------------------------------------------

    def _redirect_allowed(self, uri: str) -> bool:
        if self.redirect_uris is not None:
            return uri in self.redirect_uris
        host = urllib.parse.urlsplit(uri).hostname
        return host in {"127.0.0.1", "localhost", "::1"}

    def _client_authenticated(self, request: Request, fields: dict[str, str]) -> bool:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "basic":
            decoded = base64.b64decode(value).decode()
            client_id, _, secret = decoded.partition(":")
            client_id = urllib.parse.unquote_plus(client_id)
            secret = urllib.parse.unquote_plus(secret)
        else:
            client_id = fields.get("client_id", "")
            secret = fields.get("client_secret", "")
        return client_id == self.client_id and hmac.compare_digest(
            secret.encode(), self.client_secret.encode()
        )

    def _id_token(self, issuer: str, grant: _Grant) -> str:
        now = int(time.time())
        claims = {
            **grant.claims,
            "iss": issuer,
            "aud": grant.client_id,
            "iat": now,
            "exp": now + TOKEN_LIFETIME_SECONDS,
            "auth_time": now,
        }
        if grant.nonce is not None:
            claims["nonce"] = grant.nonce
        header = {"alg": "RS256", "kid": self.key.kid, "typ": "JWT"}
        return jwt.encode(header, claims, self.key)


def _issuer(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _back(redirect_uri: str, query: Any, **params: str) -> Response:
    if query.get("state") is not None:
        params["state"] = query["state"]
    separator = "&" if "?" in redirect_uri else "?"
    location = redirect_uri + separator + urllib.parse.urlencode(params)
    return RedirectResponse(location, status_code=302)


def _oauth_error(status: int, error: str, description: str) -> Response:
    return JSONResponse(
        {"error": error, "error_description": description}, status_code=status
    )


def _pkce_ok(challenge: str, verifier: str) -> bool:
    digest = hashlib.sha256(verifier.encode()).digest()
    expected = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    return hmac.compare_digest(expected, challenge)
