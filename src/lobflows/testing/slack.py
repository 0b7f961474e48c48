"""Stand-in for Slack: incoming webhooks (plain-text answers, recorded
messages) and the Web API methods ``auth.test``, ``chat.postMessage`` and
``chat.update`` (bearer token, ``ok:false`` envelopes on HTTP 200, 429 with
``Retry-After``).

Control endpoints live under ``/__standin__/`` and need no authentication;
see `create_slack_app`.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
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

__all__ = [
    "SlackChannel",
    "SlackFault",
    "SlackMessage",
    "SlackPost",
    "SlackState",
    "create_slack_app",
]

# Longest text chat.postMessage takes before answering msg_too_long.
MAX_TEXT = 40_000
# Default error code of a forced Web API answer, by status.
_DEFAULT_API_ERRORS: dict[int, str] = {
    429: "ratelimited",
    500: "internal_error",
    503: "service_unavailable",
}

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


@dataclass
class SlackChannel:
    """A channel the Web API knows: whether the bot is in it, whether archived."""

    id: str
    name: str
    member: bool = True
    archived: bool = False


@dataclass
class SlackPost:
    """One message posted through the Web API (updated in place by chat.update)."""

    channel: str
    ts: str
    payload: dict[str, Any]
    posted_at: datetime
    edits: int = 0

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {
            "channel": self.channel,
            "ts": self.ts,
            "payload": self.payload,
            "posted_at": self.posted_at.isoformat(),
            "edits": self.edits,
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


def _forced_api(fault: Fault) -> Response:
    """Build a forced Web API answer: a JSON body, ``ok:false`` by default."""
    assert fault.status is not None
    body = fault.body
    if body is None:
        body = _DEFAULT_API_ERRORS.get(fault.status, "fatal_error")
    if isinstance(body, str):
        body = {"ok": False, "error": body}
    return JSONResponse(body, fault.status, fault.response_headers())


class SlackState:
    """Recorded messages, request counters and queued faults of one stand-in."""

    def __init__(
        self,
        *,
        webhook_path_secret: str,
        bot_token: str = "xoxb-standin-token",
        channels: list[SlackChannel] | None = None,
    ) -> None:
        self.webhook_path_secret = webhook_path_secret.strip("/")
        self.bot_token = bot_token
        self.lock = threading.RLock()
        self.messages: list[SlackMessage] = []
        self.request_counts: Counter[str] = Counter()
        self.faults = FaultQueue(under("/services"), text_body=True, drop_status=False)
        # Web API: channels by id, posted messages, and its own fault queue.
        self._initial_channels = list(
            channels
            or [
                SlackChannel("C0GENERAL", "general"),
                SlackChannel("C0PRIVATE", "private", member=False),
                SlackChannel("C0ARCHIVE", "old-news", archived=True),
            ]
        )
        self.channels: dict[str, SlackChannel] = {}
        self.posts: list[SlackPost] = []
        self.api_faults = FaultQueue(under("/api"))
        self._ts_counter = itertools.count(1)
        self._reset_channels()

    def _reset_channels(self) -> None:
        self.channels = {
            c.id: SlackChannel(c.id, c.name, c.member, c.archived)
            for c in self._initial_channels
        }

    def reset(self) -> None:
        """Forget messages, posts, counters and faults; restore the channels."""
        with self.lock:
            self.messages.clear()
            self.request_counts.clear()
            self.faults.clear()
            self.posts.clear()
            self.api_faults.clear()
            self._reset_channels()

    def add_api_fault(
        self,
        status: int | None = 200,
        *,
        count: int = 1,
        error: str | None = None,
        body: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        match: str | None = None,
        delay: float = 0.0,
    ) -> Fault:
        """Answer the next `count` matching Web API calls with ``ok:false``.

        `error` is the code (``{"ok": false, "error": error}``); `body` a whole
        JSON body instead. Without either the code follows the status
        (``ratelimited`` for 429). `match` is ``"[METHOD] /api/<method>"``.
        """
        return self.api_faults.add(
            status,
            count=count,
            body=body if body is not None else error,
            headers=headers,
            match=match,
            delay=delay,
        )

    def rate_limit(
        self, *, count: int = 1, retry_after: int = 1, match: str | None = None
    ) -> Fault:
        """Throttle the next `count` Web API calls: 429, ``Retry-After``, ``ratelimited``."""
        return self.add_api_fault(
            429,
            count=count,
            error="ratelimited",
            headers={"Retry-After": str(retry_after)},
            match=match,
        )

    def next_ts(self) -> str:
        """A message timestamp: a string, increasing within the stand-in."""
        return f"{int(time.time())}.{next(self._ts_counter):06d}"

    def find_channel(self, ref: str) -> SlackChannel | None:
        """A channel by id, name or ``#name``."""
        with self.lock:
            if ref in self.channels:
                return self.channels[ref]
            name = ref.removeprefix("#")
            return next((c for c in self.channels.values() if c.name == name), None)

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
                "faults": self.faults.describe() + self.api_faults.describe(),
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


class _WebApi:
    """The Web API methods, bound to one `SlackState`."""

    def __init__(self, state: SlackState) -> None:
        self.state = state

    async def handle(self, request: Request) -> Response:
        """Count, apply faults, then answer one Web API call."""
        with self.state.lock:
            self.state.request_counts[f"{request.method} {request.url.path}"] += 1
        return await apply_faults(
            self.state.api_faults, request, lambda: self._answer(request), _forced_api
        )

    async def _answer(self, request: Request) -> Response:
        method = request.path_params["method"]
        handler = {
            "auth.test": self._auth_test,
            "chat.postMessage": self._post_message,
            "chat.update": self._update,
        }.get(method)
        if handler is None:
            return JSONResponse({"ok": False, "error": "unknown_method"}, 404)
        content_type = request.headers.get("content-type", "")
        raw = await request.body()
        args = _api_args(raw, content_type)
        if args is None:
            return _fail("invalid_form_data")
        token = _bearer(request) or args.pop("token", None)
        if not token:
            return _fail("not_authed")
        if token != self.state.bot_token:
            return _fail("invalid_auth")
        answer = handler(args)
        if answer.get("ok") and content_type.startswith("application/json"):
            if "charset" not in content_type:
                answer["warning"] = "missing_charset"
                answer["response_metadata"] = {"warnings": ["missing_charset"]}
        return JSONResponse(answer)

    def _message_problem(
        self, args: dict[str, Any]
    ) -> tuple[SlackChannel | None, str | None]:
        channel = self.state.find_channel(str(args.get("channel") or ""))
        if channel is None:
            return None, "channel_not_found"
        if channel.archived:
            return channel, "is_archived"
        if not channel.member:
            return channel, "not_in_channel"
        if not any(args.get(k) for k in ("text", "blocks", "attachments")):
            return channel, "no_text"
        blocks = args.get("blocks")
        if blocks is not None and not isinstance(blocks, list):
            return channel, "invalid_blocks_format"
        if isinstance(blocks, list) and not all(
            isinstance(b, dict) and isinstance(b.get("type"), str) for b in blocks
        ):
            return channel, "invalid_blocks"
        if len(str(args.get("text") or "")) > MAX_TEXT:
            return channel, "msg_too_long"
        return channel, None

    def _auth_test(self, args: dict[str, Any]) -> dict[str, Any]:
        return {
            "ok": True,
            "url": "https://standin.slack.example/",
            "team": "Stand-in",
            "user": "lobflows-bot",
            "team_id": "T0STANDIN",
            "user_id": "U0BOT",
            "bot_id": "B0BOT",
        }

    def _post_message(self, args: dict[str, Any]) -> dict[str, Any]:
        channel, problem = self._message_problem(args)
        if problem is not None or channel is None:
            return {"ok": False, "error": problem}
        thread_ts = args.get("thread_ts")
        with self.state.lock:
            if thread_ts is not None and not any(
                p.channel == channel.id and p.ts == thread_ts for p in self.state.posts
            ):
                return {"ok": False, "error": "thread_not_found"}
            post = SlackPost(channel.id, self.state.next_ts(), args, datetime.now(UTC))
            self.state.posts.append(post)
        return {
            "ok": True,
            "channel": channel.id,
            "ts": post.ts,
            "message": _message_json(post),
        }

    def _update(self, args: dict[str, Any]) -> dict[str, Any]:
        channel, problem = self._message_problem(args)
        if problem is not None or channel is None:
            return {"ok": False, "error": problem}
        with self.state.lock:
            post = next(
                (
                    p
                    for p in self.state.posts
                    if p.channel == channel.id and p.ts == args.get("ts")
                ),
                None,
            )
            if post is None:
                return {"ok": False, "error": "message_not_found"}
            post.payload = {**post.payload, **args, "channel": channel.id}
            post.edits += 1
        return {
            "ok": True,
            "channel": channel.id,
            "ts": post.ts,
            "text": post.payload.get("text", ""),
            "message": _message_json(post),
        }


def _fail(code: str) -> Response:
    return JSONResponse({"ok": False, "error": code})


def _bearer(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def _api_args(raw: bytes, content_type: str) -> dict[str, Any] | None:
    """The arguments of a Web API call, from a JSON or form body."""
    try:
        if content_type.startswith("application/json"):
            args = json.loads(raw or b"{}")
        else:
            args = dict(parse_qsl(raw.decode()))
            if isinstance(args.get("blocks"), str):
                args["blocks"] = json.loads(args["blocks"])
    except (ValueError, UnicodeDecodeError):
        return None
    return args if isinstance(args, dict) else None


def _message_json(post: SlackPost) -> dict[str, Any]:
    message = {
        "type": "message",
        "subtype": "bot_message",
        "text": post.payload.get("text", ""),
        "bot_id": "B0STANDIN",
        "ts": post.ts,
    }
    if post.payload.get("blocks"):
        message["blocks"] = post.payload["blocks"]
    if post.payload.get("thread_ts"):
        message["thread_ts"] = post.payload["thread_ts"]
    return message


def _api_fault_routes(state: SlackState) -> list[Route]:
    async def add(request: Request, *, after: bool) -> Response:
        try:
            payload = json.loads(await request.body() or b"{}")
            if isinstance(payload, dict) and "error" in payload:
                payload = {**payload, "body": payload.pop("error")}
                payload.setdefault("status", 200)
            fault = state.api_faults.from_json(payload, after=after)
        except (ValueError, TypeError) as exc:
            return JSONResponse({"error": str(exc)}, 400)
        return JSONResponse(state.api_faults.append(fault).describe())

    async def add_fault(request: Request) -> Response:
        return await add(request, after=False)

    async def add_drop(request: Request) -> Response:
        return await add(request, after=True)

    async def posts(request: Request) -> Response:
        with state.lock:
            listed = [p.to_json() for p in state.posts]
        return JSONResponse(listed)

    return [
        Route("/__standin__/api/faults", add_fault, methods=["POST"]),
        Route("/__standin__/api/drop", add_drop, methods=["POST"]),
        Route("/__standin__/api/messages", posts, methods=["GET"]),
    ]


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
        *_api_fault_routes(state),
        Route("/__standin__/messages", messages, methods=["GET"]),
        Route("/__standin__/stats", stats, methods=["GET"]),
        Route("/__standin__/reset", reset, methods=["POST"]),
    ]


def create_slack_app(
    *,
    webhook_path_secret: str = "T000/B000/XXXX",
    bot_token: str = "xoxb-standin-token",
    channels: list[SlackChannel] | None = None,
) -> Starlette:
    """Build a Slack stand-in: incoming webhooks at ``POST /services/{secret}``
    and the Web API at ``POST /api/auth.test``, ``/api/chat.postMessage`` and
    ``/api/chat.update``.

    The Web API takes `bot_token` as ``Authorization: Bearer`` (or a form
    ``token``) and knows `channels` (by default ``C0GENERAL``/``general``, the
    bot-less ``C0PRIVATE`` and the archived ``C0ARCHIVE``).

    Control endpoints (no auth): ``POST /__standin__/faults`` (plain-text
    ``body``), ``POST /__standin__/drop``, ``GET /__standin__/messages``,
    ``GET /__standin__/stats`` and ``POST /__standin__/reset``. A fault's
    ``match`` is ``"[METHOD] /path-glob"``; without it the fault applies to any
    ``/services/`` request. Web API faults go to ``POST /__standin__/api/faults``
    (``{"error": "invalid_auth"}`` for an ``ok:false`` answer, or ``status``,
    ``headers`` and a JSON ``body``; a 429 defaults to ``Retry-After: 1`` and
    ``ratelimited``) and ``/__standin__/api/drop``; posted Web API messages are
    listed at ``GET /__standin__/api/messages``. The state is on
    ``app.state.slack``.
    """
    hide_simulated_disconnects()
    state = SlackState(
        webhook_path_secret=webhook_path_secret, bot_token=bot_token, channels=channels
    )
    hooks = _Webhooks(state)
    api = _WebApi(state)
    routes = [
        *_control_routes(state),
        Route("/services/{path:path}", hooks.handle, methods=["POST"]),
        Route("/api/{method}", api.handle, methods=["POST"]),
    ]
    app = Starlette(routes=routes)
    app.state.slack = state
    return app
