"""The secret inventory: every secret, where it lives, who uses it, and
whether it is overdue for rotation. Never a value."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

from lobflows.secrets import SecretStore, env_name
from lobflows.secrets import usage as secret_usage

SECONDS_PER_DAY = 86_400.0


@dataclass(frozen=True)
class SecretInfo:
    """What the inventory says of one secret."""

    name: str
    # env | vault | file | folder | hashicorp, or "missing" when something
    # uses the secret and no backend has it.
    backend: str
    version: int | None  # vault secrets only
    created_at: float | None  # seconds since the epoch; vault secrets only
    rotated_at: float | None
    last_used_at: float | None
    rotate_every_days: int | None
    overdue: bool  # older than its rotation policy
    used_by: list[str] = field(default_factory=list)


async def secret_inventory(runtime: Any) -> list[SecretInfo]:
    """The inventory of a running installation, by secret name."""
    used_by = secret_usage.declared_users(runtime.engine.project)
    return await build_inventory(runtime.store, runtime.secrets, used_by=used_by)


async def build_inventory(
    store: Any,
    secrets: SecretStore,
    *,
    used_by: dict[str, list[str]] | None = None,
    now: float | None = None,
) -> list[SecretInfo]:
    """The inventory from the store, the backends and what uses each secret
    (by default, what the last process to start recorded)."""
    now = time.time() if now is None else now
    records = {r.name: r for r in await store.secret_records()}
    uses = await store.secret_uses()
    if used_by is None:
        used_by = {name: use.used_by for name, use in uses.items() if use.used_by}
    pending = secrets.recent_reads()
    names = _inventory_names(secrets, set(records) | set(used_by))
    infos = []
    for name in sorted(names):
        record = records.get(name)
        use = uses.get(name)
        read_times = [pending.get(name), use.last_used_at if use else None]
        known_reads = [t for t in read_times if t is not None]
        policy = record.rotate_every_days if record else None
        infos.append(
            SecretInfo(
                name=name,
                backend=_backend(secrets, name, in_vault=record is not None),
                version=record.version if record else None,
                created_at=record.created_at if record else None,
                rotated_at=record.rotated_at if record else None,
                last_used_at=max(known_reads) if known_reads else None,
                rotate_every_days=policy,
                overdue=record is not None and is_overdue(record, now),
                used_by=list(used_by.get(name, [])),
            )
        )
    return infos


def is_overdue(record: Any, now: float) -> bool:
    """Older than its rotation policy, counted from its last rotation."""
    if record.rotate_every_days is None:
        return False
    since = record.rotated_at or record.created_at
    return now - since > record.rotate_every_days * SECONDS_PER_DAY


def _inventory_names(secrets: SecretStore, named: set[str]) -> set[str]:
    """Known names, without the lower-cased spelling of an environment
    variable that already stands for a name in the set."""
    found = named | set(secrets.names())
    spelled = {env_name(n) for n in named}
    return {
        n
        for n in found
        if n in named or n not in secrets.env_names() or env_name(n) not in spelled
    }


def _backend(secrets: SecretStore, name: str, *, in_vault: bool) -> str:
    # The environment wins over the vault: a variable set for the process
    # shadows the stored value.
    if env_name(name) in os.environ:
        return "env"
    if in_vault:
        return "vault"
    return secrets.backend_of(name) or "missing"
