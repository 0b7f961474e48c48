"""Test doubles and local stand-ins for systems LoB Flows connects."""

from __future__ import annotations

from lobflows.testing.erpnext import ErpnextState, FrappeError, create_erpnext_app
from lobflows.testing.mailbox import Mailbox, ReceivedMail, create_mailbox_app
from lobflows.testing.servers import ServerThread, SimulatedDisconnect
from lobflows.testing.slack import SlackMessage, SlackState, create_slack_app
from lobflows.testing.standins import serve_standins

__all__ = [
    "ErpnextState",
    "FrappeError",
    "Mailbox",
    "ReceivedMail",
    "ServerThread",
    "SimulatedDisconnect",
    "SlackMessage",
    "SlackState",
    "create_erpnext_app",
    "create_mailbox_app",
    "create_slack_app",
    "serve_standins",
]
