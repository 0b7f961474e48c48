"""User names, passwords and API tokens: how they are made, hashed and checked.

Passwords are hashed with argon2id (argon2-cffi's defaults, RFC 9106's
second recommended profile). API tokens are long random strings, so one
SHA-256 digest is enough to keep them from being read back from the store.
"""

from __future__ import annotations

import functools
import hashlib
import re
import secrets
import unicodedata

import argon2

MIN_PASSWORD_CHARS = 10
MAX_PASSWORD_CHARS = 1024
TOKEN_PREFIX = "lft_"
MAX_NAME_CHARS = 200
# Actors the audit log writes for what no user did: commands on the
# server's machine (cli:<os user>), single sign-on, the shared API token.
RESERVED_NAMES = ("oidc", "api", "anonymous")
RESERVED_PREFIX = "cli:"
# One @, something on each side, nothing that separates addresses.
EMAIL = re.compile(r"[^@\s,;<>\"]+@[^@\s,;<>\"]+")

_hasher = argon2.PasswordHasher()


def hash_password(password: str) -> str:
    """The argon2id hash of a password, after checking its length."""
    check_password(password)
    return _hasher.hash(password)


def check_user_name(name: str) -> str:
    """The name without surrounding spaces; ValueError saying why a name
    cannot be a user's (it also names the user's page, and audit actors)."""
    name = name.strip()
    if not name or len(name) > MAX_NAME_CHARS:
        raise ValueError(f"the user name must have 1 to {MAX_NAME_CHARS} characters")
    if "/" in name or any(unicodedata.category(c).startswith("C") for c in name):
        raise ValueError(
            "the user name must not hold a slash or a control character "
            "(a tab, a line break)"
        )
    if name.lower() in RESERVED_NAMES or name.lower().startswith(RESERVED_PREFIX):
        raise ValueError(
            f"{name!r} is how the audit log names actions no user took "
            f"({', '.join(RESERVED_NAMES)}, {RESERVED_PREFIX}<os user>); "
            "choose another name"
        )
    return name


def check_email(email: str) -> str:
    """The address without surrounding spaces; ValueError when it is not one."""
    email = email.strip()
    if not EMAIL.fullmatch(email):
        raise ValueError(f"{email!r} is not an e-mail address")
    return email


def check_password(password: str) -> None:
    """Refuse a password that is too short, too long or blank, saying which."""
    if not password.strip():
        raise ValueError("the password must not be blank")
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
