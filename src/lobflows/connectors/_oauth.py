"""OAuth2 client credentials: an app-only access token, fetched on first use
and reused until it expires or the API refuses it.

Both Microsoft Entra (for Graph) and Salesforce answer a form post of
``grant_type=client_credentials`` with ``access_token`` and, for Entra,
``expires_in``. A token is registered with the redactor the moment it
arrives, so it never reaches a log line or a stored error.
"""

from __future__ import annotations

import asyncio
import time

from lobflows.connectors import _http
from lobflows.secrets import SecretStore, redactor

# A token is renewed this long before it expires, so none expires in flight.
RENEW_EARLY_SECONDS = 60.0


class ClientCredentials:
    """The access token of one connection."""

    def __init__(
        self,
        client: _http.GuardedClient,
        secrets: SecretStore,
        *,
        connection: str,
        issuer: str,
        token_url: str,
        client_id: str,
        secret: str,
        scope: str | None = None,
        default_lifetime: float | None = None,
    ) -> None:
        """`issuer` names the token endpoint in errors ("the Entra token
        endpoint"); `default_lifetime` is how long a token without
        ``expires_in`` is kept, None for until the API refuses it."""
        self.client = client
        self.secrets = secrets
        self.connection = connection
        self.issuer = issuer
        self.token_url = token_url
        self.client_id = client_id
        self.secret = secret
        self.scope = scope
        self.default_lifetime = default_lifetime
        self._token: tuple[str, float] | None = None
        self._lock = asyncio.Lock()

    async def token(self, *, fresh: bool = False) -> str:
        """The current token; a new one when `fresh` (the API refused the
        last) or when it is about to expire."""
        async with self._lock:
            now = time.monotonic()
            if fresh or self._token is None or self._token[1] <= now:
                self._token = await self._fetch(now)
            return self._token[0]

    async def _fetch(self, now: float) -> tuple[str, float]:
        form = {
            "grant_type": "client_credentials",
            "client_id": self.client_id,
            "client_secret": self.secrets.get(self.secret),
        }
        if self.scope is not None:
            form["scope"] = self.scope
        response = await self.client.request("POST", self.token_url, data=form)
        body = _http.response_body(response)
        token = body.get("access_token") if isinstance(body, dict) else None
        if response.is_error or not isinstance(token, str):
            reason = (
                body.get("error") if isinstance(body, dict) else response.status_code
            )
            raise _http.status_error(
                f"{self.connection}: {self.issuer} refused the client "
                f"credentials ({reason})",
                response,
                connection=self.connection,
            )
        redactor.register(token)
        expires_in = body.get("expires_in")
        if isinstance(expires_in, int | float):
            lifetime: float | None = float(expires_in)
        else:
            lifetime = self.default_lifetime
        if lifetime is None:
            return token, float("inf")
        return token, now + max(lifetime - RENEW_EARLY_SECONDS, lifetime / 2)
