"""Live updates of the overview, as server-sent events.

``GET /events`` sends a ``snapshot`` event at once and then whenever the
tiles, the recent errors or the summary change, looking every
`interval_seconds`; a comment line every `KEEPALIVE_SECONDS` keeps proxies
from closing a quiet stream. Each event carries the tiles and the error
list already rendered, so the page's script only swaps them in.

A change is judged on the data, not on the rendered text: the text holds
relative times ("31 s ago") that change every second by themselves. The
page's script keeps those current from each ``<time datetime>``.

Before each look the stream asks again who is signed in: it ends, with a
``signed_out`` event, once the session ends, the user is removed or the
API token is revoked.
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
# How often the stream looks for changes, when no interval is given.
INTERVAL_SECONDS = 2.0
SIGNED_OUT = b'event: signed_out\ndata: "sign in again to see live updates"\n\n'


class LiveUpdates:
    """The event stream of one runtime's overview."""

    def __init__(
        self, runtime: Runtime, *, interval_seconds: float | None = None
    ) -> None:
        self.runtime = runtime
        self.interval_seconds = interval_seconds or INTERVAL_SECONDS
        # One snapshot serves every open page for an interval.
        self._latest: tuple[float, Any] | None = None

    async def _snapshot(self) -> Any:
        now = time.monotonic()
        if self._latest is None or now - self._latest[0] >= self.interval_seconds:
            self._latest = (now, await self.runtime.monitor.snapshot())
        return self._latest[1]

    async def events(self, request: Request) -> Response:
        auth.require(request, "view")
        return StreamingResponse(
            self._stream(request),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    async def overview(self, principal: auth.Principal) -> dict[str, Any]:
        """The overview's changing parts, as data, as this person sees them."""
        snapshot = await self._snapshot()
        return {
            "tiles": views.tiles(self.runtime, snapshot),
            "errors": list(snapshot.recent_errors),
            "summary": await views.summary(self.runtime, principal, snapshot),
        }

    @staticmethod
    def snapshot_event(overview: dict[str, Any]) -> bytes:
        """The overview's changing parts rendered, as one ``snapshot`` event."""
        payload = {
            "tiles": {
                tile.flow: render.fragment("_tile.html", tile=tile)
                for tile in overview["tiles"]
            },
            "errors": render.fragment(
                "_recent_errors.html", recent_errors=overview["errors"]
            ),
            "summary": render.fragment("_summary.html", **overview["summary"]),
        }
        return b"event: snapshot\ndata: " + orjson.dumps(payload) + b"\n\n"

    async def _stream(self, request: Request) -> AsyncIterator[bytes]:
        sent_digest = ""
        quiet_since = time.monotonic()
        # The browser reconnects after this many milliseconds if the line drops.
        yield f"retry: {int(self.interval_seconds * 1000)}\n\n".encode()
        while not await request.is_disconnected():
            principal, _ = await auth.authenticate(self.runtime, request)
            if principal is None or not principal.can("view"):
                yield SIGNED_OUT
                return
            overview = await self.overview(principal)
            digest = data_digest(overview)
            if digest != sent_digest:
                sent_digest, quiet_since = digest, time.monotonic()
                yield self.snapshot_event(overview)
            elif time.monotonic() - quiet_since > KEEPALIVE_SECONDS:
                quiet_since = time.monotonic()
                yield b": still here\n\n"
            await asyncio.sleep(self.interval_seconds)


def data_digest(overview: dict[str, Any]) -> str:
    """A digest of the overview's data; equal data, equal digest."""
    data = orjson.dumps(overview, option=orjson.OPT_SORT_KEYS, default=str)
    return hashlib.sha256(data).hexdigest()
