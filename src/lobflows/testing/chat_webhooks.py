"""Stand-ins for Mattermost and Microsoft Teams incoming webhooks.

Mattermost (`create_mattermost_app`): ``POST /hooks/{key}`` takes JSON (or a
form ``payload``) with ``text`` or ``attachments`` and answers ``ok`` as plain
text; refusals are Mattermost error objects ``{"id", "message",
"detailed_error", "request_id", "status_code"}``.

Teams (`create_teams_app`): an Office 365 connector webhook at
``POST /webhookb2/{path}`` that takes a MessageCard and answers ``1`` as plain
text, and a Workflows webhook at
``POST /workflows/{id}/triggers/manual/paths/invoke?sig=...`` that takes a
``message`` activity with an Adaptive Card and answers 202 with no body;
refusals there are ``{"error": {"code", "message"}}``.

The connector-contracts reference does not cover these systems; the shapes
follow the vendors' public documentation. Control endpoints, as on the Slack
stand-in: ``POST /__standin__/faults`` and ``/drop``, ``GET
/__standin__/messages``, ``GET /__standin__/stats``, ``POST
/__standin__/reset``. The state is on ``app.state.chat``.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from lobflows.testing.faults import Fault, FaultQueue, apply_faults, fault_routes
from lobflows.testing.servers import hide_simulated_disconnects

__all__ = [
    "ChatWebhookMessage",
    "ChatWebhookState",
    "create_mattermost_app",
    "create_teams_app",
]

ADAPTIVE_CARD = "application/vnd.microsoft.card.adaptive"


@dataclass(frozen=True)
class ChatWebhookMessage:
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


class ChatWebhookState:
    """Recorded messages, request counters and queued faults of one stand-in."""

    def __init__(self, *, secret: str, scope: Callable[[str], bool]) -> None:
        self.secret = secret.strip("/")
        self.lock = threading.RLock()
        self.messages: list[ChatWebhookMessage] = []
        self.request_counts: Counter[str] = Counter()
        self.faults = FaultQueue(scope)

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
        body: Any = None,
        headers: dict[str, str] | None = None,
        match: str | None = None,
        delay: float = 0.0,
    ) -> Fault:
        """Answer the next `count` matching posts with `status` (429 adds Retry-After)."""
        return self.faults.add(
            status, count=count, body=body, headers=headers, match=match, delay=delay
        )

    def add_drop(self, *, count: int = 1, match: str | None = None) -> Fault:
        """Record the next `count` matching posts, then cut the connection."""
        return self.faults.add_drop(count=count, match=match)

    def record(self, path: str, payload: dict[str, Any]) -> ChatWebhookMessage:
        """Store one accepted message."""
        message = ChatWebhookMessage(path, payload, datetime.now(UTC))
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


def _read_json(raw: bytes, content_type: str) -> dict[str, Any] | None:
    try:
        if content_type.startswith("application/x-www-form-urlencoded"):
            text = dict(parse_qsl(raw.decode())).get("payload")
            payload = json.loads(text) if text is not None else None
        else:
            payload = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    return payload if isinstance(payload, dict) else None


def _text(body: str, status: int, headers: dict[str, str] | None = None) -> Response:
    return Response(body, status, headers=headers, media_type="text/plain")


def _app(
    state: ChatWebhookState,
    routes: list[tuple[str, Callable[[Request], Awaitable[Response]]]],
    forced: Callable[[Fault], Response],
) -> Starlette:
    def counted(
        serve: Callable[[Request], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def handle(request: Request) -> Response:
            with state.lock:
                state.request_counts[f"{request.method} {request.url.path}"] += 1
            return await apply_faults(
                state.faults, request, lambda: serve(request), forced
            )

        return handle

    async def messages(request: Request) -> Response:
        with state.lock:
            listed = [m.to_json() for m in state.messages]
        return JSONResponse(listed)

    async def stats(request: Request) -> Response:
        return JSONResponse(state.stats())

    async def reset(request: Request) -> Response:
        state.reset()
        return JSONResponse({"ok": True})

    hide_simulated_disconnects()
    return Starlette(
        routes=[
            *fault_routes(state.faults),
            Route("/__standin__/messages", messages, methods=["GET"]),
            Route("/__standin__/stats", stats, methods=["GET"]),
            Route("/__standin__/reset", reset, methods=["POST"]),
            *(Route(path, counted(serve), methods=["POST"]) for path, serve in routes),
        ]
    )


# ------------------------------------------------------------------ Mattermost

_MATTERMOST_ERRORS: dict[int, tuple[str, str]] = {
    400: ("web.incoming_webhook.parse.app_error", "Unable to parse incoming data."),
    403: (
        "web.incoming_webhook.channel_locked.app_error",
        "This webhook is not permitted to post to the requested channel.",
    ),
    404: ("web.incoming_webhook.channel.app_error", "Couldn't find the channel."),
    429: ("api.context.rate_limited", "Too many requests."),
    500: ("web.incoming_webhook.app_error", "Internal server error."),
    501: (
        "web.incoming_webhook.disabled.app_error",
        "Incoming webhooks have been disabled by the system admin.",
    ),
}


def _mattermost_error(
    status: int, error_id: str, message: str, headers: dict[str, str] | None = None
) -> Response:
    body = {
        "id": error_id,
        "message": message,
        "detailed_error": "",
        "request_id": uuid.uuid4().hex[:26],
        "status_code": status,
    }
    return JSONResponse(body, status, headers)


def _mattermost_forced(fault: Fault) -> Response:
    assert fault.status is not None
    headers = fault.response_headers()
    if isinstance(fault.body, dict):
        return JSONResponse(fault.body, fault.status, headers)
    if isinstance(fault.body, str):
        return _text(fault.body, fault.status, headers)
    error_id, message = _MATTERMOST_ERRORS.get(
        fault.status, ("app_error", "An error occurred.")
    )
    return _mattermost_error(fault.status, error_id, message, headers)


def create_mattermost_app(
    *,
    hook_key: str = "standinhookkey0000000000",
    channels: tuple[str, ...] = ("town-square", "off-topic"),
) -> Starlette:
    """Build a Mattermost incoming-webhook stand-in at ``POST /hooks/{hook_key}``.

    A ``channel`` override must name one of `channels` (404 otherwise).

    Faults default to ``/hooks`` requests; a forced answer without a body is
    a Mattermost error object for the status. The state is on
    ``app.state.chat``.
    """
    state = ChatWebhookState(
        secret=hook_key, scope=lambda path: path.startswith("/hooks/")
    )

    async def hook(request: Request) -> Response:
        if request.path_params["key"] != state.secret:
            return _mattermost_error(
                400, "web.incoming_webhook.invalid.app_error", "Invalid webhook."
            )
        payload = _read_json(
            await request.body(), request.headers.get("content-type", "")
        )
        if payload is None:
            return _mattermost_error(
                400,
                "web.incoming_webhook.parse.app_error",
                "Unable to parse incoming data.",
            )
        if not payload.get("text") and not payload.get("attachments"):
            return _mattermost_error(
                400, "web.incoming_webhook.text.app_error", "No text specified."
            )
        channel = payload.get("channel")
        if channel is not None and str(channel).lstrip("@#~") not in channels:
            return _mattermost_error(
                404,
                "web.incoming_webhook.channel.app_error",
                "Couldn't find the channel.",
            )
        state.record(request.url.path, payload)
        return _text("ok", 200)

    app = _app(state, [("/hooks/{key}", hook)], _mattermost_forced)
    app.state.chat = state
    return app


# ------------------------------------------------------------------ Teams

_TEAMS_CONNECTOR_ERRORS: dict[int, str] = {
    400: "Bad payload received by generic incoming webhook.",
    404: "Webhook not found.",
    413: "Message too large.",
    429: "Microsoft Teams endpoint returned HTTP error 429.",
    500: "Internal server error.",
    503: "Service unavailable.",
}


def _teams_forced(fault: Fault) -> Response:
    assert fault.status is not None
    headers = fault.response_headers()
    if isinstance(fault.body, dict):
        return JSONResponse(fault.body, fault.status, headers)
    body = fault.body
    if body is None:
        body = _TEAMS_CONNECTOR_ERRORS.get(fault.status, "Error.")
    return _text(str(body), fault.status, headers)


def _flow_error(status: int, code: str, message: str) -> Response:
    return JSONResponse({"error": {"code": code, "message": message}}, status)


def create_teams_app(
    *,
    connector_path: str = "standin-tenant/IncomingWebhook/standin/standin",
    workflow_id: str = "standinworkflow",
    workflow_sig: str = "standin-signature",
) -> Starlette:
    """Build a Teams stand-in with an Office 365 connector webhook at
    ``POST /webhookb2/{connector_path}`` and a Workflows webhook at
    ``POST /workflows/{workflow_id}/triggers/manual/paths/invoke?sig={workflow_sig}``.

    Faults default to both webhook paths; a forced answer without a body is
    plain text like the connector's. The state is on ``app.state.chat``.
    """
    state = ChatWebhookState(
        secret=connector_path,
        scope=lambda path: path.startswith(("/webhookb2/", "/workflows/")),
    )

    async def connector(request: Request) -> Response:
        if request.path_params["path"].strip("/") != state.secret:
            return _text(_TEAMS_CONNECTOR_ERRORS[404], 404)
        payload = _read_json(
            await request.body(), request.headers.get("content-type", "")
        )
        if payload is None:
            return _text(_TEAMS_CONNECTOR_ERRORS[400], 400)
        if not any(payload.get(k) for k in ("text", "summary", "sections")):
            return _text("Summary or Text is required.", 400)
        state.record(request.url.path, payload)
        return _text("1", 200)

    async def workflow(request: Request) -> Response:
        sig = request.query_params.get("sig")
        if request.path_params["id"] != workflow_id:
            return _flow_error(
                404, "WorkflowNotFound", "The workflow could not be found."
            )
        if not sig:
            return _flow_error(
                401,
                "DirectApiAuthorizationRequired",
                "The request must be authenticated.",
            )
        if sig != workflow_sig:
            return _flow_error(
                401,
                "DirectApiInvalidAuthorizationSignature",
                "The provided authorization signature is not valid.",
            )
        payload = _read_json(
            await request.body(), request.headers.get("content-type", "")
        )
        if payload is None:
            return _flow_error(
                400, "InvalidRequestContent", "The request content is not valid JSON."
            )
        attachments = payload.get("attachments")
        if payload.get("type") != "message" or not (
            isinstance(attachments, list)
            and attachments
            and all(
                isinstance(a, dict)
                and a.get("contentType") == ADAPTIVE_CARD
                and isinstance(a.get("content"), dict)
                for a in attachments
            )
        ):
            return _flow_error(
                400,
                "TriggerInputSchemaMismatch",
                "Expected a message with Adaptive Card attachments.",
            )
        state.record(request.url.path, payload)
        return Response(status_code=202)

    app = _app(
        state,
        [
            ("/webhookb2/{path:path}", connector),
            ("/workflows/{id}/triggers/manual/paths/invoke", workflow),
        ],
        _teams_forced,
    )
    app.state.chat = state
    return app
