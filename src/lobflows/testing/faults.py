"""Queued faults shared by the HTTP stand-ins: forced answers, latency and drops.

A fault's ``match`` is ``"[METHOD] /path-glob"``; without it the fault applies
to the owner's default scope (for example any ``/api`` path). Trailing slashes
are ignored on both sides of a match.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from lobflows.testing.servers import DisconnectAfterHeaders

__all__ = ["Fault", "FaultQueue", "apply_faults", "fault_routes", "under"]

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "*")

Scope = Callable[[str], bool]
_N = TypeVar("_N", int, float)


def under(prefix: str) -> Scope:
    """Return a scope holding `prefix` and every path below it."""
    prefix = prefix.rstrip("/")
    return lambda path: path == prefix or path.startswith(prefix + "/")


def _anywhere(path: str) -> bool:
    return True


def _trim(path: str) -> str:
    return path.rstrip("/") or "/"


def split_match(match: str) -> tuple[str, str]:
    """Split ``"[METHOD] /path-glob"`` into an upper-case method and a glob."""
    first, _, rest = match.strip().partition(" ")
    if first.upper() in METHODS and rest.strip():
        return first.upper(), _trim(rest.strip())
    return "*", _trim(match.strip())


@dataclass
class Fault:
    """A queued forced answer (or latency), or a post-processing drop when `after`."""

    remaining: int = 1
    status: int | None = None
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    match: str | None = None
    delay: float = 0.0
    after: bool = False
    scope: Scope = field(default=_anywhere, kw_only=True, repr=False, compare=False)

    def matches(self, method: str, path: str) -> bool:
        """Tell whether this fault applies to a request."""
        if not self.match:
            return self.scope(path)
        wanted_method, pattern = split_match(self.match)
        if wanted_method not in ("*", method.upper()):
            return False
        return fnmatch.fnmatchcase(_trim(path), pattern)

    def describe(self) -> dict[str, Any]:
        """Return a JSON-ready summary."""
        return {
            "kind": "drop" if self.after else "fault",
            "remaining": self.remaining,
            "status": self.status,
            "match": self.match,
            "delay": self.delay,
        }

    def response_headers(self) -> dict[str, str]:
        """Return the headers of the forced answer, with a default Retry-After."""
        headers = dict(self.headers)
        if self.status == 429:
            headers.setdefault("Retry-After", "1")
        return headers


class FaultQueue:
    """Thread-safe queue of pending faults, consumed in order of arrival."""

    def __init__(
        self, scope: Scope, *, text_body: bool = False, drop_status: bool = True
    ) -> None:
        # text_body: bodies must be plain text; drop_status: a drop may answer
        # with a status after processing instead of disconnecting.
        self.scope = scope
        self.text_body = text_body
        self.drop_status = drop_status
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def __iter__(self) -> Iterator[Fault]:
        with self._lock:
            return iter(list(self._faults))

    def __len__(self) -> int:
        with self._lock:
            return len(self._faults)

    def append(self, fault: Fault) -> Fault:
        """Queue a built fault and return it."""
        with self._lock:
            self._faults.append(fault)
        return fault

    def add(
        self,
        status: int | None = None,
        *,
        count: int = 1,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        match: str | None = None,
        delay: float = 0.0,
    ) -> Fault:
        """Answer the next `count` matching requests with `status` instead."""
        fault = Fault(
            count, status, body, dict(headers or {}), match, delay, scope=self.scope
        )
        return self.append(fault)

    def add_drop(
        self,
        *,
        count: int = 1,
        match: str | None = None,
        status: int | None = None,
        body: Any = None,
    ) -> Fault:
        """Process the next `count` matching requests, then cut the connection."""
        fault = Fault(count, status, body, match=match, after=True, scope=self.scope)
        return self.append(fault)

    def take(self, method: str, path: str, *, after: bool) -> Fault | None:
        """Consume one use of the first pending fault matching a request."""
        with self._lock:
            for fault in self._faults:
                if fault.after == after and fault.matches(method, path):
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def describe(self) -> list[dict[str, Any]]:
        """Return JSON-ready summaries of the pending faults."""
        with self._lock:
            return [f.describe() for f in self._faults]

    def clear(self) -> None:
        """Forget all pending faults."""
        with self._lock:
            self._faults.clear()

    def from_json(self, payload: Any, *, after: bool) -> Fault:
        """Build (without queuing) a fault from a control-route JSON body."""
        if not isinstance(payload, dict):
            raise ValueError("expected a JSON object")
        status = _optional_int(payload, "status")
        delay = _number(payload, "delay", float, 0.0)
        if status is None and not after and not delay:
            raise ValueError("give a status, a delay, or both")
        if status is not None and not 100 <= status <= 599:
            raise ValueError("status must be an HTTP status between 100 and 599")
        body = payload.get("body")
        if self.text_body and body is not None and not isinstance(body, str):
            raise ValueError("body must be plain text")
        count = _number(payload, "count", int, 1)
        if count < 1:
            raise ValueError("count must be at least 1")
        if delay < 0:
            raise ValueError("delay must not be negative")
        return Fault(
            remaining=count,
            status=None if after and not self.drop_status else status,
            body=body,
            headers=_headers(payload),
            match=_match(payload),
            delay=delay,
            after=after,
            scope=self.scope,
        )


def _number(
    payload: Mapping[str, Any], key: str, kind: Callable[[Any], _N], default: _N
) -> _N:
    value = payload.get(key, default)
    if isinstance(value, bool):
        raise ValueError(f"{key} must be a number")
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ValueError(f"{key} must be a number") from None


def _optional_int(payload: Mapping[str, Any], key: str) -> int | None:
    if payload.get(key) is None:
        return None
    return _number(payload, key, int, 0)


def _headers(payload: Mapping[str, Any]) -> dict[str, str]:
    headers = payload.get("headers") or {}
    if not isinstance(headers, dict):
        raise ValueError("headers must be an object")
    return {str(k): str(v) for k, v in headers.items()}


def _match(payload: Mapping[str, Any]) -> str | None:
    match = payload.get("match")
    if match is not None and not isinstance(match, str):
        raise ValueError('match must be a string like "POST /path-glob"')
    return match


async def apply_faults(
    queue: FaultQueue,
    request: Request,
    serve: Callable[[], Awaitable[Response]],
    forced: Callable[[Fault], Response],
) -> Response:
    """Serve a request through the pending faults: delay, force, or drop after."""
    method, path = request.method, request.url.path
    fault = queue.take(method, path, after=False)
    if fault is not None:
        await asyncio.sleep(fault.delay)
        if fault.status is not None:
            return forced(fault)
    drop = queue.take(method, path, after=True)
    response = await serve()
    if drop is None:
        return response
    await asyncio.sleep(drop.delay)
    if drop.status is not None:
        return forced(drop)
    return DisconnectAfterHeaders(response)


def fault_routes(queue: FaultQueue) -> list[Route]:
    """Return the ``POST /__standin__/faults`` and ``/drop`` control routes."""

    async def add_fault(request: Request) -> Response:
        return await _queue(request, after=False)

    async def add_drop(request: Request) -> Response:
        return await _queue(request, after=True)

    async def _queue(request: Request, *, after: bool) -> Response:
        try:
            payload = json.loads(await request.body() or b"{}")
            fault = queue.from_json(payload, after=after)
        except (ValueError, TypeError) as exc:
            return JSONResponse({"error": str(exc)}, 400)
        return JSONResponse(queue.append(fault).describe())

    return [
        Route("/__standin__/faults", add_fault, methods=["POST"]),
        Route("/__standin__/drop", add_drop, methods=["POST"]),
    ]
