"""Live updates of the overview, as server-sent events.

``GET /events`` sends a ``snapshot`` event at once and then whenever the
tiles or the recent errors change, looking every `interval_seconds`; a
comment line every `KEEPALIVE_SECONDS` keeps proxies from closing a quiet
stream. Each event carries the tiles and the error list already rendered,
so the page's script only swaps them in.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from lobflows.runtime import Runtime
from lobflows.web import auth
from lobflows.web.dashboard import render, views

KEEPALIVE_SECONDS = 15.0


class LiveUpdates:
    """The event stream of one runtime's overview."""

    def __init__(self, runtime: Runtime, *, interval_seconds: float = 2.0) -> None:
        self.runtime = runtime
        self.interval_seconds = interval_seconds
        # One snapshot serves every open page for an interval.
        self._latest: tuple[float, Any] | None = None

    async def _snapshot(self) -> Any:
        now = time.monotonic()
        if self._latest is None or now - self._latest[0] >= self.interval_seconds:
            self._latest = (now, await self.runtime.monitor.snapshot())
        return self._latest[1]

    async def events(self, request: Request) -> Response:
        principal = auth.require(request, "view")
        return StreamingResponse(
            self._stream(request, principal),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    async def snapshot_event(self, principal: auth.Principal) -> bytes:
        """The overview's changing parts, as this person sees them, as one
        ``snapshot`` event."""
        snapshot = await self._snapshot()
        payload = {
            "tiles": {
                tile.flow: render.fragment("_tile.html", tile=tile)
                for tile in views.tiles(self.runtime, snapshot)
            },
            "errors": render.fragment(
                "_recent_errors.html", recent_errors=snapshot.recent_errors
            ),
            "summary": render.fragment(
                "_summary.html",
                **await views.summary(self.runtime, principal, snapshot),
            ),
        }
        return b"event: snapshot\ndata: " + orjson.dumps(payload) + b"\n\n"

    async def _stream(
        self, request: Request, principal: auth.Principal
    ) -> AsyncIterator[bytes]:
        sent_digest = ""
        quiet_since = time.monotonic()
        # The browser reconnects after this many milliseconds if the line drops.
        yield f"retry: {int(self.interval_seconds * 1000)}\n\n".encode()
        while not await request.is_disconnected():
            event = await self.snapshot_event(principal)
            digest = hashlib.sha256(event).hexdigest()
            if digest != sent_digest:
                sent_digest, quiet_since = digest, time.monotonic()
                yield event
            elif time.monotonic() - quiet_since > KEEPALIVE_SECONDS:
                quiet_since = time.monotonic()
                yield b": still here\n\n"
            await asyncio.sleep(self.interval_seconds)
