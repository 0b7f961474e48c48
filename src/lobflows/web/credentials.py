"""Passwords and API tokens: how they are made, hashed and checked.

Passwords are hashed with argon2id (argon2-cffi's defaults, RFC 9106's
second recommended profile). API tokens are long random strings, so one
SHA-256 digest is enough to keep them from being read back from the store.
"""

from __future__ import annotations

import functools
import hashlib
import secrets

import argon2

MIN_PASSWORD_CHARS = 10
MAX_PASSWORD_CHARS = 1024
TOKEN_PREFIX = "lft_"

_hasher = argon2.PasswordHasher()


def hash_password(password: str) -> str:
    """The argon2id hash of a password, after checking its length."""
    check_password(password)
    return _hasher.hash(password)


def check_password(password: str) -> None:
    """Refuse a password that is too short or too long, saying which."""
    if len(password) < MIN_PASSWORD_CHARS:
        raise ValueError(
            f"the password must have at least {MIN_PASSWORD_CHARS} characters"
        )
    if len(password) > MAX_PASSWORD_CHARS:
        raise ValueError(
            f"the password must have at most {MAX_PASSWORD_CHARS} characters"
        )


def verify_password(password_hash: str | None, password: str) -> bool:
    """Whether the password matches; as slow when there is no hash to match.

    An unknown user is checked against a stand-in hash, so the answer takes
    about as long as for a known user with a wrong password.
    """
    candidate = password[:MAX_PASSWORD_CHARS]
    try:
        return _hasher.verify(password_hash or _stand_in_hash(), candidate) and (
            password_hash is not None
        )
    except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
        return False


@functools.cache
def _stand_in_hash() -> str:
    return _hasher.hash(secrets.token_urlsafe(16))


def new_api_token() -> str:
    """A fresh API token: a recognisable prefix and 256 random bits."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    """The SHA-256 of a token in hex, as the store keeps it."""
    return hashlib.sha256(token.encode()).hexdigest()
