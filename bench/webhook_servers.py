"""The two peers of the webhook benchmark: the HTTP sink and the bare baseline.

    python bench/webhook_servers.py sink --port 9001
    python bench/webhook_servers.py baseline --port 9002 --sink-port 9001 [--loop auto]

Both listen on 127.0.0.1 only. The sink answers every POST with 200 and a
small JSON body and counts them (``GET /count`` tells the count). The
baseline is a bare Starlette endpoint under uvicorn (httptools, one worker)
that does the benchmark's work without any durability: map the contact,
POST it to the sink with one pooled httpx client, reply JSON.

Needs what LoB Flows itself installs (starlette, uvicorn[standard], httpx).
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import cast

HOST = "127.0.0.1"
HOOK_PATH = "/hooks/contact"
SINK_PATH = "/contacts"


# -- the sink ------------------------------------------------------------


class SinkProtocol(asyncio.Protocol):
    """A keep-alive HTTP/1.1 responder; parsing is minimal on purpose."""

    received = 0

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (request := self._next_request()) is not None:
            self._answer(request)

    def _next_request(self) -> bytes | None:
        head_end = self.buffer.find(b"\r\n\r\n")
        if head_end < 0:
            return None
        head = bytes(self.buffer[:head_end])
        total = head_end + 4 + _content_length(head)
        if len(self.buffer) < total:
            return None
        del self.buffer[:total]
        return head

    def _answer(self, head: bytes) -> None:
        if head.startswith(b"GET /count"):
            body = json.dumps({"received": SinkProtocol.received}).encode()
        elif head.startswith(b"GET "):
            body = b'{"status":"ok"}'
        else:
            SinkProtocol.received += 1
            body = b'{"received":true}'
        assert self.transport is not None
        self.transport.write(_response(body))


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    return 0


def _response(body: bytes) -> bytes:
    head = (
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n"
    )
    return head.encode() + body


async def serve_sink(port: int) -> None:
    """Answer until killed."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(SinkProtocol, HOST, port, backlog=1024)
    async with server:
        await server.serve_forever()


# -- the baseline --------------------------------------------------------


def baseline_app(sink_url: str) -> object:
    """The Starlette app: map, POST to the sink, reply; nothing is stored."""
    import httpx
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Same pool limits as the engine's HTTP connector, for a fair comparison.
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=50)
        headers = {"Accept": "application/json"}
        async with httpx.AsyncClient(
            base_url=sink_url, limits=limits, headers=headers, timeout=30.0
        ) as client:
            app.state.client = client
            yield

    async def hook(request: Request) -> JSONResponse:
        body = await request.json()
        record = {
            "name": f"{body['firstName']} {body['lastName']}",
            "email": body["email"],
        }
        answer = await request.app.state.client.post(SINK_PATH, json=record)
        answer.raise_for_status()
        reply = {"ok": True, "name": record["name"], "delivered": answer.status_code}
        return JSONResponse(reply)

    async def health(_request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    routes = [
        Route(HOOK_PATH, hook, methods=["POST"]),
        Route("/healthz", health, methods=["GET"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


def serve_baseline(port: int, sink_port: int, loop: str) -> None:
    """Run the baseline under uvicorn with httptools and one worker."""
    import uvicorn

    app = baseline_app(f"http://{HOST}:{sink_port}")
    uvicorn.run(
        app,  # type: ignore[arg-type]
        host=HOST,
        port=port,
        http="httptools",
        loop=loop,  # type: ignore[arg-type]
        workers=1,
        log_level="warning",
        access_log=False,
    )


def _use_uvloop() -> None:
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def main() -> None:
    """Start the sink or the baseline from the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("role", choices=["sink", "baseline"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--sink-port", type=int, help="Port of the sink (baseline).")
    parser.add_argument(
        "--loop",
        choices=["auto", "asyncio", "uvloop"],
        default="auto",
        help="Event loop of the baseline; auto is uvloop when installed.",
    )
    args = parser.parse_args()
    if args.role == "sink":
        _use_uvloop()
        asyncio.run(serve_sink(args.port))
        return
    if args.sink_port is None:
        parser.error("baseline needs --sink-port")
    serve_baseline(args.port, args.sink_port, args.loop)


if __name__ == "__main__":
    main()
