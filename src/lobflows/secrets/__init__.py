"""Secrets by name, and the redactor that keeps their values out of every output.

Flows and connections name secrets; values come from environment variables
(``LOBFLOWS_SECRET_<NAME>``, the name upper-cased with ``-`` and ``.`` as ``_``)
or from a secrets file (a YAML mapping of name to value). Every value loaded is
registered with the process-wide redactor, which scrubs it from log lines,
stored run data and error messages.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from lobflows import errors

ENV_PREFIX = "LOBFLOWS_SECRET_"
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


def env_name(secret: str) -> str:
    """The environment variable that holds a secret."""
    return ENV_PREFIX + re.sub(r"[^A-Za-z0-9]", "_", secret).upper()


class SecretStore:
    """Resolves secret names to values from a file and the environment."""

    def __init__(self, values: Mapping[str, str] | None = None) -> None:
        self._values = dict(values or {})
        for value in self._values.values():
            redactor.register(value)

    @classmethod
    def load(cls, path: Path | None = None) -> SecretStore:
        """Read the secrets file, if any; environment variables win over it."""
        values: dict[str, str] = {}
        if path is not None:
            values.update(_read_file(path))
        return cls(values)

    def get(self, name: str) -> str:
        value = os.environ.get(env_name(name))
        if value is None:
            value = self._values.get(name)
        if value is None:
            raise errors.SecretNotFoundError(
                f"secret {name!r} is not defined: set {env_name(name)} "
                "or add it to the secrets file",
                secret=name,
            )
        redactor.register(value)
        return value

    def names(self) -> list[str]:
        from_env = [
            key[len(ENV_PREFIX) :].lower()
            for key in os.environ
            if key.startswith(ENV_PREFIX)
        ]
        return sorted(set(self._values) | set(from_env))


def _read_file(path: Path) -> dict[str, str]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise errors.ConfigurationError(
            f"cannot read secrets file {path}: {exc.strerror}"
        ) from exc
    except yaml.YAMLError as exc:
        raise errors.ConfigurationError(
            f"secrets file {path} is not valid YAML"
        ) from exc
    if not isinstance(data, dict):
        raise errors.ConfigurationError(
            f"secrets file {path} must be a mapping of secret name to value"
        )
    return {str(k): str(v) for k, v in data.items()}
