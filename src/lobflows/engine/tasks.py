"""What a human task needs besides the store: its form, and signed one-click links.

A link carries a token naming the task, the person it was sent to and when
it expires, signed with HMAC-SHA256 under the secret ``task_link_key``.
Whoever holds the link acts as that person on that task, and on nothing else.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import re
import time
from dataclasses import dataclass
from typing import Any

import orjson

from lobflows import errors
from lobflows.store.tasks import TaskOps, TaskRecord

LINK_KEY_SECRET = "task_link_key"
# A link works for this long after its task's deadline (or its creation).
LINK_GRACE_SECONDS = 14 * 86400
_TOKEN_PATTERN = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")


@dataclass(frozen=True)
class LinkGrant:
    """What a verified link allows: act on one task as one person."""

    task_id: str
    user: str


class TaskLinks:
    """Signs and verifies the links in task messages."""

    def __init__(self, *, public_url: str, key: str | None) -> None:
        self.public_url = public_url.rstrip("/")
        self._key = key.encode() if key else None

    @property
    def enabled(self) -> bool:
        return self._key is not None

    def links(
        self, task_id: str, user: str, *, kind: str, expires_at: float
    ) -> dict[str, str]:
        """The links for one assignee: open (the task page), and approve/reject for approvals."""
        if self._key is None:
            raise errors.ConfigurationError(
                f"task links need the secret {LINK_KEY_SECRET!r}: add it to the secrets file"
            )
        token = self._token(task_id, user, expires_at)
        page = f"{self.public_url}/tasks/{task_id}?token={token}"
        found = {"open": page}
        if kind == "approval":
            found["approve"] = f"{page}&decision=approve"
            found["reject"] = f"{page}&decision=reject"
        return found

    def verify(
        self, task_id: str, token: str, *, now: float | None = None
    ) -> LinkGrant:
        """The grant of a token, or DecisionRefusedError if it is forged, altered or expired."""
        if self._key is None or not _TOKEN_PATTERN.match(token or ""):
            raise errors.DecisionRefusedError("this link is not valid")
        body, signature = token.split(".")
        if not hmac.compare_digest(_b64(self._sign(body)), signature):
            raise errors.DecisionRefusedError("this link is not valid")
        claims = orjson.loads(_unb64(body))
        if claims.get("t") != task_id:
            raise errors.DecisionRefusedError("this link is for another task")
        if (now if now is not None else time.time()) > claims.get("e", 0):
            raise errors.DecisionRefusedError("this link has expired")
        return LinkGrant(task_id=task_id, user=str(claims.get("u")))

    def _token(self, task_id: str, user: str, expires_at: float) -> str:
        claims = {"t": task_id, "u": user, "e": int(expires_at)}
        body = _b64(orjson.dumps(claims))
        return f"{body}.{_b64(self._sign(body))}"

    def _sign(self, body: str) -> bytes:
        assert self._key is not None
        return hmac.new(self._key, body.encode(), hashlib.sha256).digest()


def link_expiry(due_at: float | None, created_at: float) -> float:
    return (due_at if due_at is not None else created_at) + LINK_GRACE_SECONDS


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def validate_form(
    form: list[dict[str, Any]], data: dict[str, Any] | None, *, task_id: str
) -> dict[str, Any]:
    """The form's values, checked and converted; unknown fields are refused.

    Values may arrive as text (from a web form or the command line); numbers,
    booleans and dates are converted, and every problem is named at once.
    """
    data = dict(data or {})
    fields = {f["name"]: f for f in form}
    problems = [f"unknown field {name!r}" for name in data if name not in fields]
    values: dict[str, Any] = {}
    for name, field in fields.items():
        raw = data.get(name)
        if raw is None or raw == "":
            if field.get("required"):
                problems.append(f"{name}: a value is required")
            continue
        try:
            values[name] = _convert(field, raw)
        except ValueError as exc:
            problems.append(f"{name}: {exc}")
    if problems:
        raise errors.DecisionRefusedError(
            f"task {task_id}: the form is not valid: " + "; ".join(problems)
        )
    return values


def _convert(field: dict[str, Any], raw: Any) -> Any:
    kind = field.get("type", "text")
    if kind == "number":
        if isinstance(raw, bool):
            raise ValueError("expected a number")
        try:
            return float(raw) if "." in str(raw) else int(raw)
        except (TypeError, ValueError):
            raise ValueError(f"expected a number, got {raw!r}") from None
    if kind == "boolean":
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in ("true", "yes", "on", "1"):
            return True
        if text in ("false", "no", "off", "0"):
            return False
        raise ValueError(f"expected true or false, got {raw!r}")
    if kind == "date":
        try:
            return datetime.date.fromisoformat(str(raw)).isoformat()
        except ValueError:
            raise ValueError(f"expected a date as YYYY-MM-DD, got {raw!r}") from None
    if kind == "choice":
        if str(raw) not in field.get("choices", []):
            allowed = ", ".join(field.get("choices", []))
            raise ValueError(f"expected one of {allowed}, got {raw!r}")
        return str(raw)
    text = str(raw)
    if len(text) > 10_000:
        raise ValueError("longer than 10,000 characters")
    return text


def iso_time(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return moment.isoformat(timespec="seconds")


def readable_time(seconds: float | None) -> str | None:
    """A moment as people read it on a page: 2026-12-07 20:09:46 UTC."""
    if seconds is None:
        return None
    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


async def decide(
    store: TaskOps,
    task_id: str,
    *,
    by: str,
    decision: str,
    data: dict[str, Any] | None = None,
    comment: str | None = None,
) -> TaskRecord:
    """Check the form, then take the decision: the one way every surface decides."""
    task = await store.find_task(task_id)
    await store.check_decision(task, by=by, decision=decision)
    if not isinstance(data, dict | None):
        raise errors.DecisionRefusedError(
            f"task {task.id}: the form data must be a mapping of field to value"
        )
    # A rejection needs no form; required fields apply to the other decisions.
    form = (
        task.form
        if decision != "reject"
        else [{**f, "required": False} for f in task.form]
    )
    values = validate_form(form, data, task_id=task.id)
    if comment is not None and len(comment) > 10_000:
        raise errors.DecisionRefusedError(
            f"task {task.id}: the comment is longer than 10,000 characters"
        )
    return await store.decide(
        task.id, by=by, decision=decision, data=values, comment=comment or None
    )
