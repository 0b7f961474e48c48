"""The encrypted vault: secret values kept in the run store, under a master key.

Values are encrypted with Fernet (AES-128-CBC with an HMAC-SHA256 tag,
from `cryptography`). The master key comes from ``LOBFLOWS_MASTER_KEY`` or
from the file named by ``LOBFLOWS_MASTER_KEY_FILE``, and is never written
to the store; a key file inside a SQLite store's folder (or below it) is
refused, since whoever copies the folder would hold both.

The vault is read whole into memory when a process opens it and reloaded
in the background (`refresh`), so `SecretStore.get` stays synchronous and
a rotation made by another process reaches this one within seconds.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from cryptography.fernet import Fernet, InvalidToken

from lobflows import errors
from lobflows.secrets import MIN_REDACTED_LENGTH, redactor, run_started_at

log = logging.getLogger(__name__)
MASTER_KEY_ENV = "LOBFLOWS_MASTER_KEY"
MASTER_KEY_FILE_ENV = "LOBFLOWS_MASTER_KEY_FILE"
# The key `lobflows secrets rekey` moves the vault to.
NEW_MASTER_KEY_ENV = "LOBFLOWS_NEW_MASTER_KEY"
NEW_MASTER_KEY_FILE_ENV = "LOBFLOWS_NEW_MASTER_KEY_FILE"
KEY_HINT = (
    "expected 32 url-safe base64-encoded bytes (44 characters), "
    "as `lobflows secrets new-key` prints"
)


# Key files already warned about in this process, so a command that reads
# the key twice says it once.
_warned_key_files: set[Path] = set()


@dataclass(frozen=True)
class Version:
    """One decrypted value of a secret, held in memory only."""

    version: int
    value: str
    created_at: float
    grace_until: float | None  # None while the version is current


def new_key() -> str:
    """A fresh master key."""
    return Fernet.generate_key().decode()


def check_value(name: str, value: str) -> None:
    """Refuse a value the redactor could not mask: blank, or too short."""
    if not value.strip():
        raise errors.ConfigurationError(
            f"the value of secret {name!r} is empty or only whitespace: "
            f"expected at least {MIN_REDACTED_LENGTH} characters",
            secret=name,
        )
    if len(value) < MIN_REDACTED_LENGTH:
        raise errors.ConfigurationError(
            f"the value of secret {name!r} is too short: expected at least "
            f"{MIN_REDACTED_LENGTH} characters (shorter values cannot be "
            "masked in logs and output)",
            secret=name,
        )


def master_key(database_url: str) -> Fernet | None:
    """The cipher of the configured master key, or None when none is set."""
    inline = os.environ.get(MASTER_KEY_ENV)
    key_file = os.environ.get(MASTER_KEY_FILE_ENV)
    if inline and key_file:
        raise errors.ConfigurationError(
            f"both {MASTER_KEY_ENV} and {MASTER_KEY_FILE_ENV} are set; set one"
        )
    if key_file:
        return _cipher(
            _read_key_file(Path(key_file), database_url), MASTER_KEY_FILE_ENV
        )
    if inline:
        return _cipher(inline.strip(), MASTER_KEY_ENV)
    return None


def new_master_key(database_url: str, key_file: Path | None) -> Fernet:
    """The cipher of the key to move the vault to: ``LOBFLOWS_NEW_MASTER_KEY``
    or `key_file`, the same checks as the master key."""
    inline = os.environ.get(NEW_MASTER_KEY_ENV)
    if inline and key_file is not None:
        raise errors.ConfigurationError(
            f"both {NEW_MASTER_KEY_ENV} and --new-key-file are set; set one"
        )
    if key_file is not None:
        key = _read_key_file(key_file, database_url, setting="--new-key-file")
        return _cipher(key, "--new-key-file")
    if inline:
        return _cipher(inline.strip(), NEW_MASTER_KEY_ENV)
    raise errors.ConfigurationError(
        f"no new master key: set {NEW_MASTER_KEY_ENV} or pass --new-key-file "
        "(`lobflows secrets new-key` makes one)"
    )


def reencrypt(old: Fernet, new: Fernet, *, name: str, version: int, token: str) -> str:
    """One stored value, decrypted with `old` and encrypted again with `new`."""
    try:
        value = old.decrypt(token.encode())
    except InvalidToken:
        raise errors.ConfigurationError(
            f"secret {name!r} (version {version}) cannot be decrypted with the "
            f"current master key: it was stored under another key. Nothing was "
            f"re-encrypted; set the key it was stored with in {MASTER_KEY_ENV} "
            f"or {MASTER_KEY_FILE_ENV}",
            secret=name,
        ) from None
    return new.encrypt(value).decode()


async def rekey(
    store: Any, *, current: Fernet | None, new: Fernet
) -> dict[str, list[int]]:
    """Re-encrypt every version of every secret from `current` to `new`, all
    in one transaction; returns the versions re-encrypted, by secret name."""
    if current is not None and _same_key(current, new):
        raise errors.ConfigurationError(
            "the new master key is the current one: give a fresh key "
            "(`lobflows secrets new-key` makes one)"
        )
    if current is None:
        held = await store.secret_versions()
        if not held:
            return {}
        names = sorted({r.name for r in held})
        raise errors.ConfigurationError(
            f"the vault holds {len(names)} secret(s) ({', '.join(names)}) but no "
            f"current master key is set: set {MASTER_KEY_ENV} or "
            f"{MASTER_KEY_FILE_ENV} to the key they are stored under"
        )

    old = current

    def again(record: Any) -> str:
        return reencrypt(
            old, new, name=record.name, version=record.version, token=record.ciphertext
        )

    done: dict[str, list[int]] = {}
    for record in await store.rekey_secrets(again):
        done.setdefault(record.name, []).append(record.version)
    return done


def _same_key(current: Fernet, new: Fernet) -> bool:
    try:
        current.decrypt(new.encrypt(b"same key?"))
    except InvalidToken:
        return False
    return True


def _read_key_file(
    path: Path, database_url: str, *, setting: str = MASTER_KEY_FILE_ENV
) -> str:
    path = path.expanduser()
    store_folder = _sqlite_folder(database_url)
    if store_folder is not None and store_folder in path.resolve().parents:
        raise errors.ConfigurationError(
            f"the master key file {path} is in the same folder as the run store "
            f"database, or in a folder below it; keep it elsewhere (a copy of "
            f"the folder would carry both)"
        )
    try:
        key = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise errors.ConfigurationError(
            f"cannot read the master key file {path} ({setting}): {exc.strerror}"
        ) from None
    _warn_if_readable_by_others(path)
    return key


def _warn_if_readable_by_others(path: Path) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    if not mode & (stat.S_IRGRP | stat.S_IROTH) or path in _warned_key_files:
        return
    _warned_key_files.add(path)
    log.warning(
        "The master key file %s can be read by other users (mode %s); "
        "run `chmod 600 %s` so only its owner can read it",
        path,
        oct(mode)[2:].zfill(3),
        path,
        extra={"event": "master_key_file_readable"},
    )


def _sqlite_folder(database_url: str) -> Path | None:
    if not database_url.startswith("sqlite"):
        return None
    database = sa.engine.make_url(database_url).database
    if not database or database == ":memory:":
        return None
    return Path(database).expanduser().resolve().parent


def _cipher(key: str, source: str) -> Fernet:
    try:
        return Fernet(key.encode())
    except (ValueError, TypeError):
        # The message names where the key came from, never the key.
        raise errors.ConfigurationError(
            f"the master key in {source} is malformed: {KEY_HINT}"
        ) from None


class Vault:
    """The vault's secrets, decrypted in memory; a `SecretStore` backend."""

    name = "vault"

    def __init__(
        self, store: Any, cipher: Fernet | None, database_url: str | None = None
    ) -> None:
        self.store = store
        self.cipher = cipher
        # Where the master key is read again from when it stops opening the
        # vault: a key file replaced after `lobflows secrets rekey`.
        self.database_url = database_url
        self._versions: dict[str, list[Version]] = {}
        # Decrypted values by (name, version, ciphertext): a refresh decrypts
        # only what is new. The ciphertext is part of the key because a
        # secret removed and set again starts over at version 1.
        self._decrypted: dict[tuple[str, int, str], str] = {}

    @classmethod
    async def open(cls, store: Any, database_url: str) -> Vault:
        """Read the master key and load every secret; fails on a missing or
        wrong key when the vault holds secrets."""
        vault = cls(store, master_key(database_url), database_url)
        await vault.refresh()
        return vault

    async def refresh(self) -> None:
        """Reload versions from the store (another process may have rotated)."""
        records = await self.store.secret_versions()
        if records and self.cipher is None:
            names = sorted({r.name for r in records})
            raise errors.ConfigurationError(
                f"the vault holds {len(names)} secret(s) ({', '.join(names)}) but no "
                f"master key is set: set {MASTER_KEY_ENV} or {MASTER_KEY_FILE_ENV}"
            )
        try:
            decrypted = self._decrypt_all(records)
        except errors.ConfigurationError as failure:
            decrypted = self._decrypt_with_a_replaced_key(records, failure)
        versions: dict[str, list[Version]] = {}
        for record in records:
            value = decrypted[(record.name, record.version, record.ciphertext)]
            versions.setdefault(record.name, []).append(
                Version(
                    version=record.version,
                    value=value,
                    created_at=record.created_at,
                    grace_until=record.grace_until,
                )
            )
        self._versions = versions
        # Only what the store still holds: a removed version is forgotten.
        self._decrypted = decrypted

    def _decrypt_with_a_replaced_key(
        self, records: list[Any], failure: errors.ConfigurationError
    ) -> dict[tuple[str, int, str], str]:
        """Decrypt with the master key read again, when its file now holds
        another key (the vault was rekeyed and the file replaced); else raise
        `failure`, why the key in use does not open the vault."""
        reread = None
        if self.database_url is not None and os.environ.get(MASTER_KEY_FILE_ENV):
            reread = master_key(self.database_url)
        if reread is None or (self.cipher and _same_key(self.cipher, reread)):
            raise failure
        kept = self.cipher, self._decrypted
        self.cipher, self._decrypted = reread, {}
        try:
            decrypted = self._decrypt_all(records)
        except errors.ConfigurationError:
            self.cipher, self._decrypted = kept
            raise failure from None
        log.info(
            "The master key was read again from its file and opens the vault",
            extra={"event": "master_key_reloaded"},
        )
        return decrypted

    def _decrypt_all(self, records: list[Any]) -> dict[tuple[str, int, str], str]:
        decrypted: dict[tuple[str, int, str], str] = {}
        failed: list[Any] = []
        for record in records:
            key = (record.name, record.version, record.ciphertext)
            value = self._decrypted.get(key)
            if value is None:
                value = self._decrypt(record.ciphertext)
            if value is None:
                failed.append(record)
                continue
            redactor.register(value)
            decrypted[key] = value
        if failed:
            raise _wrong_key(failed, stored=len(records))
        return decrypted

    def _decrypt(self, ciphertext: str) -> str | None:
        assert self.cipher is not None
        try:
            return self.cipher.decrypt(ciphertext.encode()).decode()
        except InvalidToken:
            return None

    def encrypt(self, value: str) -> str:
        if self.cipher is None:
            raise errors.ConfigurationError(
                f"no master key is set: set {MASTER_KEY_ENV} or "
                f"{MASTER_KEY_FILE_ENV} (`lobflows secrets new-key` makes one)"
            )
        return self.cipher.encrypt(value.encode()).decode()

    # -- the backend ------------------------------------------------------

    def lookup(self, secret: str) -> str | None:
        """The current value, or for a run that started before the last
        rotation, the value current then while its grace lasts."""
        versions = self._versions.get(secret)
        if not versions:
            return None
        current = versions[-1]
        started = run_started_at.get()
        if started is None or started >= current.created_at:
            return current.value
        then = [v for v in versions if v.created_at <= started]
        if then and _in_grace(then[-1], time.time()):
            return then[-1].value
        return current.value

    def values_in_grace(self, secret: str) -> list[str]:
        """Earlier values whose grace period has not ended, newest first."""
        now = time.time()
        earlier = self._versions.get(secret, [])[:-1]
        return [v.value for v in reversed(earlier) if _in_grace(v, now)]

    def names(self) -> set[str]:
        return set(self._versions)

    def current_version(self, secret: str) -> int | None:
        versions = self._versions.get(secret)
        return versions[-1].version if versions else None


def _wrong_key(failed: list[Any], *, stored: int) -> errors.ConfigurationError:
    first = failed[0]
    return errors.ConfigurationError(
        f"the master key does not open the vault: {len(failed)} of its {stored} "
        f"stored version(s) cannot be decrypted with it, for example secret "
        f"{first.name!r} (version {first.version}); they were stored under "
        f"another key. Set the key the vault was stored with in "
        f"{MASTER_KEY_ENV} or {MASTER_KEY_FILE_ENV}",
        secret=first.name,
    )


def _in_grace(version: Version, now: float) -> bool:
    return version.grace_until is not None and now < version.grace_until
