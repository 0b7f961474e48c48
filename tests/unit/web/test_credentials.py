"""Password hashing and API token digests."""

from __future__ import annotations

import pytest

from lobflows.web import credentials


def test_hash_password_is_argon2id_and_verifies_only_the_password():
    hashed = credentials.hash_password("correct horse battery")
    assert hashed.startswith("$argon2id$") and "correct" not in hashed
    assert credentials.verify_password(hashed, "correct horse battery")
    assert not credentials.verify_password(hashed, "correct horse batterz")


def test_verify_password_refuses_when_there_is_no_hash():
    # The unknown user path still runs argon2 against a stand-in hash.
    assert not credentials.verify_password(None, "anything at all")


def test_verify_password_refuses_a_damaged_hash():
    assert not credentials.verify_password("$argon2id$broken", "correct horse battery")


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("short", "at least 10"),  # too short
        ("x" * 1025, "at most 1024"),  # too long
    ],
)
def test_hash_password_refuses_a_bad_length(password: str, message: str):
    with pytest.raises(ValueError, match=message):
        credentials.hash_password(password)


def test_api_tokens_are_random_and_stored_as_sha256():
    first, second = credentials.new_api_token(), credentials.new_api_token()
    assert first != second and first.startswith(credentials.TOKEN_PREFIX)
    digest = credentials.token_digest(first)
    assert len(digest) == 64 and first not in digest
    assert digest == credentials.token_digest(first)
