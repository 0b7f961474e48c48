"""Run every local stand-in (ERPNext, Slack webhook, SMTP) in one event loop."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount

from lobflows.testing.erpnext import create_erpnext_app
from lobflows.testing.mailbox import Mailbox, create_mailbox_app
from lobflows.testing.servers import bind_socket, build_server
from lobflows.testing.slack import create_slack_app

__all__ = ["serve_standins", "slack_with_mail_app"]

logger = logging.getLogger(__name__)

MAIL_MOUNT = "/__standin__/mail"


def slack_with_mail_app(slack_app: Starlette, mailbox: Mailbox) -> Starlette:
    """Serve the Slack stand-in plus the mailbox's HTTP view under `MAIL_MOUNT`."""
    app = Starlette(
        routes=[
            Mount(MAIL_MOUNT, app=create_mailbox_app(mailbox, prefix="")),
            Mount("", app=slack_app),
        ]
    )
    app.state.slack = slack_app.state.slack
    app.state.mailbox = mailbox
    return app


async def serve_standins(
    *,
    host: str = "127.0.0.1",
    erpnext_port: int,
    slack_port: int,
    smtp_port: int,
    api_key: str,
    api_secret: str,
    slack_path: str,
    maildir: Path | None = None,
) -> None:
    """Serve the ERPNext, Slack and SMTP stand-ins until cancelled.

    ERPNext answers on `erpnext_port`, the Slack webhook on
    ``http://host:slack_port/services/<slack_path>``, and SMTP on `smtp_port`.
    Mail received over SMTP is readable over HTTP on the Slack port:
    ``GET /__standin__/mail/messages`` (also ``POST .../faults`` and
    ``POST .../reset``). Port 0 picks a free port; the log line says which.
    """
    mailbox = Mailbox(host=host, port=smtp_port, maildir=maildir)
    erpnext = build_server(create_erpnext_app(api_key=api_key, api_secret=api_secret))
    slack_app = create_slack_app(webhook_path_secret=slack_path)
    slack = build_server(slack_with_mail_app(slack_app, mailbox))
    sockets: list[socket.socket] = []
    try:
        for port in (erpnext_port, slack_port, smtp_port):
            sockets.append(bind_socket(host, port))
        tasks = [
            asyncio.create_task(erpnext.serve(sockets=[sockets[0]])),
            asyncio.create_task(slack.serve(sockets=[sockets[1]])),
            asyncio.create_task(mailbox.serve(sockets[2])),
        ]
        _log_started(host, sockets, slack_path)
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
        finally:
            await _shut_down(tasks, erpnext, slack)
    finally:
        for sock in sockets:
            sock.close()


def _log_started(host: str, sockets: list[socket.socket], slack_path: str) -> None:
    erpnext_port, slack_port, smtp_port = (s.getsockname()[1] for s in sockets)
    logger.info("ERPNext stand-in listening on http://%s:%d", host, erpnext_port)
    logger.info(
        "Slack webhook stand-in listening on http://%s:%d/services/%s "
        "(received mail at %s/messages)",
        host,
        slack_port,
        slack_path.strip("/"),
        MAIL_MOUNT,
    )
    logger.info("SMTP stand-in listening on %s:%d", host, smtp_port)


async def _shut_down(tasks: list[asyncio.Task[None]], *servers: uvicorn.Server) -> None:
    # Ask uvicorn to stop gracefully; cancelling it would skip its shutdown.
    for server in servers:
        server.should_exit = True
    tasks[-1].cancel()
    try:
        await asyncio.wait(tasks, timeout=10)
    finally:
        for task in tasks:
            if not task.done():
                task.cancel()
