"""The OAuth2 client-credentials side shared by the SaaS stand-ins: the
tokens a token endpoint issued, the counters of the requests it saw, and
the check of a token request's form."""

from __future__ import annotations

import hmac
import secrets
import threading
from collections import Counter
from typing import ClassVar


class IssuedTokens:
    """Base of a stand-in's state: the access tokens it issued and a count of
    requests by method and path. Subclasses set `token_prefix` and call
    `forget_tokens` from their reset, under their lock."""

    token_prefix: ClassVar[str]
    lock: threading.RLock

    def forget_tokens(self) -> None:
        self.tokens: set[str] = set()
        self.tokens_issued = 0
        self.requests: Counter[str] = Counter()

    def issue_token(self) -> str:
        """Issue a new opaque access token."""
        token = self.token_prefix + secrets.token_urlsafe(32)
        with self.lock:
            self.tokens.add(token)
            self.tokens_issued += 1
        return token

    def expire_tokens(self) -> None:
        """Invalidate every issued token, as an expiry or a revocation would."""
        with self.lock:
            self.tokens.clear()

    def count_request(self, method: str, path: str) -> None:
        with self.lock:
            self.requests[f"{method} {path}"] += 1


def client_credentials_problem(
    form: dict[str, str], *, client_id: str, client_secret: str
) -> str | None:
    """What is wrong with a token request, as its OAuth2 error code
    (``unsupported_grant_type``, ``invalid_client``), or None."""
    if form.get("grant_type") != "client_credentials":
        return "unsupported_grant_type"
    same_id = hmac.compare_digest(
        form.get("client_id", "").encode(), client_id.encode()
    )
    same_secret = hmac.compare_digest(
        form.get("client_secret", "").encode(), client_secret.encode()
    )
    return None if same_id and same_secret else "invalid_client"
