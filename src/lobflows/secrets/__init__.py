"""Secrets by name, and the redactor that keeps their values out of every output.

Flows and connections name secrets; values come from environment variables
(``LOBFLOWS_SECRET_<NAME>``, the name upper-cased with ``-`` and ``.`` as ``_``),
the encrypted vault in the run store (`vault`), a secrets file (a YAML
mapping of name to value), a folder of files or HashiCorp Vault (`backends`).
Every value loaded is registered with the process-wide redactor, which
scrubs it from log lines, stored run data and error messages.
"""

from __future__ import annotations

import contextvars
import os
import re
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lobflows import errors
from lobflows.secrets import backends
from lobflows.secrets.backends import ENV_PREFIX, env_name

__all__ = [
    "ENV_PREFIX",
    "MASK",
    "Redactor",
    "SecretStore",
    "env_name",
    "redactor",
    "run_started_at",
]

MASK = "***"
# Values shorter than this are too likely to occur by chance in ordinary
# data ("1", "yes") to be scrubbed as text; they are still never logged as
# themselves because secret fields are rendered by name only.
MIN_REDACTED_LENGTH = 4


class Redactor:
    """Replaces every registered secret value with a mask, in text and in data."""

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self._lock = threading.Lock()

    def register(self, value: str) -> None:
        if len(value) < MIN_REDACTED_LENGTH or value in self._values:
            return
        with self._lock:
            self._values.add(value)
            # Longest first, so a secret that contains another is masked whole.
            ordered = sorted(self._values, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(v) for v in ordered))

    def redact(self, text: str) -> str:
        pattern = self._pattern
        if pattern is None or not text:
            return text
        return pattern.sub(MASK, text)

    def redact_data(self, value: Any) -> Any:
        """Return a copy of JSON-like data with secret values masked."""
        if self._pattern is None:
            return value
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, Mapping):
            return {self.redact(str(k)): self.redact_data(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.redact_data(v) for v in value]
        return value


redactor = Redactor()

# When the run being executed started (seconds since the epoch), set by the
# engine around each run: a secret rotated since then still gives the run
# its earlier value while that value's grace period lasts.
run_started_at: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "run_started_at", default=None
)


class SecretStore:
    """Resolves secret names to values, asking each backend in turn.

    Precedence, first answer wins: environment variables, the encrypted
    vault (once attached), the secrets file, the secrets folder, HashiCorp
    Vault. Every read is noted in memory (`take_reads`) for the inventory's
    "last used"; the server writes those times to the store now and then.
    """

    def __init__(
        self,
        values: Mapping[str, str] | None = None,
        *,
        folder: Path | None = None,
    ) -> None:
        self._env = backends.EnvBackend()
        self._file = backends.FileBackend(dict(values or {}))
        self._folder = backends.FolderBackend(folder) if folder else None
        self.vault: Any = None
        self.hashicorp: backends.HashicorpBackend | None = None
        self._reads: dict[str, float] = {}
        # Registered up front, so a value nobody reads yet is masked anyway.
        for value in [*self._file.values.values(), *self._env.values()]:
            redactor.register(value)

    @classmethod
    def load(cls, path: Path | None = None) -> SecretStore:
        """Read the secrets file, if any, and find the secrets folder
        (``LOBFLOWS_SECRETS_DIR``); environment variables win over both."""
        values = backends.FileBackend.read(path).values if path else {}
        folder = os.environ.get(backends.SECRETS_DIR_ENV)
        return cls(values, folder=Path(folder) if folder else None)

    async def attach(self, store: Any, *, database_url: str) -> None:
        """Open the vault in the run store, and HashiCorp Vault when
        configured (its token is a secret found in the other backends)."""
        from lobflows.secrets import vault

        self.vault = await vault.Vault.open(store, database_url)
        hashicorp = backends.HashicorpBackend.from_environment(self.find)
        if hashicorp is not None:
            await hashicorp.load()
            self.hashicorp = hashicorp

    @property
    def active_backends(self) -> list[backends.Backend]:
        """The backends in order of precedence."""
        found: list[Any] = [self._env, self.vault, self._file]
        found += [self._folder, self.hashicorp]
        return [b for b in found if b is not None]

    def get(self, name: str) -> str:
        for backend in self.active_backends:
            value = backend.lookup(name)
            if value is not None:
                redactor.register(value)
                self._reads[name] = time.time()
                return value
        raise errors.SecretNotFoundError(
            f"secret {name!r} is not defined: set {env_name(name)}, "
            "add it to the vault (`lobflows secrets set`) or to the secrets file",
            secret=name,
        )

    def find(self, name: str) -> str | None:
        """The value, or None when no backend has it; not counted as a use."""
        for backend in self.active_backends:
            value = backend.lookup(name)
            if value is not None:
                return value
        return None

    def candidates(self, name: str) -> list[str]:
        """The value now, then earlier vault values still in their grace
        period: what an incoming signature may have been made with."""
        values = [self.get(name)]
        if self.vault is not None and self.backend_of(name) == "vault":
            values += self.vault.values_in_grace(name)
        return values

    def backend_of(self, name: str) -> str | None:
        """The name of the backend that answers for a secret, or None."""
        for backend in self.active_backends:
            if backend.lookup(name) is not None:
                return backend.name
        return None

    def names(self) -> list[str]:
        found: set[str] = set()
        for backend in self.active_backends:
            found |= backend.names()
        return sorted(found)

    def recent_reads(self) -> dict[str, float]:
        """Reads not yet flushed to the store, by name."""
        return dict(self._reads)

    def env_names(self) -> set[str]:
        """Names given by environment variables (lower-cased, as written there)."""
        return self._env.names()

    def take_reads(self) -> dict[str, float]:
        """When each secret was last read since the previous call, by name."""
        reads, self._reads = self._reads, {}
        return reads

    def put_back_reads(self, reads: dict[str, float]) -> None:
        """Return reads that could not be stored, to try again later."""
        for name, at in reads.items():
            self._reads[name] = max(at, self._reads.get(name, 0.0))
