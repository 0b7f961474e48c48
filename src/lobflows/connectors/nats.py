"""NATS JetStream (nats-py): publish with a JetStream ack, and consume a
durable pull consumer into event triggers.

A trigger's queue is ``stream/consumer`` or ``stream/consumer/subject``: the
JetStream stream and the durable pull consumer to read it with. A consumer
that does not exist is created with explicit acks, delivering the whole
stream (or only ``subject``, which may hold wildcards) from its start, with
this connection's ``ack_wait_seconds``. An existing consumer is used as it
is; its ``subject`` part is then ignored.

A message is acknowledged (and the ack confirmed by the server) only once
`deliver` has stored its runs. A consumer that dies leaves its messages
unacknowledged, and JetStream delivers them again after the consumer's
ack wait. The event id, each run's dedupe key, is the message's
``Nats-Msg-Id`` header when the publisher set one (this connector's publish
always does) and the stream name and sequence otherwise: the redelivered
message starts nothing new.

Publishing sets ``Nats-Msg-Id`` to the step's idempotency key, so a retried
publish inside the stream's duplicate window (two minutes by default) is
stored once; the reply says whether it was a duplicate.

Failures: connection trouble, timeouts and an unavailable JetStream are
retryable; a subject no stream takes, a missing stream and refused
credentials are not.
"""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

import pydantic

from lobflows import errors
from lobflows.connectors import _http, base
from lobflows.engine import events

log = logging.getLogger(__name__)

Deliver = Callable[[events.Event], Awaitable[Any]]
DEFAULT_PORT = 4222
MSG_ID_HEADER = "Nats-Msg-Id"


class NatsSettings(base.NetworkSettings):
    url: str = pydantic.Field(
        description="nats:// or tls:// URL without credentials, "
        "e.g. nats://bus.example.com:4222."
    )
    user: str | None = pydantic.Field(
        default=None, description="User name; none by default."
    )
    password_secret: str | None = pydantic.Field(
        default=None, description="Secret holding the user's password."
    )
    token_secret: str | None = pydantic.Field(
        default=None, description="Secret holding an authentication token."
    )
    batch_size: int = pydantic.Field(
        default=10, ge=1, le=1000, description="Messages fetched per pull."
    )
    fetch_wait_seconds: float = pydantic.Field(
        default=2.0, gt=0, le=60, description="How long one pull waits."
    )
    ack_wait_seconds: float = pydantic.Field(
        default=30.0,
        gt=0,
        description="Ack wait of a consumer this connection creates: how long "
        "before an unacknowledged message is delivered again.",
    )

    @pydantic.field_validator("url")
    @classmethod
    def _nats_url(cls, url: str) -> str:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("nats", "tls") or not parts.hostname:
            raise ValueError(
                f"url must be nats://host:port or tls://host:port (got {parts.scheme!r})"
            )
        if parts.username is not None or parts.password is not None:
            raise ValueError(
                "url must not hold credentials; give user and password_secret"
            )
        return url

    @pydantic.model_validator(mode="after")
    def _one_credential(self) -> NatsSettings:
        if self.password_secret is not None and self.user is None:
            raise ValueError("password_secret needs user")
        if self.token_secret is not None and self.user is not None:
            raise ValueError("give either user or token_secret")
        return self


class PublishParams(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    subject: str = pydantic.Field(min_length=1)
    body: Any = None
    headers: dict[str, str] = pydantic.Field(default_factory=dict)
    msg_id: str | None = pydantic.Field(default=None, min_length=1)


class NatsConnector(base.Connector):
    """Publishes to NATS JetStream and consumes pull consumers for event triggers."""

    kind = "nats"
    settings_model = NatsSettings
    actions = {
        "publish": "Publish a JSON message to a JetStream subject, acked by the stream.",
    }

    def __init__(self, name: str, settings: NatsSettings, secrets: Any) -> None:
        super().__init__(name, settings, secrets)
        self.settings: NatsSettings = settings
        self.guard = _http.AddressGuard(settings.allow_networks)
        self._client: Any = None  # opened on first publish
        self._client_lock = asyncio.Lock()

    # -- publish -------------------------------------------------------------

    async def action_publish(
        self, params: dict[str, Any], context: base.CallContext
    ) -> Any:
        p: PublishParams = base.parse_params(
            PublishParams, params, action=f"{self.name}.publish"
        )
        msg_id = p.msg_id or context.idempotency_key
        headers = {**p.headers, MSG_ID_HEADER: msg_id}
        timeout = min(self.settings.timeout_seconds, context.timeout_seconds)
        with self._translated(f"publish to {p.subject}"):
            client = await self._publishing_client()
            ack = await client.jetstream().publish(
                p.subject, json.dumps(p.body).encode(), timeout=timeout, headers=headers
            )
        return {
            "msg_id": msg_id,
            "stream": ack.stream,
            "sequence": ack.seq,
            "is_duplicate": bool(ack.duplicate),
        }

    async def _publishing_client(self) -> Any:
        async with self._client_lock:
            if self._client is not None and self._client.is_connected:
                return self._client
            if self._client is not None:
                await self._client.close()
            self._client = await self._connect()
            return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def check(self) -> str:
        """Connect with the configured credentials, ask JetStream for the
        account's figures, then close."""
        with self._translated("check"):
            client = await self._connect()
            try:
                jetstream = client.jetstream(timeout=self.settings.timeout_seconds)
                account = await jetstream.account_info()
            finally:
                await client.close()
        who = f" as {self.settings.user}" if self.settings.user else ""
        return (
            f"connected to {self.settings.url}{who}; "
            f"JetStream answers with {account.streams} streams"
        )

    # -- consume -------------------------------------------------------------

    async def consume(
        self,
        queue: str,
        deliver: Deliver,
        *,
        topic: str,
        on_ready: Callable[[], None] | None = None,
    ) -> None:
        """Consume ``stream/consumer[/subject]`` until the connection is lost
        (raising TransportError) or the task is cancelled; each message is
        acknowledged after `deliver` returns.

        A body that is not JSON is terminated: JetStream never delivers it
        again. When `deliver` fails, the message and the rest of its batch
        are negatively acknowledged, to be delivered again, and the error is
        raised for the caller to back off.
        """
        stream, consumer, subject = parse_queue(queue)
        with self._translated(f"consume {queue}"):
            client = await self._connect()
        try:
            with self._translated(f"consume {queue}"):
                jetstream = client.jetstream()
                await self._ensure_consumer(jetstream, stream, consumer, subject)
                subscription = await jetstream.pull_subscribe_bind(
                    durable=consumer, stream=stream
                )
            if on_ready is not None:
                on_ready()
            with self._translated(f"consume {queue}"):
                await self._pull_forever(client, subscription, deliver, queue, topic)
        finally:
            await client.close()

    async def _pull_forever(
        self, client: Any, subscription: Any, deliver: Deliver, queue: str, topic: str
    ) -> None:
        nats = _nats()
        s = self.settings
        while True:
            if client.is_closed:
                raise errors.TransportError(
                    f"{self.name}: lost the connection while consuming {queue}",
                    connection=self.name,
                )
            try:
                messages = await subscription.fetch(
                    batch=s.batch_size, timeout=s.fetch_wait_seconds
                )
            except nats.errors.TimeoutError:
                base.raise_if_cancelled()
                continue  # nothing arrived while waiting
            base.raise_if_cancelled()
            for index, message in enumerate(messages):
                try:
                    await self._take(message, deliver, queue=queue, topic=topic)
                except BaseException:
                    await _give_back(messages[index:])
                    raise

    async def _ensure_consumer(
        self, jetstream: Any, stream: str, consumer: str, subject: str | None
    ) -> None:
        nats = _nats()
        try:
            await jetstream.consumer_info(stream, consumer)
            return
        except nats.js.errors.NotFoundError:
            pass
        config = nats.js.api.ConsumerConfig(
            durable_name=consumer,
            ack_policy=nats.js.api.AckPolicy.EXPLICIT,
            deliver_policy=nats.js.api.DeliverPolicy.ALL,
            ack_wait=self.settings.ack_wait_seconds,
            filter_subject=subject,
        )
        await jetstream.add_consumer(stream, config)
        log.info(
            "Created a durable pull consumer",
            extra={
                "event": "consumer_created",
                "connection": self.name,
                "queue": f"{stream}/{consumer}",
            },
        )

    async def _take(
        self, message: Any, deliver: Deliver, *, queue: str, topic: str
    ) -> None:
        try:
            data = json.loads(message.data)
        except ValueError:
            log.warning(
                "Message is not JSON; terminated",
                extra={
                    "event": "message_rejected",
                    "connection": self.name,
                    "queue": queue,
                    "message_id": (message.headers or {}).get(MSG_ID_HEADER),
                },
            )
            await message.term()
            return

        event = events.Event(
            topic=topic, data=data, id=message_event_id(message), source="nats"
        )
        await deliver(event)

        await message.ack_sync(timeout=self.settings.timeout_seconds)

    # -- plumbing ------------------------------------------------------------

    async def _connect(self) -> Any:
        nats = _nats()
        s = self.settings
        parts = urllib.parse.urlsplit(s.url)
        await self.guard.check(parts.hostname or "", parts.port or DEFAULT_PORT)
        password = self.secrets.get(s.password_secret) if s.password_secret else None
        token = self.secrets.get(s.token_secret) if s.token_secret else None
        return await nats.connect(
            servers=[s.url],
            user=s.user,
            password=password,
            token=token,
            connect_timeout=s.timeout_seconds,
            # The caller reconnects with backoff; a silent reconnect inside
            # nats-py would hide an outage from the server's log.
            allow_reconnect=False,
            # Bounds the attempts of the first connect too (0 is unbounded).
            max_reconnect_attempts=1,
            reconnect_time_wait=0.5,
            error_cb=self._on_error,
        )

    async def _on_error(self, exc: Exception) -> None:
        # nats-py would log each at ERROR; the consumer logs the outage once.
        log.debug(
            "NATS client error: %s",
            exc,
            extra={"event": "nats_client_error", "connection": self.name},
        )

    def _translated(self, doing: str) -> base.Translated:
        return base.Translated(translate, self.name, doing)


def parse_queue(queue: str) -> tuple[str, str, str | None]:
    """``stream/consumer[/subject]`` as its parts; names hold no slashes."""
    parts = queue.split("/", 2)
    if len(parts) < 2 or not all(parts):
        raise errors.ConfigurationError(
            f"queue {queue!r} must be stream/consumer or stream/consumer/subject, "
            "e.g. ORDERS/lobflows"
        )
    return parts[0], parts[1], parts[2] if len(parts) == 3 else None


def message_event_id(message: Any) -> str:
    """The Nats-Msg-Id header, else the stream name and sequence."""
    msg_id = (message.headers or {}).get(MSG_ID_HEADER)
    if msg_id:
        return f"nats-msg:{msg_id}"
    metadata = message.metadata
    return f"nats:{metadata.stream}:{metadata.sequence.stream}"


async def _give_back(messages: list[Any]) -> None:
    """Negatively acknowledge what was fetched and not taken: delivered again soon."""
    for message in messages:
        try:
            await message.nak()
        except Exception:  # the connection may be gone; ack wait covers it
            log.debug("Could not nak a message", exc_info=True)


def translate(
    exc: BaseException, *, connection: str, doing: str
) -> errors.ConnectorError | None:
    """Our error for one of nats-py's, or None for what is not the server's."""
    nats = _nats()
    where = f"{connection}: {doing}"
    # Recent nats-py raises NoStreamResponseError here; older releases
    # NoRespondersError.
    no_stream = getattr(nats.js.errors, "NoStreamResponseError", None)
    if isinstance(exc, nats.errors.NoRespondersError) or (
        no_stream is not None and isinstance(exc, no_stream)
    ):
        return errors.ConnectorError(
            f"{where} failed: no stream takes the subject",
            retryable=False,
            connection=connection,
        )
    if isinstance(exc, nats.errors.AuthorizationError):
        return errors.ConnectorError(
            f"{where}: the server refused the credentials",
            retryable=False,
            connection=connection,
        )
    if isinstance(exc, nats.js.errors.ServiceUnavailableError):
        return errors.TransportError(
            f"{where} failed: JetStream is unavailable", connection=connection
        )
    if isinstance(exc, nats.js.errors.NotFoundError):
        return errors.ConnectorError(
            f"{where} failed: not found ({exc})", retryable=False, connection=connection
        )
    if isinstance(exc, nats.js.errors.APIError):
        return errors.ConnectorError(
            f"{where} was refused: {exc}", retryable=False, connection=connection
        )
    if isinstance(exc, nats.errors.Error | OSError | asyncio.TimeoutError):
        return errors.TransportError(
            f"{where} failed: {type(exc).__name__} {exc}".rstrip(),
            connection=connection,
        )
    return None


def _nats() -> Any:
    try:
        import nats
        import nats.errors
        import nats.js.api
        import nats.js.errors
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise errors.ConfigurationError(
            "the nats connector needs nats-py: pip install 'nats-py>=2.9,<3'"
        ) from exc
    return nats
