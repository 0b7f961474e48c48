"""Frappe's exception types and v1 error envelopes."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable, Mapping
from typing import Any

_STATUS_BY_EXC: dict[str, int] = {
    "AuthenticationError": 401,
    "SessionExpired": 401,
    "PermissionError": 403,
    "DoesNotExistError": 404,
    "DuplicateEntryError": 409,
    "InvalidAuthorizationToken": 400,
    "CSRFTokenError": 400,
    "UnsupportedMediaType": 415,
    "LinkExpired": 410,
    "TooManyRequestsError": 429,
    "OutgoingEmailError": 501,
    "SessionStopped": 503,
    "InReadOnlyMode": 503,
    "Exception": 500,
}

# Default envelope for a forced response of a given status.
_EXC_BY_STATUS: dict[int, tuple[str, str]] = {
    400: ("CSRFTokenError", "Invalid Request"),
    401: ("AuthenticationError", "Invalid Authentication"),
    403: ("PermissionError", "Not permitted"),
    404: ("DoesNotExistError", "Not found"),
    409: ("DuplicateEntryError", "Duplicate entry"),
    410: ("LinkExpired", "The link has expired"),
    415: ("UnsupportedMediaType", "Unsupported media type"),
    417: ("ValidationError", "Validation failed"),
    429: ("TooManyRequestsError", "Too Many Requests"),
    501: ("OutgoingEmailError", "Outgoing email is not configured"),
    503: ("SessionStopped", "The site is under maintenance, please try again later"),
}
_GENERIC_EXC = ("Exception", "Internal Server Error")


class FrappeError(Exception):
    """A Frappe exception: its class name, HTTP status and server messages."""

    def __init__(
        self,
        exc_type: str,
        message: str | None = None,
        *,
        title: str = "Message",
        messages: list[dict[str, Any]] | None = None,
        text: str | None = None,
    ) -> None:
        self.exc_type = exc_type
        self.status = _STATUS_BY_EXC.get(exc_type, 417)
        self.messages = list(messages or [])
        if message is not None:
            self.messages.append(_thrown_message(message, title))
        self.text = text if text is not None else (message or "")
        super().__init__(f"{exc_type}: {self.text}")

    def body(self, *, with_traceback: bool = False) -> dict[str, Any]:
        """Return the v1 error envelope."""
        payload: dict[str, Any] = {"exc_type": self.exc_type}
        if with_traceback:
            last_line = f"frappe.exceptions.{self.exc_type}: {self.text}"
            payload["exception"] = last_line
            trace = f"Traceback (most recent call last):\n{last_line}\n"
            payload["exc"] = json.dumps([trace])
        if self.messages:
            payload["_server_messages"] = encode_server_messages(self.messages)
        return payload


def _thrown_message(message: str, title: str) -> dict[str, Any]:
    return {
        "message": message,
        "title": title,
        "indicator": "red",
        "raise_exception": 1,
        "__frappe_exc_id": secrets.token_hex(8),
    }


def encode_server_messages(messages: Iterable[Mapping[str, Any]]) -> str:
    """Encode messages the way Frappe does: a JSON list of JSON strings."""
    return json.dumps([json.dumps(dict(m)) for m in messages])


def error_for_status(status: int) -> FrappeError:
    """Return the default Frappe error for a forced status."""
    exc_type, message = _EXC_BY_STATUS.get(status, _GENERIC_EXC)
    error = FrappeError(exc_type, message)
    error.status = status
    return error
