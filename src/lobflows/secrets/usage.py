"""Which connections and flows use each secret, and when each was last read.

Use is declared: a connection setting whose name ends in ``secret`` holds
a secret's name, a webhook trigger names its signature secret, and flows
that send task links use ``task_link_key``. Reads are noted in memory by
`SecretStore.get` and written to the store by `keep_fresh` every few
seconds, not once per read.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from lobflows.engine.tasks import LINK_KEY_SECRET
from lobflows.spec import models
from lobflows.spec.loader import Project

log = logging.getLogger(__name__)
REFRESH_INTERVAL_SECONDS = 5.0
REFRESH_INTERVAL_ENV = "LOBFLOWS_SECRETS_REFRESH_SECONDS"


def declared_users(project: Project) -> dict[str, list[str]]:
    """What uses each secret: ``connection <name>`` and ``flow <name> (<how>)``."""
    users: dict[str, list[str]] = {}
    for connection, settings in sorted(project.connections.items()):
        for secret in sorted(set(_secret_names(settings or {}))):
            users.setdefault(secret, []).append(f"connection {connection}")
    for name, loaded in sorted(project.flows.items()):
        hook = loaded.spec.trigger.webhook
        if hook is not None and hook.signature is not None:
            users.setdefault(hook.signature.secret, []).append(
                f"flow {name} (webhook signature)"
            )
        if _sends_task_links(loaded.spec):
            users.setdefault(LINK_KEY_SECRET, []).append(f"flow {name} (task links)")
    return users


def _secret_names(value: Any) -> list[str]:
    """Values of keys ending in ``secret``, anywhere in connection settings."""
    found: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if str(key).endswith("secret") and isinstance(item, str):
                found.append(item)
            else:
                found += _secret_names(item)
    elif isinstance(value, list):
        for item in value:
            found += _secret_names(item)
    return found


def _sends_task_links(flow: models.Flow) -> bool:
    for step in models.walk_steps(flow.steps):
        notify = step.task.notify if isinstance(step, models.TaskStep) else None
        if notify is not None and "task.links" in str(notify.with_):
            return True
    return False


async def flush_reads(secrets: Any, store: Any) -> None:
    """Write the last-used times noted since the last flush."""
    reads = secrets.take_reads()
    if not reads:
        return
    try:
        await store.record_secret_reads(reads)
    except Exception:
        secrets.put_back_reads(reads)
        raise


async def keep_fresh(
    secrets: Any,
    store: Any,
    *,
    interval_seconds: float | None = None,
) -> None:
    """Reload the vault (and HashiCorp Vault) and flush last-used times,
    every few seconds (``LOBFLOWS_SECRETS_REFRESH_SECONDS``, default 5),
    until cancelled."""
    if interval_seconds is None:
        interval_seconds = refresh_interval_seconds()
    while True:
        await asyncio.sleep(interval_seconds)
        try:
            await refresh_once(secrets, store)
        except Exception as exc:
            # The values loaded before stay in use; the next pass tries again.
            log.warning(
                "Secrets could not be refreshed: %s",
                exc,
                extra={"event": "secrets_refresh_failed"},
            )


def refresh_interval_seconds() -> float:
    raw = os.environ.get(REFRESH_INTERVAL_ENV)
    try:
        seconds = float(raw) if raw else REFRESH_INTERVAL_SECONDS
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        log.warning(
            "%s must be a positive number of seconds (got %r); using %s",
            REFRESH_INTERVAL_ENV,
            raw,
            REFRESH_INTERVAL_SECONDS,
            extra={"event": "secrets_refresh_interval_invalid"},
        )
        return REFRESH_INTERVAL_SECONDS
    return seconds


async def refresh_once(secrets: Any, store: Any) -> None:
    if secrets.vault is not None:
        await secrets.vault.refresh()
    if secrets.hashicorp is not None:
        await secrets.hashicorp.load()
    await flush_reads(secrets, store)
