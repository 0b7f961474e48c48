"""The secrets vault: encrypted values, their versions and use.

The store holds ciphertext only; the master key that opens it never comes
here (see `lobflows.secrets.vault`). Versions are kept: a rotation adds one
and gives the one it replaces a grace period.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from lobflows import errors
from lobflows.secrets import backends
from lobflows.store import tables
from lobflows.store.base import StoreBase, lock_name


@dataclass(frozen=True)
class SecretRecord:
    """A secret in the vault, without its value."""

    name: str
    rotate_every_days: int | None
    created_at: float
    rotated_at: float | None
    version: int  # the current one


@dataclass(frozen=True)
class SecretVersionRecord:
    """One encrypted value of a secret."""

    name: str
    version: int
    ciphertext: str
    created_at: float
    superseded_at: float | None  # None for the current version
    grace_until: float | None


@dataclass(frozen=True)
class SecretUseRecord:
    """What uses a secret, and when it was last read."""

    name: str
    used_by: list[str]
    last_used_at: float | None


class SecretOps(StoreBase):
    """The secrets vault: encrypted values, their versions and use."""

    async def secret_versions(self) -> list[SecretVersionRecord]:
        """Every stored version of every secret, oldest first per secret."""
        v = tables.secret_versions
        query = sa.select(v).order_by(v.c.name, v.c.version)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_version_record(row) for row in rows]

    async def secret_records(self) -> list[SecretRecord]:
        """Every secret in the vault, by name."""
        s, v = tables.secrets, tables.secret_versions
        current = sa.func.max(v.c.version).label("version")
        query = (
            sa.select(s, current)
            .join(v, v.c.name == s.c.name)
            .group_by(s.c.name)
            .order_by(s.c.name)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [
            SecretRecord(
                name=row.name,
                rotate_every_days=row.rotate_every_days,
                created_at=row.created_at,
                rotated_at=row.rotated_at,
                version=row.version,
            )
            for row in rows
        ]

    async def add_secret(
        self, name: str, ciphertext: str, *, rotate_every_days: int | None
    ) -> None:
        """Store a new secret as version 1; refuses a name already in the
        vault, and one whose environment variable another secret there has
        (``a-b`` and ``A_B`` are both ``LOBFLOWS_SECRET_A_B``)."""
        s, v = tables.secrets, tables.secret_versions

        def write(conn: sa.Connection) -> None:
            now = time.time()
            lock_name(conn, self.is_sqlite, f"secret:{name}")
            if _exists(conn, name):
                raise errors.ConfigurationError(
                    f"secret {name!r} is already in the vault; "
                    f"rotate it to give it a new value",
                    secret=name,
                )
            _refuse_shared_env_name(conn, name)
            conn.execute(
                s.insert().values(
                    name=name, rotate_every_days=rotate_every_days, created_at=now
                )
            )
            conn.execute(
                v.insert().values(
                    name=name, version=1, ciphertext=ciphertext, created_at=now
                )
            )

        await self._write(write)

    async def rotate_secret(
        self,
        name: str,
        ciphertext: str,
        *,
        grace_seconds: float,
        rotate_every_days: int | None = None,
    ) -> int:
        """Add a version that becomes current now; the one it replaces stays
        valid for runs started before, for `grace_seconds`. Returns the new
        version number."""
        s, v = tables.secrets, tables.secret_versions

        def write(conn: sa.Connection) -> int:
            now = time.time()
            lock_name(conn, self.is_sqlite, f"secret:{name}")
            if not _exists(conn, name):
                raise _not_in_vault(name)
            current = conn.execute(
                sa.select(sa.func.max(v.c.version)).where(v.c.name == name)
            ).scalar_one()
            conn.execute(
                v.update()
                .where(v.c.name == name, v.c.version == current)
                .values(superseded_at=now, grace_until=now + grace_seconds)
            )
            conn.execute(
                v.insert().values(
                    name=name,
                    version=current + 1,
                    ciphertext=ciphertext,
                    created_at=now,
                )
            )
            policy: dict[str, Any] = {"rotated_at": now}
            if rotate_every_days is not None:
                policy["rotate_every_days"] = rotate_every_days
            conn.execute(s.update().where(s.c.name == name).values(**policy))
            return int(current) + 1

        version = await self._write(write)
        assert version is not None
        return version

    async def remove_secret(self, name: str) -> None:
        """Delete a secret and every version of it."""
        s, v = tables.secrets, tables.secret_versions

        def write(conn: sa.Connection) -> None:
            if not _exists(conn, name):
                raise _not_in_vault(name)
            # Versions first: SQLite enforces the cascade only when told to.
            conn.execute(v.delete().where(v.c.name == name))
            conn.execute(s.delete().where(s.c.name == name))

        await self._write(write)

    async def rekey_secrets(
        self, reencrypt: Callable[[SecretVersionRecord], str]
    ) -> list[SecretVersionRecord]:
        """Replace the ciphertext of every version of every secret with what
        `reencrypt` makes of it, in one transaction: when it raises for any
        version, no version changes. Returns the versions as they were."""
        s, v = tables.secrets, tables.secret_versions

        def write(conn: sa.Connection) -> list[SecretVersionRecord]:
            names = conn.execute(sa.select(s.c.name).order_by(s.c.name)).scalars()
            # Rotations of these secrets wait until the new ciphertext is in
            # (sorted, so two such transactions cannot deadlock).
            for name in names.all():
                lock_name(conn, self.is_sqlite, f"secret:{name}")
            rows = conn.execute(sa.select(v).order_by(v.c.name, v.c.version)).all()
            done = []
            for row in rows:
                record = _version_record(row)
                ciphertext = reencrypt(record)
                conn.execute(
                    v.update().where(v.c.id == row.id).values(ciphertext=ciphertext)
                )
                done.append(record)
            return done

        rekeyed = await self._write(write)
        assert rekeyed is not None
        return rekeyed

    async def secret_uses(self) -> dict[str, SecretUseRecord]:
        """What uses each secret and when it was last read, by name."""
        u = tables.secret_usage
        async with self.engine.connect() as conn:
            rows = (await conn.execute(sa.select(u))).all()
        return {
            row.name: SecretUseRecord(
                name=row.name,
                used_by=list(row.used_by or []),
                last_used_at=row.last_used_at,
            )
            for row in rows
        }

    async def record_secret_users(self, used_by: dict[str, list[str]]) -> None:
        """Replace what uses each secret with what the loaded flows and
        connections declare; last-used times stay."""
        u = tables.secret_usage

        def write(conn: sa.Connection) -> None:
            lock_name(conn, self.is_sqlite, "secret_usage")
            known = set(conn.execute(sa.select(u.c.name)).scalars())
            conn.execute(u.update().where(u.c.name.not_in(used_by)).values(used_by=[]))
            for name, users in used_by.items():
                if name in known:
                    conn.execute(
                        u.update().where(u.c.name == name).values(used_by=users)
                    )
                else:
                    conn.execute(u.insert().values(name=name, used_by=users))

        await self._write(write)

    async def record_secret_reads(self, last_used: dict[str, float]) -> None:
        """Move each secret's last-used time forward (never back)."""
        u = tables.secret_usage

        def write(conn: sa.Connection) -> None:
            lock_name(conn, self.is_sqlite, "secret_usage")
            known = set(conn.execute(sa.select(u.c.name)).scalars())
            for name, at in last_used.items():
                if name not in known:
                    conn.execute(
                        u.insert().values(name=name, used_by=[], last_used_at=at)
                    )
                    continue
                later = sa.func.coalesce(u.c.last_used_at, 0.0) < at
                conn.execute(
                    u.update().where(u.c.name == name, later).values(last_used_at=at)
                )

        await self._write(write)


def _version_record(row: Any) -> SecretVersionRecord:
    return SecretVersionRecord(
        name=row.name,
        version=row.version,
        ciphertext=row.ciphertext,
        created_at=row.created_at,
        superseded_at=row.superseded_at,
        grace_until=row.grace_until,
    )


def _exists(conn: sa.Connection, name: str) -> bool:
    s = tables.secrets
    found = conn.execute(sa.select(s.c.name).where(s.c.name == name)).first()
    return found is not None


def _refuse_shared_env_name(conn: sa.Connection, name: str) -> None:
    variable = backends.env_name(name)
    names = conn.execute(sa.select(tables.secrets.c.name)).scalars()
    other = next((n for n in names if backends.env_name(n) == variable), None)
    if other is not None:
        raise errors.ConfigurationError(
            f"secret {name!r} would share the environment variable {variable} "
            f"with secret {other!r}, already in the vault; use that name or "
            f"pick one that differs in more than case and '-', '_' or '.'",
            secret=name,
        )


def _not_in_vault(name: str) -> errors.SecretNotFoundError:
    return errors.SecretNotFoundError(
        f"secret {name!r} is not in the vault; `lobflows secrets list` shows "
        f"the secrets there",
        secret=name,
    )
