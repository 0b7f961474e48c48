"""RabbitMQ (aio-pika): publish with publisher confirms, and consume a queue
into event triggers.

A consumed message is acknowledged only once `deliver` has stored its runs,
so a consumer that dies mid-message leaves it unacknowledged and the broker
hands it out again. The event id is the message's AMQP ``message_id`` (or a
hash of its body), which is each run's dedupe key: the redelivered message
starts nothing new.

Failures: connection trouble, a broker nack and a closed channel are
retryable; an unroutable message (published as mandatory), a missing
exchange and refused credentials are not.
"""

from __future__ import annotations

import asyncio
import hashlib
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
DEFAULT_PORT = 5672


class RabbitmqSettings(base.NetworkSettings):
    url: str | None = pydantic.Field(
        default=None,
        description="amqp:// or amqps:// URL without a password, "
        "e.g. amqp://flows@mq.example.com/erp; or give host instead.",
    )
    host: str | None = pydantic.Field(default=None, description="Broker host.")
    port: int = pydantic.Field(default=DEFAULT_PORT, gt=0, lt=65536)
    user: str = pydantic.Field(default="guest", description="User name.")
    virtual_host: str = pydantic.Field(default="/", description="Virtual host.")
    password_secret: str | None = pydantic.Field(
        default=None, description="Secret holding the password."
    )
    prefetch: int = pydantic.Field(
        default=10, ge=1, le=1000, description="Unacknowledged messages per consumer."
    )

    @pydantic.model_validator(mode="after")
    def _one_address(self) -> RabbitmqSettings:
        if (self.url is None) == (self.host is None):
            raise ValueError("give either url or host")
        if self.url is None:
            return self
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme not in ("amqp", "amqps") or not parts.hostname:
            raise ValueError(
                f"url must be amqp://host or amqps://host (got {parts.scheme!r})"
            )
        if parts.password is not None:
            raise ValueError("url must not hold a password; name it in password_secret")
        return self


class PublishParams(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    exchange: str = ""
    routing_key: str
    body: Any = None
    headers: dict[str, Any] = pydantic.Field(default_factory=dict)
    message_id: str | None = pydantic.Field(default=None, min_length=1)


class RabbitmqConnector(base.Connector):
    """Publishes messages to RabbitMQ and consumes queues for event triggers."""

    kind = "rabbitmq"
    settings_model = RabbitmqSettings
    actions = {
        "publish": "Publish a persistent JSON message, confirmed by the broker.",
    }

    def __init__(self, name: str, settings: RabbitmqSettings, secrets: Any) -> None:
        super().__init__(name, settings, secrets)
        self.settings: RabbitmqSettings = settings
        self.guard = _http.AddressGuard(settings.allow_networks)
        self._publisher: Any = None  # (connection, channel) opened on first publish
        self._publisher_lock = asyncio.Lock()

    # -- publish -------------------------------------------------------------

    async def action_publish(
        self, params: dict[str, Any], context: base.CallContext
    ) -> Any:
        p: PublishParams = base.parse_params(
            PublishParams, params, action=f"{self.name}.publish"
        )
        aio_pika = _aio_pika()
        message_id = p.message_id or context.idempotency_key
        message = aio_pika.Message(
            json.dumps(p.body).encode(),
            content_type="application/json",
            headers=p.headers,
            message_id=message_id,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        timeout = min(self.settings.timeout_seconds, context.timeout_seconds)
        with self._translated(f"publish to {p.exchange or '(default)'}"):
            channel = await self._publishing_channel()
            exchange = (
                await channel.get_exchange(p.exchange, ensure=True)
                if p.exchange
                else channel.default_exchange
            )
            # mandatory: a message no queue takes is returned, not dropped.
            await exchange.publish(
                message, p.routing_key, mandatory=True, timeout=timeout
            )
        return {"message_id": message_id, "routing_key": p.routing_key}

    async def _publishing_channel(self) -> Any:
        async with self._publisher_lock:
            if self._publisher is not None and not self._publisher[1].is_closed:
                return self._publisher[1]
            if self._publisher is not None:
                await self._publisher[0].close()
            connection = await self._connect()
            # on_return_raises: a mandatory message no queue took fails the publish.
            channel = await connection.channel(
                publisher_confirms=True, on_return_raises=True
            )
            self._publisher = (connection, channel)
            return channel

    async def close(self) -> None:
        if self._publisher is not None:
            await self._publisher[0].close()
            self._publisher = None

    async def check(self) -> str:
        """Connect with the configured credentials and virtual host, then close."""
        address = self._address()
        with self._translated("check"):
            connection = await self._connect()
            await connection.close()
        where = f"{address['host']}:{address['port']}"
        return (
            f"connected to {where}, virtual host {address['virtualhost']!r}, "
            f"as {address['login']}"
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
        """Consume a queue until the connection is lost (raising TransportError)
        or the task is cancelled; each message is acked after `deliver` returns.

        A body that is not JSON is rejected without requeue: the broker moves
        it to the queue's dead-letter exchange if it has one, else drops it.
        When `deliver` fails the channel is closed, so every unacked message
        goes back to the queue, and the error is raised for the caller to
        back off.
        """
        with self._translated(f"consume {queue}"):
            connection = await self._connect()
        try:
            with self._translated(f"consume {queue}"):
                channel = await connection.channel(publisher_confirms=False)
                await channel.set_qos(prefetch_count=self.settings.prefetch)
                source = await channel.get_queue(queue, ensure=True)
            failed: asyncio.Future[BaseException] = (
                asyncio.get_running_loop().create_future()
            )

            async def take(message: Any) -> None:
                try:
                    await self._take(message, deliver, queue=queue, topic=topic)
                except Exception as exc:
                    if not failed.done():
                        failed.set_result(exc)

            with self._translated(f"consume {queue}"):
                await source.consume(take)
            if on_ready is not None:
                on_ready()
            await asyncio.wait(
                [failed, channel.closed(), connection.closed()],
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            await connection.close()
        if failed.done():
            raise failed.result()
        raise errors.TransportError(
            f"{self.name}: lost the connection while consuming {queue}",
            connection=self.name,
        )

    async def _take(
        self, message: Any, deliver: Deliver, *, queue: str, topic: str
    ) -> None:
        try:
            data = json.loads(message.body)
        except ValueError:
            log.warning(
                "Message is not JSON; rejected",
                extra={
                    "event": "message_rejected",
                    "connection": self.name,
                    "queue": queue,
                    "message_id": message.message_id,
                },
            )
            # Without requeue: the queue's dead-letter exchange takes it, if any.
            await message.reject(requeue=False)
            return

        event = events.Event(
            topic=topic, data=data, id=message_event_id(message), source="rabbitmq"
        )
        await deliver(event)

        await message.ack()

    # -- plumbing ------------------------------------------------------------

    async def _connect(self) -> Any:
        aio_pika = _aio_pika()
        s = self.settings
        address = self._address()
        await self.guard.check(address["host"], address["port"])
        password = self.secrets.get(s.password_secret) if s.password_secret else None
        return await aio_pika.connect(
            **address,
            password=password if password is not None else "guest",
            timeout=s.timeout_seconds,
        )

    def _address(self) -> dict[str, Any]:
        s = self.settings
        if s.url is None:
            return {
                "host": s.host,
                "port": s.port,
                "login": s.user,
                "virtualhost": s.virtual_host,
                "ssl": False,
            }
        parts = urllib.parse.urlsplit(s.url)
        is_tls = parts.scheme == "amqps"
        vhost = urllib.parse.unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
        return {
            "host": parts.hostname,
            "port": parts.port or (5671 if is_tls else DEFAULT_PORT),
            "login": urllib.parse.unquote(parts.username or "") or s.user,
            "virtualhost": vhost,
            "ssl": is_tls,
        }

    def _translated(self, doing: str) -> base.Translated:
        return base.Translated(translate, self.name, doing)


def message_event_id(message: Any) -> str:
    """The AMQP message_id, or a hash of the body when the publisher set none."""
    if message.message_id:
        return f"amqp:{message.message_id}"
    return "amqp-sha256:" + hashlib.sha256(message.body).hexdigest()


def translate(
    exc: BaseException, *, connection: str, doing: str
) -> errors.ConnectorError | None:
    """Our error for one of aio-pika's, or None for what is not the broker's."""
    from aiormq import exceptions as amqp

    where = f"{connection}: {doing}"
    if isinstance(exc, amqp.DeliveryError):
        returned = exc.message is not None
        reason = "no queue took it" if returned else "the broker refused it"
        return errors.ConnectorError(
            f"{where} failed: {reason}", retryable=not returned, connection=connection
        )
    if isinstance(exc, amqp.ChannelNotFoundEntity):
        return errors.ConnectorError(
            f"{where} failed: not found ({exc})", retryable=False, connection=connection
        )
    if isinstance(exc, amqp.ChannelPreconditionFailed | amqp.ChannelAccessRefused):
        return errors.ConnectorError(
            f"{where} was refused: {exc}", retryable=False, connection=connection
        )
    if isinstance(exc, amqp.ProbableAuthenticationError | amqp.AuthenticationError):
        return errors.ConnectorError(
            f"{where}: the broker refused the credentials",
            retryable=False,
            connection=connection,
        )
    if isinstance(exc, amqp.AMQPError | OSError | asyncio.TimeoutError):
        return errors.TransportError(
            f"{where} failed: {type(exc).__name__} {exc}".rstrip(),
            connection=connection,
        )
    return None


def _aio_pika() -> Any:
    try:
        import aio_pika
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise errors.ConfigurationError(
            "the rabbitmq connector needs aio-pika: pip install 'aio-pika>=9.4,<10'"
        ) from exc
    return aio_pika
