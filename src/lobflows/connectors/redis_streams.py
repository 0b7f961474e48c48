"""Redis Streams (redis-py): publish with XADD, and consume a stream through a
consumer group into event triggers.

A trigger's queue is ``stream/group``: the stream's key and the consumer
group to read it with. The group is created (at the start of the stream, and
the stream with it) when missing. Each process reads as its own consumer,
named by host and process id.

An entry is acknowledged (XACK) only once `deliver` has stored its runs. A
consumer that dies leaves its entries pending in the group; on start, and
then every ``claim_idle_seconds``, the consumer claims (XAUTOCLAIM) entries
pending longer than that, so another or a restarted process delivers them
again. The event id, each run's dedupe key, is the entry's ``msg_id`` field
when the publisher set one (this connector's publish always does) and the
stream entry id otherwise: the redelivered entry starts nothing new.

Entry fields: ``body`` holds the JSON data; an entry without ``body`` (from
another producer) is delivered as its fields, a map of strings.

Failures: connection trouble and timeouts are retryable; refused
credentials and an error reply (such as a key of another type) are not.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

import pydantic

from lobflows import errors
from lobflows.connectors import _http, base
from lobflows.engine import events

log = logging.getLogger(__name__)

Deliver = Callable[[events.Event], Awaitable[Any]]
DEFAULT_PORT = 6379
BODY_FIELD = "body"
MSG_ID_FIELD = "msg_id"


class RedisStreamSettings(base.NetworkSettings):
    url: str = pydantic.Field(
        description="redis:// or rediss:// URL without a password, "
        "e.g. redis://flows@cache.example.com:6379/0."
    )
    password_secret: str | None = pydantic.Field(
        default=None, description="Secret holding the password; none by default."
    )
    batch_size: int = pydantic.Field(
        default=10, ge=1, le=1000, description="Entries read per XREADGROUP."
    )
    block_ms: int = pydantic.Field(
        default=2000,
        ge=10,
        le=60000,
        description="How long one XREADGROUP waits for entries, in milliseconds.",
    )
    claim_idle_seconds: float = pydantic.Field(
        default=60.0,
        gt=0,
        description="Entries pending this long (a consumer died) are claimed "
        "and delivered again; also how often the consumer looks for them.",
    )

    @pydantic.field_validator("url")
    @classmethod
    def _redis_url(cls, url: str) -> str:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("redis", "rediss") or not parts.hostname:
            raise ValueError(
                f"url must be redis://host or rediss://host (got {parts.scheme!r})"
            )
        if parts.password is not None:
            raise ValueError("url must not hold a password; name it in password_secret")
        database = parts.path.strip("/")
        if database and not database.isdigit():
            raise ValueError(f"url path must be a database number (got {database!r})")
        return url


class PublishParams(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    stream: str = pydantic.Field(min_length=1)
    body: Any = None
    # Trim the stream to about this many entries (XADD MAXLEN ~); none by default.
    maxlen: int | None = pydantic.Field(default=None, gt=0)
    msg_id: str | None = pydantic.Field(default=None, min_length=1)


class RedisStreamConnector(base.Connector):
    """Appends entries to Redis streams and consumes them for event triggers."""

    kind = "redis_stream"
    settings_model = RedisStreamSettings
    actions = {
        "publish": "Append a JSON entry to a stream (XADD).",
    }

    def __init__(self, name: str, settings: RedisStreamSettings, secrets: Any) -> None:
        super().__init__(name, settings, secrets)
        self.settings: RedisStreamSettings = settings
        self.guard = _http.AddressGuard(settings.allow_networks)
        self.consumer_name = f"{socket.gethostname()}-{os.getpid()}"
        self._client: Any = None  # opened on first publish

    # -- publish -------------------------------------------------------------

    async def action_publish(
        self, params: dict[str, Any], context: base.CallContext
    ) -> Any:
        p: PublishParams = base.parse_params(
            PublishParams, params, action=f"{self.name}.publish"
        )
        msg_id = p.msg_id or context.idempotency_key
        fields = {BODY_FIELD: json.dumps(p.body), MSG_ID_FIELD: msg_id}
        with self._translated(f"publish to {p.stream}"):
            if self._client is None:
                self._client = await self._connect()
            entry_id = await asyncio.wait_for(
                self._client.xadd(p.stream, fields, maxlen=p.maxlen, approximate=True),
                min(self.settings.timeout_seconds, context.timeout_seconds),
            )
        return {"stream": p.stream, "entry_id": _text(entry_id), "msg_id": msg_id}

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def check(self) -> str:
        """Connect with the configured credentials, PING, then close."""
        with self._translated("check"):
            client = await self._connect()
            await client.aclose()
        parts = urllib.parse.urlsplit(self.settings.url)
        where = f"{parts.hostname}:{parts.port or DEFAULT_PORT}"
        database = parts.path.strip("/") or "0"
        return f"PING answered by {where}, database {database}"

    # -- consume -------------------------------------------------------------

    async def consume(
        self,
        queue: str,
        deliver: Deliver,
        *,
        topic: str,
        on_ready: Callable[[], None] | None = None,
    ) -> None:
        """Consume ``stream/group`` until the connection is lost (raising
        TransportError) or the task is cancelled; each entry is acknowledged
        after `deliver` returns.

        An entry whose body is not JSON is acknowledged and logged: Redis
        has no dead-letter place, and leaving it pending would deliver it
        again forever. When `deliver` fails the error is raised; the entry
        stays pending for this consumer and is read again on reconnect.
        """
        stream, group = parse_queue(queue)
        with self._translated(f"consume {queue}"):
            client = await self._connect()
        try:
            with self._translated(f"consume {queue}"):
                await self._ensure_group(client, stream, group)
                # Our own pending entries first: a reconnect after a failure.
                await self._take_pending(client, deliver, stream, group, topic)
                await self._claim_idle(client, deliver, stream, group, topic)
            if on_ready is not None:
                on_ready()
            with self._translated(f"consume {queue}"):
                await self._read_forever(client, deliver, stream, group, topic)
        finally:
            await client.aclose()

    async def _read_forever(
        self, client: Any, deliver: Deliver, stream: str, group: str, topic: str
    ) -> None:
        loop = asyncio.get_running_loop()
        s = self.settings
        next_claim = loop.time() + s.claim_idle_seconds
        while True:
            replies = await client.xreadgroup(
                group,
                self.consumer_name,
                {stream: ">"},
                count=s.batch_size,
                block=s.block_ms,
            )
            base.raise_if_cancelled()
            for _, entries in replies or []:
                await self._take_all(client, entries, deliver, stream, group, topic)
            if loop.time() >= next_claim:
                await self._claim_idle(client, deliver, stream, group, topic)
                next_claim = loop.time() + s.claim_idle_seconds

    async def _ensure_group(self, client: Any, stream: str, group: str) -> None:
        redis = _redis()
        try:
            await client.xgroup_create(stream, group, id="0", mkstream=True)
        except redis.exceptions.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _take_pending(
        self, client: Any, deliver: Deliver, stream: str, group: str, topic: str
    ) -> None:
        start = "0"
        while True:
            replies = await client.xreadgroup(
                group,
                self.consumer_name,
                {stream: start},
                count=self.settings.batch_size,
            )
            entries = replies[0][1] if replies else []
            if not entries:
                return
            await self._take_all(client, entries, deliver, stream, group, topic)
            start = _text(entries[-1][0])

    async def _claim_idle(
        self, client: Any, deliver: Deliver, stream: str, group: str, topic: str
    ) -> None:
        """Take over entries another (likely dead) consumer left pending."""
        idle_ms = int(self.settings.claim_idle_seconds * 1000)
        start = "0-0"
        while True:
            reply = await client.xautoclaim(
                stream,
                group,
                self.consumer_name,
                min_idle_time=idle_ms,
                start_id=start,
                count=self.settings.batch_size,
            )
            start, entries = _text(reply[0]), reply[1]
            if entries:
                log.info(
                    "Claimed entries left pending by another consumer",
                    extra={
                        "event": "entries_claimed",
                        "connection": self.name,
                        "queue": f"{stream}/{group}",
                        "count": len(entries),
                    },
                )
            await self._take_all(client, entries, deliver, stream, group, topic)
            if start == "0-0":
                return

    async def _take_all(
        self,
        client: Any,
        entries: list[Any],
        deliver: Deliver,
        stream: str,
        group: str,
        topic: str,
    ) -> None:
        for entry_id, fields in entries:
            await self._take(
                client, _text(entry_id), fields, deliver, stream, group, topic
            )

    async def _take(
        self,
        client: Any,
        entry_id: str,
        fields: dict[Any, Any] | None,
        deliver: Deliver,
        stream: str,
        group: str,
        topic: str,
    ) -> None:
        if not fields:
            # A pending entry trimmed from the stream: nothing to deliver.
            await client.xack(stream, group, entry_id)
            return
        decoded = {_text(k): _text(v) for k, v in fields.items()}
        try:
            data = json.loads(decoded[BODY_FIELD]) if BODY_FIELD in decoded else decoded
        except ValueError:
            log.warning(
                "Entry body is not JSON; acknowledged without a run",
                extra={
                    "event": "message_rejected",
                    "connection": self.name,
                    "queue": f"{stream}/{group}",
                    "entry_id": entry_id,
                },
            )
            await client.xack(stream, group, entry_id)
            return

        event = events.Event(
            topic=topic,
            data=data,
            id=entry_event_id(stream, entry_id, decoded),
            source="redis_stream",
        )
        await deliver(event)

        await client.xack(stream, group, entry_id)

    # -- plumbing ------------------------------------------------------------

    async def _connect(self) -> Any:
        redis = _redis()
        s = self.settings
        parts = urllib.parse.urlsplit(s.url)
        host = parts.hostname or ""
        port = parts.port or DEFAULT_PORT
        await self.guard.check(host, port)
        password = self.secrets.get(s.password_secret) if s.password_secret else None
        database = parts.path.strip("/")
        client = redis.asyncio.Redis(
            host=host,
            port=port,
            db=int(database) if database else 0,
            username=urllib.parse.unquote(parts.username) if parts.username else None,
            password=password,
            ssl=parts.scheme == "rediss",
            socket_connect_timeout=s.timeout_seconds,
            # Reads block up to block_ms; a socket timeout must outlast them.
            socket_timeout=s.timeout_seconds + s.block_ms / 1000,
        )
        try:
            await client.ping()
        except BaseException:
            await client.aclose()
            raise
        return client

    def _translated(self, doing: str) -> base.Translated:
        return base.Translated(translate, self.name, doing)


def parse_queue(queue: str) -> tuple[str, str]:
    """``stream/group`` as its two parts; the stream key may hold slashes."""
    stream, slash, group = queue.rpartition("/")
    if not slash or not stream or not group:
        raise errors.ConfigurationError(
            f"queue {queue!r} must be stream/group, e.g. orders/lobflows"
        )
    return stream, group


def entry_event_id(stream: str, entry_id: str, fields: dict[str, str]) -> str:
    """The publisher's msg_id field, else the stream key and entry id."""
    if fields.get(MSG_ID_FIELD):
        return f"redis-msg:{fields[MSG_ID_FIELD]}"
    return f"redis:{stream}:{entry_id}"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def translate(
    exc: BaseException, *, connection: str, doing: str
) -> errors.ConnectorError | None:
    """Our error for one of redis-py's, or None for what is not the server's."""
    redis = _redis()
    where = f"{connection}: {doing}"
    # AuthenticationError is a ConnectionError: test it first.
    if isinstance(
        exc,
        redis.exceptions.AuthenticationError
        | redis.exceptions.AuthenticationWrongNumberOfArgsError
        | redis.exceptions.NoPermissionError,
    ):
        return errors.ConnectorError(
            f"{where}: the server refused the credentials or command ({exc})",
            retryable=False,
            connection=connection,
        )
    if isinstance(
        exc,
        redis.exceptions.ConnectionError
        | redis.exceptions.TimeoutError
        | OSError
        | asyncio.TimeoutError,
    ):
        return errors.TransportError(
            f"{where} failed: {type(exc).__name__} {exc}".rstrip(),
            connection=connection,
        )
    if isinstance(exc, redis.exceptions.RedisError):
        return errors.ConnectorError(
            f"{where} was refused: {exc}", retryable=False, connection=connection
        )
    return None


def _redis() -> Any:
    try:
        import redis
        import redis.asyncio
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise errors.ConfigurationError(
            "the redis_stream connector needs redis: pip install 'redis>=5.2,<9'"
        ) from exc
    return redis
