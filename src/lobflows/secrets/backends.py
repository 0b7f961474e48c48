"""Where secret values come from besides the vault: the environment, a
secrets file, a folder of files, and HashiCorp Vault.

Each backend answers `lookup(name)` from memory or the local disk, never
over the network: `SecretStore.get` is synchronous and called inside
steps. HashiCorp Vault is therefore read whole at start and again in the
background.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

import yaml

from lobflows import errors

log = logging.getLogger(__name__)

ENV_PREFIX = "LOBFLOWS_SECRET_"
SECRETS_DIR_ENV = "LOBFLOWS_SECRETS_DIR"
HASHICORP_URL_ENV = "LOBFLOWS_HASHICORP_VAULT_URL"
HASHICORP_MOUNT_ENV = "LOBFLOWS_HASHICORP_VAULT_MOUNT"
HASHICORP_PATH_ENV = "LOBFLOWS_HASHICORP_VAULT_PATH"
HASHICORP_TOKEN_SECRET_ENV = "LOBFLOWS_HASHICORP_VAULT_TOKEN_SECRET"
DEFAULT_HASHICORP_TOKEN_SECRET = "hashicorp-vault-token"
HASHICORP_TIMEOUT_SECONDS = 10.0


class Backend(Protocol):
    """A source of secret values, asked in order of precedence."""

    name: str

    def lookup(self, secret: str) -> str | None: ...

    def names(self) -> set[str]: ...


def env_name(secret: str) -> str:
    """The environment variable that holds a secret."""
    return ENV_PREFIX + re.sub(r"[^A-Za-z0-9]", "_", secret).upper()


class EnvBackend:
    """``LOBFLOWS_SECRET_<NAME>`` variables, read at each lookup."""

    name = "env"

    def lookup(self, secret: str) -> str | None:
        return os.environ.get(env_name(secret))

    def names(self) -> set[str]:
        return {
            key[len(ENV_PREFIX) :].lower()
            for key in os.environ
            if key.startswith(ENV_PREFIX)
        }

    def values(self) -> list[str]:
        return [v for k, v in os.environ.items() if k.startswith(ENV_PREFIX)]


class FileBackend:
    """A YAML mapping of secret name to value, read once."""

    name = "file"

    def __init__(self, values: dict[str, str]) -> None:
        self.values = values

    @classmethod
    def read(cls, path: Path) -> FileBackend:
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
        return cls({str(k): str(v) for k, v in data.items()})

    def lookup(self, secret: str) -> str | None:
        return self.values.get(secret)

    def names(self) -> set[str]:
        return set(self.values)


class FolderBackend:
    """A folder with one file per secret, named by the secret (as container
    platforms mount them); read at each lookup, so a changed file counts."""

    name = "folder"

    def __init__(self, folder: Path) -> None:
        if not folder.is_dir():
            raise errors.ConfigurationError(
                f"{SECRETS_DIR_ENV} names {folder}, which is not a folder"
            )
        self.folder = folder

    def lookup(self, secret: str) -> str | None:
        if "/" in secret or "\\" in secret or secret.startswith("."):
            return None
        try:
            text = (self.folder / secret).read_text(encoding="utf-8")
        except (FileNotFoundError, IsADirectoryError):
            return None
        except OSError as exc:
            raise errors.ConfigurationError(
                f"cannot read secret {secret!r} from {self.folder}: {exc.strerror}",
                secret=secret,
            ) from exc
        # Files written by editors and `echo` end with a newline; it is not
        # part of the value.
        return text.rstrip("\r\n")

    def names(self) -> set[str]:
        return {
            p.name
            for p in self.folder.iterdir()
            if p.is_file() and not p.name.startswith(".")
        }


class HashicorpBackend:
    """Secrets under one path of a HashiCorp Vault KV version 2 engine.

    Each secret is a KV entry ``<path>/<name>`` whose field ``value`` (or
    only field) is the value. Read whole by `load`, held in memory.
    """

    name = "hashicorp"

    def __init__(self, *, url: str, token: str, mount: str, path: str) -> None:
        if not re.match(r"^https?://[^\s/?#]+", url):
            raise errors.ConfigurationError(
                f"{HASHICORP_URL_ENV} must be an http(s) URL (got {url!r})"
            )
        self.url = url.rstrip("/")
        self.mount = mount.strip("/")
        self.path = path.strip("/")
        self._token = token
        self._values: dict[str, str] = {}

    @classmethod
    def from_environment(
        cls, resolve: Callable[[str], str | None]
    ) -> HashicorpBackend | None:
        """The backend the environment configures, or None; `resolve` finds
        the token secret in the backends before this one."""
        url = os.environ.get(HASHICORP_URL_ENV)
        if not url:
            return None
        token_secret = os.environ.get(
            HASHICORP_TOKEN_SECRET_ENV, DEFAULT_HASHICORP_TOKEN_SECRET
        )
        token = resolve(token_secret)
        if token is None:
            raise errors.ConfigurationError(
                f"{HASHICORP_URL_ENV} is set but the secret {token_secret!r} "
                f"holding the HashiCorp Vault token is not: set {env_name(token_secret)}"
                f" or put it in the vault",
                secret=token_secret,
            )
        return cls(
            url=url,
            token=token,
            mount=os.environ.get(HASHICORP_MOUNT_ENV, "secret"),
            path=os.environ.get(HASHICORP_PATH_ENV, "lobflows"),
        )

    def lookup(self, secret: str) -> str | None:
        return self._values.get(secret)

    def names(self) -> set[str]:
        return set(self._values)

    def values(self) -> Iterable[str]:
        return self._values.values()

    async def load(self) -> None:
        """Read every secret under the path; errors name the server, not values."""
        values = await asyncio.to_thread(self._read_all)
        from lobflows.secrets import redactor  # the package imports this module

        for value in values.values():
            redactor.register(value)
        self._values = values

    def _read_all(self) -> dict[str, str]:
        try:
            import hvac
            import hvac.exceptions
            import requests
        except ImportError as exc:
            raise errors.ConfigurationError(
                "the HashiCorp Vault backend needs hvac: install lobflows[vault]"
            ) from exc
        client = hvac.Client(
            url=self.url,
            token=self._token,
            timeout=HASHICORP_TIMEOUT_SECONDS,
            strict_http=True,
        )
        kv = client.secrets.kv.v2
        try:
            keys = self._keys(kv, hvac.exceptions.InvalidPath)
            return {
                key: self._field(
                    key,
                    kv.read_secret_version(
                        path=f"{self.path}/{key}",
                        mount_point=self.mount,
                        raise_on_deleted_version=True,
                    ),
                )
                for key in keys
            }
        except hvac.exceptions.Forbidden:
            raise errors.ConfigurationError(
                f"HashiCorp Vault at {self.url} refused the token "
                f"(permission denied on {self.mount}/{self.path})"
            ) from None
        except hvac.exceptions.VaultError as exc:
            raise errors.ConfigurationError(
                f"HashiCorp Vault at {self.url} answered with an error: "
                f"{type(exc).__name__}"
            ) from None
        except requests.RequestException as exc:
            raise errors.ConfigurationError(
                f"cannot reach HashiCorp Vault at {self.url}: {type(exc).__name__}"
            ) from None

    def _keys(self, kv: Any, missing: type[Exception]) -> list[str]:
        try:
            listed = kv.list_secrets(path=self.path, mount_point=self.mount)
        except missing:
            return []  # nothing stored under the path yet
        keys = listed["data"]["keys"]
        return [k for k in keys if not k.endswith("/")]

    def _field(self, key: str, answer: dict[str, Any]) -> str:
        data = answer["data"]["data"] or {}
        if "value" in data:
            return str(data["value"])
        if len(data) == 1:
            return str(next(iter(data.values())))
        raise errors.ConfigurationError(
            f"HashiCorp Vault entry {self.path}/{key} must have a field 'value' "
            f"(found fields: {', '.join(sorted(data)) or 'none'})",
            secret=key,
        )
