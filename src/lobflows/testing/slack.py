"""Stand-in for Slack incoming webhooks: plain-text answers, recorded messages.

Control endpoints live under ``/__standin__/`` and need no authentication;
see `create_slack_app`.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import threading
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from lobflows.testing.servers import (
    DisconnectAfterHeaders,
    hide_simulated_disconnects,
)

__all__ = ["SlackFault", "SlackMessage", "SlackState", "create_slack_app"]

# Default plain-text body of a forced response, by status.
_DEFAULT_ERRORS: dict[int, str] = {
    400: "invalid_payload",
    403: "action_prohibited",
    404: "channel_not_found",
    410: "channel_is_archived",
    429: "rate_limited",
    500: "rollup_error",
    503: "service_unavailable",
}
_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "*")


def _text(body: str, status: int, headers: dict[str, str] | None = None) -> Response:
    # Slack sends "text/html" without a charset; Starlette would add one.
    return Response(
        body.encode(), status, headers={"content-type": "text/html", **(headers or {})}
    )


@dataclass(frozen=True)
class SlackMessage:
    """One accepted webhook post."""

    path: str
    payload: dict[str, Any]
    received_at: datetime

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {
            "path": self.path,
            "payload": self.payload,
            "received_at": self.received_at.isoformat(),
        }


@dataclass
class SlackFault:
    """A queued forced answer, or a post-processing disconnect when `after`."""

    remaining: int = 1
    status: int | None = None
    body: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    match: str | None = None
    delay: float = 0.0
    after: bool = False

    def matches(self, method: str, path: str) -> bool:
        """Tell whether this fault applies to a request."""
        if not self.match:
            return path.startswith("/services/")
        first, _, rest = self.match.strip().partition(" ")
        wanted_method, pattern = "*", self.match.strip()
        if first.upper() in _METHODS and rest.strip():
            wanted_method, pattern = first.upper(), rest.strip()
        if wanted_method not in ("*", method.upper()):
            return False
        return fnmatch.fnmatchcase(path, pattern)

    def describe(self) -> dict[str, Any]:
        """Return a JSON-ready summary."""
        return {
            "kind": "drop" if self.after else "fault",
            "remaining": self.remaining,
            "status": self.status,
            "match": self.match,
            "delay": self.delay,
        }

    def response(self) -> Response:
        """Build the forced plain-text answer."""
        assert self.status is not None
        headers = dict(self.headers)
        if self.status == 429:
            headers.setdefault("Retry-After", "1")
        body = self.body
        if body is None:
            body = _DEFAULT_ERRORS.get(self.status, "error")
        return _text(body, self.status, headers)


class SlackState:
    """Recorded messages, request counters and queued faults of one stand-in."""

    def __init__(self, *, webhook_path_secret: str) -> None:
        self.webhook_path_secret = webhook_path_secret.strip("/")
        self.lock = threading.RLock()
        self.messages: list[SlackMessage] = []
        self.request_counts: Counter[str] = Counter()
        self.faults: list[SlackFault] = []

    def reset(self) -> None:
        """Forget messages, counters and faults."""
        with self.lock:
            self.messages.clear()
            self.request_counts.clear()
            self.faults.clear()

    def add_fault(
        self,
        status: int | None = None,
        *,
        count: int = 1,
        body: str | None = None,
        headers: dict[str, str] | None = None,
        match: str | None = None,
        delay: float = 0.0,
    ) -> SlackFault:
        """Answer the next `count` matching posts with `status` and a text body."""
        fault = SlackFault(count, status, body, dict(headers or {}), match, delay)
        with self.lock:
            self.faults.append(fault)
        return fault

    def add_drop(self, *, count: int = 1, match: str | None = None) -> SlackFault:
        """Record the next `count` matching posts, then cut the connection."""
        fault = SlackFault(count, match=match, after=True)
        with self.lock:
            self.faults.append(fault)
        return fault

    def take_fault(self, method: str, path: str, *, after: bool) -> SlackFault | None:
        """Consume one use of the first pending fault matching a request."""
        with self.lock:
            for fault in self.faults:
                if fault.after == after and fault.matches(method, path):
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self.faults.remove(fault)
                    return fault
        return None

    def record(self, path: str, payload: dict[str, Any]) -> SlackMessage:
        """Store one accepted message."""
        message = SlackMessage(path, payload, datetime.now(UTC))
        with self.lock:
            self.messages.append(message)
        return message

    def stats(self) -> dict[str, Any]:
        """Return request counts, the message count and pending faults."""
        with self.lock:
            return {
                "requests": dict(self.request_counts),
                "messages": len(self.messages),
                "faults": [f.describe() for f in self.faults],
            }


def _parse_payload(raw: bytes, content_type: str) -> dict[str, Any] | None:
    """Return the posted JSON object, or None when it cannot be read."""
    try:
        if content_type.startswith("application/x-www-form-urlencoded"):
            text = dict(parse_qsl(raw.decode())).get("payload")
            payload = json.loads(text) if text is not None else None
        else:
            payload = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    return payload if isinstance(payload, dict) else None


def _payload_error(payload: dict[str, Any]) -> str | None:
    """Return Slack's error code for a payload it would refuse, if any."""
    if not any(payload.get(k) for k in ("text", "blocks", "attachments")):
        return "no_text"
    blocks = payload.get("blocks")
    if blocks is not None and not isinstance(blocks, list):
        return "invalid_blocks_format"
    if isinstance(blocks, list) and not all(
        isinstance(b, dict) and isinstance(b.get("type"), str) for b in blocks
    ):
        return "invalid_blocks"
    return None


class _Webhooks:
    """Webhook handler bound to one `SlackState`."""

    def __init__(self, state: SlackState) -> None:
        self.state = state

    async def handle(self, request: Request) -> Response:
        """Count, apply faults, then accept or refuse one post."""
        method, path = request.method, request.url.path
        with self.state.lock:
            self.state.request_counts[f"{method} {path}"] += 1
        fault = self.state.take_fault(method, path, after=False)
        if fault is not None:
            await asyncio.sleep(fault.delay)
            if fault.status is not None:
                return fault.response()
        drop = self.state.take_fault(method, path, after=True)
        response = await self._accept(request)
        if drop is None:
            return response
        await asyncio.sleep(drop.delay)
        return DisconnectAfterHeaders(response)

    async def _accept(self, request: Request) -> Response:
        secret = request.path_params["path"].strip("/")
        if secret != self.state.webhook_path_secret:
            return _text("no_service", 404)
        content_type = request.headers.get("content-type", "")
        payload = _parse_payload(await request.body(), content_type)
        if payload is None:
            return _text("invalid_payload", 400)
        error = _payload_error(payload)
        if error is not None:
            return _text(error, 400)
        self.state.record(request.url.path, payload)
        return _text("ok", 200)


def _control_routes(state: SlackState) -> list[Route]:
    async def add_fault(request: Request) -> Response:
        return await _queue(request, after=False)

    async def add_drop(request: Request) -> Response:
        return await _queue(request, after=True)

    async def _queue(request: Request, *, after: bool) -> Response:
        try:
            fault = _fault_from_json(json.loads(await request.body() or b"{}"), after)
        except (ValueError, TypeError) as exc:
            return JSONResponse({"error": str(exc)}, 400)
        with state.lock:
            state.faults.append(fault)
        return JSONResponse(fault.describe())

    async def messages(request: Request) -> Response:
        with state.lock:
            listed = [m.to_json() for m in state.messages]
        return JSONResponse(listed)

    async def stats(request: Request) -> Response:
        return JSONResponse(state.stats())

    async def reset(request: Request) -> Response:
        state.reset()
        return JSONResponse({"ok": True})

    return [
        Route("/__standin__/faults", add_fault, methods=["POST"]),
        Route("/__standin__/drop", add_drop, methods=["POST"]),
        Route("/__standin__/messages", messages, methods=["GET"]),
        Route("/__standin__/stats", stats, methods=["GET"]),
        Route("/__standin__/reset", reset, methods=["POST"]),
    ]


def _fault_from_json(payload: Any, after: bool) -> SlackFault:
    if not isinstance(payload, dict):
        raise ValueError("expected a JSON object")
    status = payload.get("status")
    if status is None and not after and not payload.get("delay"):
        raise ValueError("give a status, a delay, or both")
    body = payload.get("body")
    if body is not None and not isinstance(body, str):
        raise ValueError("body must be plain text")
    headers = payload.get("headers") or {}
    if not isinstance(headers, dict):
        raise ValueError("headers must be an object")
    count = int(payload.get("count", 1))
    if count < 1:
        raise ValueError("count must be at least 1")
    return SlackFault(
        remaining=count,
        status=None if status is None or after else int(status),
        body=body,
        headers={str(k): str(v) for k, v in headers.items()},
        match=payload.get("match"),
        delay=float(payload.get("delay", 0.0)),
        after=after,
    )


def create_slack_app(*, webhook_path_secret: str = "T000/B000/XXXX") -> Starlette:
    """Build a Slack incoming-webhook stand-in at ``POST /services/{secret}``.

    Control endpoints (no auth): ``POST /__standin__/faults`` (plain-text
    ``body``), ``POST /__standin__/drop``, ``GET /__standin__/messages``,
    ``GET /__standin__/stats`` and ``POST /__standin__/reset``. A fault's
    ``match`` is ``"[METHOD] /path-glob"``; without it the fault applies to any
    ``/services/`` request. The state is on ``app.state.slack``.
    """
    hide_simulated_disconnects()
    state = SlackState(webhook_path_secret=webhook_path_secret)
    hooks = _Webhooks(state)
    routes = [
        *_control_routes(state),
        Route("/services/{path:path}", hooks.handle, methods=["POST"]),
    ]
    app = Starlette(routes=routes)
    app.state.slack = state
    return app
