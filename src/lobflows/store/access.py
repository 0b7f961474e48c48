"""Users, their sessions and API tokens, and the audit log of operator actions.

The store keeps what it is given: passwords arrive hashed and tokens as
their SHA-256 digest (see `lobflows.web.credentials`); nothing here can
turn either back into the secret.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from lobflows import errors
from lobflows.store import tables
from lobflows.store.base import StoreBase

MAX_TARGET_CHARS = 500
# How stale a session's last_seen_at may get before a request refreshes it.
SESSION_SEEN_EVERY_SECONDS = 60.0


@dataclass(frozen=True)
class AuditEntry:
    """One operator action: who (actor) did what (action) to what (target), when."""

    id: int
    at: float
    actor: str
    action: str
    target: str
    detail: dict[str, Any] | None


@dataclass(frozen=True)
class UserRecord:
    id: int
    name: str
    email: str | None
    password_hash: str | None
    roles: tuple[str, ...]
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class ApiTokenRecord:
    id: int
    user: str
    name: str
    created_at: float
    last_used_at: float | None
    revoked_at: float | None

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


def _user(row: Any) -> UserRecord:
    values = dict(row._mapping)
    values["roles"] = tuple(values["roles"] or ())
    return UserRecord(**values)


class AccessOps(StoreBase):
    """Users, their sessions and API tokens, and the audit log of operator actions."""

    # -- audit log ---------------------------------------------------------

    async def record_audit(
        self,
        actor: str,
        action: str,
        target: str,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Add one entry to the audit log, committed before this returns."""
        values = {
            "at": time.time(),
            "actor": actor[:320],
            "action": action[:32],
            "target": target[:MAX_TARGET_CHARS],
            "detail": detail,
        }
        statement = tables.audit_log.insert().values(**values)
        await self._write(lambda conn: conn.execute(statement))

    async def audit_entries(
        self,
        limit: int = 100,
        actor: str | None = None,
        action: str | None = None,
    ) -> list[AuditEntry]:
        """The newest entries first, optionally of one actor or one action."""
        a = tables.audit_log
        query = sa.select(a).order_by(a.c.id.desc()).limit(limit)
        if actor is not None:
            query = query.where(a.c.actor == actor)
        if action is not None:
            query = query.where(a.c.action == action)
        async with self.engine.connect() as conn:
            rows = await conn.execute(query)
            return [AuditEntry(**row._mapping) for row in rows]

    async def latest_audit(self, action: str, target: str) -> AuditEntry | None:
        """The newest entry of one action on one target, if any."""
        a = tables.audit_log
        query = (
            sa.select(a)
            .where(a.c.action == action, a.c.target == target)
            .order_by(a.c.id.desc())
            .limit(1)
        )
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else AuditEntry(**row._mapping)

    async def failed_sign_in_times(
        self,
        *,
        since: float,
        limit: int,
        target: str | None = None,
        client: str | None = None,
    ) -> list[float]:
        """When sign-ins failed after `since`, newest first: for one target
        (``user <name>``) or from one client address, at most `limit`."""
        a = tables.audit_log
        query = (
            sa.select(a.c.at)
            .where(a.c.action == "sign_in_failed", a.c.at > since)
            .order_by(a.c.at.desc())
            .limit(limit)
        )
        if target is not None:
            query = query.where(a.c.target == target)
        if client is not None:
            query = query.where(a.c.detail["client"].as_string() == client)
        async with self.engine.connect() as conn:
            return list((await conn.execute(query)).scalars())

    # -- users -------------------------------------------------------------

    async def add_user(
        self,
        name: str,
        *,
        roles: list[str],
        email: str | None = None,
        password_hash: str | None = None,
    ) -> UserRecord:
        """Store a new user; a name or e-mail address taken, in any case, is
        refused (people sign in by name and tasks find them by address)."""
        u = tables.users
        taken = sa.func.lower(u.c.name) == name.lower()
        if email is not None:
            taken = taken | (sa.func.lower(u.c.email) == email.lower())
        existing = await self._user_where(taken)
        if existing is not None:
            same_name = existing.name.lower() == name.lower()
            what = (
                f"a user named {existing.name!r}"
                if same_name
                else f"a user with e-mail {existing.email!r} ({existing.name})"
            )
            raise errors.StoreError(f"{what} already exists")
        now = time.time()
        values = {
            "name": name,
            "email": email,
            "password_hash": password_hash,
            "roles": sorted(set(roles)),
            "created_at": now,
            "updated_at": now,
        }
        statement = tables.users.insert().values(**values)
        try:
            await self._write(lambda conn: conn.execute(statement))
        except IntegrityError:
            taken = f"a user named {name!r}" + (
                f" or with e-mail {email!r}" if email else ""
            )
            raise errors.StoreError(f"{taken} already exists") from None
        return await self.find_user(name)

    async def find_user(self, name: str) -> UserRecord:
        found = await self._user_where(tables.users.c.name == name)
        if found is None:
            raise errors.UserNotFoundError(f"no user named {name!r}")
        return found

    async def user_by_email(self, email: str) -> UserRecord | None:
        """The user with this address, compared without regard to case."""
        column = sa.func.lower(tables.users.c.email)
        return await self._user_where(column == email.strip().lower())

    async def users(self) -> list[UserRecord]:
        u = tables.users
        async with self.engine.connect() as conn:
            rows = await conn.execute(sa.select(u).order_by(u.c.name))
            return [_user(row) for row in rows]

    async def _user_where(self, condition: Any) -> UserRecord | None:
        query = sa.select(tables.users).where(condition)
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else _user(row)

    async def remove_user(self, name: str) -> None:
        """Delete a user; their API tokens and sessions go with them."""
        user = await self.find_user(name)
        await self._write(lambda conn: _delete_user(conn, user.id))

    async def set_password_hash(self, name: str, password_hash: str | None) -> None:
        """Set or clear a user's password; every session of theirs ends."""
        await self._update_user(name, password_hash=password_hash)
        user = await self.find_user(name)
        await self._write(lambda conn: _end_sessions(conn, user.id, time.time()))

    async def set_roles(self, name: str, roles: list[str]) -> UserRecord:
        await self._update_user(name, roles=sorted(set(roles)))
        return await self.find_user(name)

    async def _update_user(self, name: str, **values: Any) -> None:
        u = tables.users
        statement = (
            u.update().where(u.c.name == name).values(updated_at=time.time(), **values)
        )
        changed = await self._write(lambda conn: conn.execute(statement).rowcount)
        if changed != 1:
            raise errors.UserNotFoundError(f"no user named {name!r}")

    # -- sessions ----------------------------------------------------------

    async def start_web_session(
        self, user: str, *, session_hash: str, forget_before: float
    ) -> None:
        """Store a signed-in session by its id's digest.

        The user's sessions that ended, or began before `forget_before`
        (past the session lifetime), are deleted on the way.
        """
        owner = await self.find_user(user)
        s = tables.web_sessions
        now = time.time()
        stale = s.delete().where(
            s.c.user_id == owner.id,
            sa.or_(s.c.ended_at.is_not(None), s.c.created_at < forget_before),
        )
        insert = s.insert().values(
            id=session_hash, user_id=owner.id, created_at=now, last_seen_at=now
        )

        def write(conn: sa.Connection) -> None:
            conn.execute(stale)
            conn.execute(insert)

        await self._write(write)

    async def user_by_session_hash(
        self, session_hash: str, *, started_after: float
    ) -> UserRecord | None:
        """The user of a live session begun after `started_after`, else None.

        One lookup by primary key; the session's last_seen_at is refreshed,
        without waiting, when it is more than a minute old.
        """
        s, u = tables.web_sessions, tables.users
        query = (
            sa.select(u, s.c.last_seen_at.label("session_seen_at"))
            .join(s, s.c.user_id == u.c.id)
            .where(
                s.c.id == session_hash,
                s.c.ended_at.is_(None),
                s.c.created_at > started_after,
            )
        )
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return None
        now = time.time()
        if now - row.session_seen_at > SESSION_SEEN_EVERY_SECONDS:
            touch = s.update().where(s.c.id == session_hash).values(last_seen_at=now)
            await self._write(lambda conn: conn.execute(touch), wait=False)
        values = {k: v for k, v in row._mapping.items() if k != "session_seen_at"}
        values["roles"] = tuple(values["roles"] or ())
        return UserRecord(**values)

    async def end_web_session(self, session_hash: str) -> None:
        """End one session (sign-out); a session already over stays as it was."""
        s = tables.web_sessions
        statement = (
            s.update()
            .where(s.c.id == session_hash, s.c.ended_at.is_(None))
            .values(ended_at=time.time())
        )
        await self._write(lambda conn: conn.execute(statement))

    # -- API tokens --------------------------------------------------------

    async def add_api_token(self, user: str, *, name: str, token_hash: str) -> None:
        """Store a token's digest under a label unique among the user's live tokens."""
        owner = await self.find_user(user)
        t = tables.api_tokens
        taken = await self._live_token_id(owner.id, name)
        if taken is not None:
            raise errors.StoreError(
                f"user {user!r} already has a token named {name!r}; "
                "revoke it first or choose another name"
            )
        statement = t.insert().values(
            user_id=owner.id, name=name, token_hash=token_hash, created_at=time.time()
        )
        await self._write(lambda conn: conn.execute(statement))

    async def api_tokens(self, user: str | None = None) -> list[ApiTokenRecord]:
        """Tokens, live and revoked, by user then label; never their digests."""
        t, u = tables.api_tokens, tables.users
        query = (
            sa.select(
                t.c.id,
                u.c.name.label("user"),
                t.c.name,
                t.c.created_at,
                t.c.last_used_at,
                t.c.revoked_at,
            )
            .join(u, u.c.id == t.c.user_id)
            .order_by(u.c.name, t.c.name, t.c.id)
        )
        if user is not None:
            query = query.where(u.c.name == user)
        async with self.engine.connect() as conn:
            rows = await conn.execute(query)
            return [ApiTokenRecord(**row._mapping) for row in rows]

    async def revoke_api_token(self, user: str, name: str) -> None:
        owner = await self.find_user(user)
        token_id = await self._live_token_id(owner.id, name)
        if token_id is None:
            raise errors.UserNotFoundError(
                f"user {user!r} has no live token named {name!r}"
            )
        t = tables.api_tokens
        statement = t.update().where(t.c.id == token_id).values(revoked_at=time.time())
        await self._write(lambda conn: conn.execute(statement))

    async def user_by_token_hash(self, token_hash: str) -> UserRecord | None:
        """The owner of a live token with this digest, noting when it was used."""
        t, u = tables.api_tokens, tables.users
        query = (
            sa.select(u, t.c.id.label("token_id"))
            .join(t, t.c.user_id == u.c.id)
            .where(t.c.token_hash == token_hash, t.c.revoked_at.is_(None))
        )
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return None
        touch = (
            t.update().where(t.c.id == row.token_id).values(last_used_at=time.time())
        )
        # Queued, not waited for: a request does not wait on this bookkeeping.
        await self._write(lambda conn: conn.execute(touch), wait=False)
        values = {k: v for k, v in row._mapping.items() if k != "token_id"}
        values["roles"] = tuple(values["roles"] or ())
        return UserRecord(**values)

    async def _live_token_id(self, user_id: int, name: str) -> int | None:
        t = tables.api_tokens
        query = sa.select(t.c.id).where(
            t.c.user_id == user_id, t.c.name == name, t.c.revoked_at.is_(None)
        )
        async with self.engine.connect() as conn:
            return (await conn.execute(query)).scalar()


def _delete_user(conn: sa.Connection, user_id: int) -> None:
    # Tokens and sessions first: SQLite enforces the cascade only with
    # foreign keys on.
    conn.execute(
        tables.api_tokens.delete().where(tables.api_tokens.c.user_id == user_id)
    )
    conn.execute(
        tables.web_sessions.delete().where(tables.web_sessions.c.user_id == user_id)
    )
    conn.execute(tables.users.delete().where(tables.users.c.id == user_id))


def _end_sessions(conn: sa.Connection, user_id: int, now: float) -> None:
    s = tables.web_sessions
    conn.execute(
        s.update()
        .where(s.c.user_id == user_id, s.c.ended_at.is_(None))
        .values(ended_at=now)
    )
