"""Serve ASGI stand-ins on loopback, in a background thread or in the current loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
from collections.abc import Iterator
from types import TracebackType
from typing import Self

import uvicorn
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = [
    "ServerThread",
    "SimulatedDisconnect",
    "bind_socket",
    "build_server",
]

_STARTUP_TIMEOUT = 10.0


class SimulatedDisconnect(Exception):
    """Raised by a stand-in after sending headers to make the server cut the line."""


class _HideSimulatedDisconnects(logging.Filter):
    """Drop uvicorn's error record for a disconnect a stand-in caused on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, SimulatedDisconnect)


_DISCONNECT_FILTER = _HideSimulatedDisconnects()


def hide_simulated_disconnects() -> None:
    """Keep uvicorn from logging a traceback for every simulated disconnect."""
    logging.getLogger("uvicorn.error").addFilter(_DISCONNECT_FILTER)


class _SignalFreeServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to whoever runs it."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Install no signal handlers (several servers share one loop)."""
        yield


def bind_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """Bind a listening TCP socket; port 0 lets the kernel choose a free one."""
    # An explicit IPPROTO_TCP lets asyncio set TCP_NODELAY on accepted sockets;
    # without it every response waits out the peer's delayed ACK (~40 ms).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def build_server(app: ASGIApp, *, log_level: str = "warning") -> uvicorn.Server:
    """Create a uvicorn server for `app` that uses the host's logging setup."""
    hide_simulated_disconnects()
    config = uvicorn.Config(
        app,
        log_config=None,
        log_level=log_level,
        access_log=False,
        lifespan="off",
        ws="none",
        timeout_graceful_shutdown=5,
    )
    return _SignalFreeServer(config)


class ServerThread:
    """Run an ASGI app under uvicorn in a daemon thread on loopback."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        log_level: str = "warning",
    ) -> None:
        self.app = app
        self.host = host
        self.port = port
        self._log_level = log_level
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        """Base URL of the running server, without a trailing slash."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        """Start serving and block until the server accepts connections."""
        if self._thread is not None:
            raise RuntimeError("server already running")
        sock = bind_socket(self.host, self.port)
        self.port = sock.getsockname()[1]
        server = build_server(self.app, log_level=self._log_level)
        self._server = server
        self._error = None
        self._thread = threading.Thread(
            target=self._run, args=(server, sock), name=f"asgi-{self.port}", daemon=True
        )
        self._thread.start()
        self._wait_started(server)

    def stop(self) -> None:
        """Ask the server to shut down and wait for its thread to finish."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=15)
        self._server = None
        self._thread = None

    def _run(self, server: uvicorn.Server, sock: socket.socket) -> None:
        try:
            asyncio.run(server.serve(sockets=[sock]))
        except BaseException as exc:  # reported to the starting thread
            self._error = exc
        finally:
            sock.close()

    def _wait_started(self, server: uvicorn.Server) -> None:
        deadline = time.monotonic() + _STARTUP_TIMEOUT
        while not server.started:
            thread = self._thread
            if thread is None or not thread.is_alive():
                self.stop()
                raise RuntimeError("server thread exited during startup") from (
                    self._error
                )
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError("server did not start in time")
            time.sleep(0.01)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class DisconnectAfterHeaders(Response):
    """Send a response's status line and headers, then cut the connection.

    Lets a stand-in process a request fully and still leave the client
    unsure whether it happened.
    """

    def __init__(self, inner: Response) -> None:
        self.inner = inner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": self.inner.status_code,
                "headers": self.inner.raw_headers,
            }
        )
        raise SimulatedDisconnect("connection dropped on purpose")
