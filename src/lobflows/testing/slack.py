"""Stand-in for Slack incoming webhooks: plain-text answers, recorded messages.

Control endpoints live under ``/__standin__/`` and need no authentication;
see `create_slack_app`.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from lobflows.testing.faults import Fault, FaultQueue, apply_faults, fault_routes, under
from lobflows.testing.servers import hide_simulated_disconnects

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


# Kept for callers that import the Slack-specific name.
SlackFault = Fault


def _forced(fault: Fault) -> Response:
    """Build a forced plain-text answer."""
    assert fault.status is not None
    body = fault.body
    if body is None:
        body = _DEFAULT_ERRORS.get(fault.status, "error")
    return _text(body, fault.status, fault.response_headers())


class SlackState:
    """Recorded messages, request counters and queued faults of one stand-in."""

    def __init__(self, *, webhook_path_secret: str) -> None:
        self.webhook_path_secret = webhook_path_secret.strip("/")
        self.lock = threading.RLock()
        self.messages: list[SlackMessage] = []
        self.request_counts: Counter[str] = Counter()
        self.faults = FaultQueue(under("/services"), text_body=True, drop_status=False)

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
    ) -> Fault:
        """Answer the next `count` matching posts with `status` and a text body."""
        return self.faults.add(
            status, count=count, body=body, headers=headers, match=match, delay=delay
        )

    def add_drop(self, *, count: int = 1, match: str | None = None) -> Fault:
        """Record the next `count` matching posts, then cut the connection."""
        return self.faults.add_drop(count=count, match=match)

    def take_fault(self, method: str, path: str, *, after: bool) -> Fault | None:
        """Consume one use of the first pending fault matching a request."""
        return self.faults.take(method, path, after=after)

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
                "faults": self.faults.describe(),
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
        with self.state.lock:
            self.state.request_counts[f"{request.method} {request.url.path}"] += 1
        return await apply_faults(
            self.state.faults, request, lambda: self._accept(request), _forced
        )

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
        *fault_routes(state.faults),
        Route("/__standin__/messages", messages, methods=["GET"]),
        Route("/__standin__/stats", stats, methods=["GET"]),
        Route("/__standin__/reset", reset, methods=["POST"]),
    ]


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
