"""Mail read over IMAP (stdlib imaplib, run in a worker thread).

``fetch_new`` lists the messages of a mailbox whose UID is above a watermark
(``UID SEARCH UID n+1:*``), so a poll trigger can start one run per new
message::

    trigger:
      poll:
        every_seconds: 60
        call: mail.fetch_new
        with: {since_uid: "{{ watermark }}"}
        items: "{{ result }}"
        id: "{{ item.uidvalidity }}-{{ item.uid }}"
        watermark: "{{ item.uid }}"
        start: 0

UIDs only mean something together with the mailbox's UIDVALIDITY. When the
server reports a different UIDVALIDITY than the one seen before (passed as
``uidvalidity``, or remembered by this connection since the process started),
the watermark is reset: every message of the mailbox is listed again. Their
ids carry the new UIDVALIDITY, so each starts one run. The poll trigger keeps
the largest watermark, so until the new UIDs pass the stale one this
connection keeps its own place in memory; after a restart in that window,
messages with UIDs below the stale watermark are missed.

imaplib was chosen over the async IMAP clients (aioimaplib) because it is in
the standard library, well maintained and complete; each call opens one
short session in a thread, which suits polling. Authentication failures are
permanent, connection trouble and timeouts retryable; passwords never appear
in errors.
"""

from __future__ import annotations

import asyncio
import imaplib
import logging
import re
import ssl
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import parsedate_to_datetime
from typing import Any, Literal

import pydantic

from lobflows import errors
from lobflows.connectors import _http, base

log = logging.getLogger(__name__)
_PARSER = BytesParser(policy=policy.default)
_UID = re.compile(rb"UID (\d+)")
_MAX_UID = 2**32 - 1


class ImapSettings(base.NetworkSettings):
    host: str
    port: int = pydantic.Field(
        default=993, gt=0, lt=65536, description="993 for tls, 143 otherwise."
    )
    security: Literal["none", "starttls", "tls"] = pydantic.Field(
        default="tls",
        description="implicit tls (993), starttls (143) or none (tests only).",
    )
    username: str
    password_secret: str = pydantic.Field(
        description="Secret holding the IMAP password."
    )
    mailbox: str = pydantic.Field(default="INBOX", description="Mailbox to read.")

    @pydantic.field_validator("mailbox")
    @classmethod
    def _mailbox_name(cls, value: str) -> str:
        return _checked_mailbox(value)


class FetchParams(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    since_uid: int = pydantic.Field(default=0, ge=0, le=_MAX_UID)
    uidvalidity: int | None = pydantic.Field(default=None, ge=1)
    limit: int = pydantic.Field(default=50, ge=1, le=500)


class UidParams(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    uid: int = pydantic.Field(ge=1, le=_MAX_UID)
    uidvalidity: int | None = pydantic.Field(default=None, ge=1)


class MoveParams(UidParams):
    mailbox: str = pydantic.Field(description="Mailbox to move the message to.")

    @pydantic.field_validator("mailbox")
    @classmethod
    def _mailbox_name(cls, value: str) -> str:
        return _checked_mailbox(value)


@dataclass
class _Place:
    """Where this connection is in one mailbox, across UIDVALIDITY changes."""

    uidvalidity: int
    stale_since_uid: int | None = None
    highest_uid: int = 0


class _AuthFailed(Exception):
    pass


class ImapConnector(base.Connector):
    """Reads email from an IMAP mailbox."""

    kind = "imap"
    settings_model = ImapSettings
    actions = {
        "fetch_new": "List messages whose UID is above since_uid, oldest first.",
        "mark_seen": "Flag one message (by UID) as seen.",
        "move": "Move one message (by UID) to another mailbox.",
    }

    def __init__(self, name: str, settings: ImapSettings, secrets: Any) -> None:
        super().__init__(name, settings, secrets)
        self.settings: ImapSettings = settings
        self.guard = _http.AddressGuard(settings.allow_networks)
        self._places: dict[str, _Place] = {}

    async def action_fetch_new(
        self, params: dict[str, Any], context: base.CallContext
    ) -> Any:
        p: FetchParams = base.parse_params(
            FetchParams, params, action=f"{self.name}.fetch_new"
        )
        return await self._session(context, lambda imap: self._fetch_new(imap, p))

    async def action_mark_seen(
        self, params: dict[str, Any], context: base.CallContext
    ) -> Any:
        p: UidParams = base.parse_params(
            UidParams, params, action=f"{self.name}.mark_seen"
        )
        return await self._session(context, lambda imap: self._mark_seen(imap, p))

    async def action_move(
        self, params: dict[str, Any], context: base.CallContext
    ) -> Any:
        p: MoveParams = base.parse_params(
            MoveParams, params, action=f"{self.name}.move"
        )
        return await self._session(context, lambda imap: self._move(imap, p))

    async def check(self) -> str:
        """Log in, select the mailbox read-only, log out."""
        s = self.settings
        context = base.check_context(s.timeout_seconds)

        def select(imap: imaplib.IMAP4) -> int:
            _, data = _ok(imap.select(_quoted(s.mailbox), readonly=True))
            return int(data[0]) if data and data[0] else 0

        count = await self._session(context, select)
        return f"logged in as {s.username}; {s.mailbox} holds {count} messages"

    # sessions ----------------------------------------------------------------

    async def _session(self, context: base.CallContext, work: Any) -> Any:
        """Connect, log in, do `work` in a thread, log out; translate errors."""
        s = self.settings
        await self.guard.check(s.host, s.port)
        password = self.secrets.get(s.password_secret)
        timeout = min(s.timeout_seconds, context.timeout_seconds)

        def run() -> Any:
            imap = self._connect(timeout)
            try:
                try:
                    imap.login(s.username, password)
                except imaplib.IMAP4.error as exc:
                    raise _AuthFailed(_text(exc)) from None
                return work(imap)
            finally:
                _logout(imap)

        try:
            return await asyncio.to_thread(run)
        except Exception as exc:
            raise self._translate(exc) from exc

    def _connect(self, timeout: float) -> imaplib.IMAP4:
        s = self.settings
        if s.security == "tls":
            return imaplib.IMAP4_SSL(
                s.host,
                s.port,
                ssl_context=ssl.create_default_context(),
                timeout=timeout,
            )
        imap = imaplib.IMAP4(s.host, s.port, timeout=timeout)
        if s.security == "starttls":
            try:
                imap.starttls(ssl.create_default_context())
            except BaseException:
                imap.shutdown()
                raise
        return imap

    def _translate(self, exc: Exception) -> Exception:
        """Map imaplib, ssl and socket errors to ours (the one boundary)."""
        where = f"{self.settings.host}:{self.settings.port}"
        if isinstance(exc, errors.LobflowsError):
            return exc
        if isinstance(exc, _AuthFailed):
            return errors.ConnectorError(
                f"{self.name}: login as {self.settings.username!r} was refused: {exc}",
                retryable=False,
            )
        if isinstance(exc, ssl.SSLCertVerificationError):
            return errors.ConnectorError(
                f"{self.name}: TLS certificate of {where} was refused: {exc.verify_message}",
                retryable=False,
            )
        if isinstance(exc, imaplib.IMAP4.readonly):
            # A subclass of abort, but the mailbox refused a write: permanent.
            return errors.ConnectorError(
                f"{self.name}: mailbox is read-only: {_text(exc)}", retryable=False
            )
        if isinstance(exc, imaplib.IMAP4.abort | OSError | EOFError):
            return errors.TransportError(
                f"{self.name}: cannot talk to {where}: {_text(exc) or type(exc).__name__}"
            )
        if isinstance(exc, imaplib.IMAP4.error):
            return errors.ConnectorError(
                f"{self.name}: server refused: {_text(exc)}", retryable=False
            )
        return errors.ConnectorError(
            f"{self.name}: unexpected {type(exc).__name__}: {exc}", retryable=False
        )

    # actions, in the worker thread --------------------------------------------

    def _fetch_new(self, imap: imaplib.IMAP4, p: FetchParams) -> list[dict[str, Any]]:
        mailbox = self.settings.mailbox
        uidvalidity = _select(imap, mailbox, readonly=True)
        since = self._since(mailbox, uidvalidity, p)
        _, data = _ok(imap.uid("SEARCH", f"UID {since + 1}:*"))
        # "n:*" always matches the highest message, even one below n.
        uids = sorted(int(u) for u in b" ".join(data).split() if int(u) > since)
        uids = uids[: p.limit]
        messages = [_message(uid, uidvalidity, raw) for uid, raw in _fetch(imap, uids)]
        place = self._places[mailbox]
        place.highest_uid = max([place.highest_uid, *uids])
        return messages

    def _since(self, mailbox: str, uidvalidity: int, p: FetchParams) -> int:
        place = self._places.get(mailbox)
        known = p.uidvalidity or (place.uidvalidity if place else None)
        if known is not None and known != uidvalidity:
            log.warning(
                "UIDVALIDITY of the mailbox changed; its watermark is reset",
                extra={
                    "event": "imap_uidvalidity_changed",
                    "connection": self.name,
                    "mailbox": mailbox,
                },
            )
            self._places[mailbox] = _Place(uidvalidity, stale_since_uid=p.since_uid)
            return 0
        if place is None or place.uidvalidity != uidvalidity:
            self._places[mailbox] = _Place(uidvalidity)
            return p.since_uid
        if place.stale_since_uid is not None and p.since_uid <= place.stale_since_uid:
            return place.highest_uid
        return p.since_uid

    def _mark_seen(self, imap: imaplib.IMAP4, p: UidParams) -> dict[str, Any]:
        self._select_for(imap, p)
        _ok(imap.uid("STORE", str(p.uid), "+FLAGS.SILENT", "(\\Seen)"))
        return {"uid": p.uid, "seen": True}

    def _move(self, imap: imaplib.IMAP4, p: MoveParams) -> dict[str, Any]:
        self._select_for(imap, p)
        target = _quoted(p.mailbox)
        # imaplib keeps the greeting's capabilities; ask again after login.
        _, answer = _ok(imap.capability())
        if b"MOVE" in b" ".join(answer).upper().split():
            _ok(imap.uid("MOVE", str(p.uid), target))
        else:
            # RFC 6851's fallback: copy, flag deleted, expunge.
            _ok(imap.uid("COPY", str(p.uid), target))
            _ok(imap.uid("STORE", str(p.uid), "+FLAGS.SILENT", "(\\Deleted)"))
            _ok(imap.expunge())
        return {"uid": p.uid, "mailbox": p.mailbox}

    def _select_for(self, imap: imaplib.IMAP4, p: UidParams) -> None:
        uidvalidity = _select(imap, self.settings.mailbox, readonly=False)
        if p.uidvalidity is not None and p.uidvalidity != uidvalidity:
            raise errors.ConnectorError(
                f"{self.name}: UIDVALIDITY of {self.settings.mailbox!r} is "
                f"{uidvalidity}, not {p.uidvalidity}: UID {p.uid} may name "
                "another message now",
                retryable=False,
            )


def _select(imap: imaplib.IMAP4, mailbox: str, *, readonly: bool) -> int:
    _ok(imap.select(_quoted(mailbox), readonly=readonly))
    _, data = imap.response("UIDVALIDITY")
    if not data or data[0] is None:
        raise imaplib.IMAP4.error(f"no UIDVALIDITY for {mailbox!r}")
    return int(data[0])


def _fetch(imap: imaplib.IMAP4, uids: list[int]) -> list[tuple[int, bytes]]:
    if not uids:
        return []
    _, data = _ok(imap.uid("FETCH", ",".join(map(str, uids)), "(UID BODY.PEEK[])"))
    found = []
    for part in data:
        if isinstance(part, tuple) and (match := _UID.search(part[0])):
            found.append((int(match.group(1)), part[1]))
    return sorted(found)


def _message(uid: int, uidvalidity: int, raw: bytes) -> dict[str, Any]:
    # IMAP carries CRLF; the email package works with plain newlines.
    message = _PARSER.parsebytes(raw.replace(b"\r\n", b"\n"))
    assert isinstance(message, EmailMessage)
    text = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    return {
        "uid": uid,
        "uidvalidity": uidvalidity,
        "message_id": _header(message, "Message-ID"),
        "in_reply_to": _header(message, "In-Reply-To"),
        "from": _header(message, "From"),
        "to": _header(message, "To"),
        "cc": _header(message, "Cc"),
        "subject": _header(message, "Subject"),
        "date": _date(message),
        "text": text.get_content() if text is not None else None,
        "html": html.get_content() if html is not None else None,
        "attachments": [_attachment(part) for part in message.iter_attachments()],
    }


def _attachment(part: Any) -> dict[str, Any]:
    payload = part.get_payload(decode=True) or b""
    return {
        "filename": part.get_filename(),
        "content_type": part.get_content_type(),
        "size": len(payload),
    }


def _header(message: EmailMessage, name: str) -> str | None:
    value = message.get(name)
    return str(value) if value is not None else None


def _date(message: EmailMessage) -> str | None:
    value = _header(message, "Date")
    if value is None:
        return None
    try:
        return parsedate_to_datetime(value).isoformat()
    except (TypeError, ValueError):
        return value


def _ok(answer: tuple[str, list[Any]]) -> tuple[str, list[Any]]:
    status, data = answer
    if status != "OK":
        detail = b" ".join(d for d in data if isinstance(d, bytes)).decode(
            "utf-8", "replace"
        )
        raise imaplib.IMAP4.error(f"{status} {detail}".strip())
    return status, data


def _logout(imap: imaplib.IMAP4) -> None:
    try:
        imap.logout()
    except (imaplib.IMAP4.error, OSError):
        pass


def _quoted(mailbox: str) -> str:
    escaped = mailbox.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _checked_mailbox(value: str) -> str:
    if not value or not value.isascii() or any(ord(c) < 32 for c in value):
        raise ValueError("must be a non-empty ASCII mailbox name without controls")
    return value


def _text(exc: BaseException) -> str:
    detail = exc.args[0] if exc.args else ""
    if isinstance(detail, bytes):
        return detail.decode("utf-8", "replace")
    return str(detail)
