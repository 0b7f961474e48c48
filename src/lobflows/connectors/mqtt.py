"""MQTT (aiomqtt, MQTT 5): publish at QoS 1, and consume a topic filter into
event triggers.

A trigger's queue is a topic filter (``plant/+/alarms``). The consumer keeps
a persistent session: a fixed client id (the connection, queue and topic
hashed, plus the host name), ``clean_start`` off and a session expiry, so
the broker keeps QoS 1 messages for it while it is away.

Acknowledgements are the protocol's PUBACK, not an application ack. aiomqtt
(2.x) has no manual acks of its own and acknowledges on receipt; the paho
client under it does have them (``manual_ack_set``), and this connector turns
them on, so a message is acknowledged only after `deliver` has stored its
runs. When `deliver` fails, the consumer disconnects without the PUBACK and
the broker sends the message again when the session resumes. Should a later
aiomqtt drop that paho client, the connector falls back to acknowledging on
receipt and logs it once (``manual_ack_unavailable``).

One consumer per client id: two worker processes on the same host consuming
the same queue share the id, and the broker disconnects the older one.

The event id, each run's dedupe key, is the ``msg_id`` user property when
the publisher set one (this connector's publish always does), else a hash of
topic and payload: the same payload twice on one topic starts one run.

Failures: an unreachable broker and timeouts are retryable; refused
credentials or authorization are not.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pydantic

from lobflows import errors
from lobflows.connectors import _http, base
from lobflows.engine import events

log = logging.getLogger(__name__)

Deliver = Callable[[events.Event], Awaitable[Any]]
MSG_ID_PROPERTY = "msg_id"
# CONNACK reason codes that a retry cannot fix (MQTT 5, 3.2.2.2).
REFUSALS = {0x84, 0x85, 0x86, 0x87, 0x8C, 0x95}


class MqttSettings(base.NetworkSettings):
    host: str = pydantic.Field(min_length=1, description="Broker name or address.")
    port: int = pydantic.Field(default=1883, ge=1, le=65535)
    username: str | None = None
    password_secret: str | None = pydantic.Field(
        default=None, description="Secret holding the password; none by default."
    )
    tls: bool = pydantic.Field(default=False, description="Connect with TLS.")
    session_expiry_seconds: int = pydantic.Field(
        default=86400,
        ge=1,
        description="How long the broker keeps a consumer's session and "
        "its QoS 1 messages while it is away.",
    )
    keepalive_seconds: int = pydantic.Field(default=60, ge=5)


class PublishParams(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    topic: str = pydantic.Field(min_length=1)
    body: Any = None
    msg_id: str | None = pydantic.Field(default=None, min_length=1)


class MqttConnector(base.Connector):
    """Publishes JSON messages to MQTT topics and consumes them for event triggers."""

    kind = "mqtt"
    settings_model = MqttSettings
    actions = {
        "publish": "Publish a JSON message to a topic (QoS 1, not retained).",
    }

    def __init__(self, name: str, settings: MqttSettings, secrets: Any) -> None:
        super().__init__(name, settings, secrets)
        self.settings: MqttSettings = settings
        self.guard = _http.AddressGuard(settings.allow_networks)

    # -- publish -------------------------------------------------------------

    async def action_publish(
        self, params: dict[str, Any], context: base.CallContext
    ) -> Any:
        p: PublishParams = base.parse_params(
            PublishParams, params, action=f"{self.name}.publish"
        )
        aiomqtt, paho = _aiomqtt()
        msg_id = p.msg_id or context.idempotency_key
        properties = paho.properties.Properties(paho.packettypes.PacketTypes.PUBLISH)
        properties.UserProperty = [(MSG_ID_PROPERTY, msg_id)]
        properties.ContentType = "application/json"
        timeout = min(self.settings.timeout_seconds, context.timeout_seconds)
        with _translated(self.name, f"publish to {p.topic}"):
            await self.guard.check(self.settings.host, self.settings.port)
            async with self._client(aiomqtt, paho, identifier=None) as client:
                await client.publish(
                    p.topic,
                    json.dumps(p.body),
                    qos=1,
                    retain=False,
                    properties=properties,
                    timeout=timeout,
                )
        return {"topic": p.topic, "msg_id": msg_id}

    async def check(self) -> str:
        """Connect (a clean session) with the configured credentials, then
        disconnect; nothing is published."""
        aiomqtt, paho = _aiomqtt()
        s = self.settings
        with _translated(self.name, "check"):
            await self.guard.check(s.host, s.port)
            async with self._client(aiomqtt, paho, identifier=None):
                pass
        who = f"as {s.username}" if s.username else "anonymously"
        return f"connected to {s.host}:{s.port} {who}"

    # -- consume -------------------------------------------------------------

    async def consume(
        self,
        queue: str,
        deliver: Deliver,
        *,
        topic: str,
        on_ready: Callable[[], None] | None = None,
    ) -> None:
        """Consume the topic filter `queue` until the connection is lost
        (raising TransportError) or the task is cancelled.

        A payload that is not JSON is acknowledged and logged: the broker has
        no dead-letter place, and leaving it unacknowledged would deliver it
        again on every reconnect. When `deliver` fails the error is raised
        and the message, unacknowledged, comes again with the session.
        """
        aiomqtt, paho = _aiomqtt()
        identifier = self.client_id(queue, topic)
        with _translated(self.name, f"consume {queue}"):
            await self.guard.check(self.settings.host, self.settings.port)
            client = self._client(aiomqtt, paho, identifier=identifier)
            acks = _manual_acks(client, self.name)
            async with client:
                await client.subscribe(queue, qos=1)
                if on_ready is not None:
                    on_ready()
                async for message in client.messages:
                    await self._take(message, deliver, queue, topic)
                    acks(message)

    async def _take(
        self, message: Any, deliver: Deliver, queue: str, topic: str
    ) -> None:
        payload = bytes(message.payload or b"")
        try:
            data = json.loads(payload) if payload else None
        except ValueError:
            log.warning(
                "Message payload is not JSON; acknowledged without a run",
                extra={
                    "event": "message_rejected",
                    "connection": self.name,
                    "queue": queue,
                    "topic": str(message.topic),
                },
            )
            return

        event = events.Event(
            topic=topic,
            data=data,
            id=message_event_id(str(message.topic), payload, message.properties),
            source="mqtt",
        )
        await deliver(event)

    def client_id(self, queue: str, topic: str) -> str:
        """Fixed for this connection, queue, trigger topic and host."""
        digest = hashlib.sha256(f"{self.name}\0{queue}\0{topic}".encode()).hexdigest()
        return f"lobflows-{digest[:12]}-{socket.gethostname()}"[:64]

    def _client(self, aiomqtt: Any, paho: Any, *, identifier: str | None) -> Any:
        s = self.settings
        password = self.secrets.get(s.password_secret) if s.password_secret else None
        properties = paho.properties.Properties(paho.packettypes.PacketTypes.CONNECT)
        persistent = identifier is not None
        if persistent:
            properties.SessionExpiryInterval = s.session_expiry_seconds
        return aiomqtt.Client(
            s.host,
            s.port,
            username=s.username,
            password=password,
            identifier=identifier,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=not persistent,
            properties=properties,
            keepalive=s.keepalive_seconds,
            timeout=s.timeout_seconds,
            tls_context=ssl.create_default_context() if s.tls else None,
        )


def message_event_id(topic: str, payload: bytes, properties: Any) -> str:
    """The publisher's msg_id user property, else a hash of topic and payload."""
    for key, value in getattr(properties, "UserProperty", None) or []:
        if key == MSG_ID_PROPERTY and value:
            return f"mqtt-msg:{value}"
    digest = hashlib.sha256(topic.encode() + b"\0" + payload).hexdigest()
    return f"mqtt:{topic}:{digest[:32]}"


def _manual_acks(client: Any, connection: str) -> Callable[[Any], None]:
    """Turn on paho's manual acks under aiomqtt; the function that acks a message."""
    paho_client = getattr(client, "_client", None)
    if paho_client is None or not hasattr(paho_client, "manual_ack_set"):
        log.warning(
            "Manual MQTT acks are not available; messages are acked on receipt",
            extra={"event": "manual_ack_unavailable", "connection": connection},
        )
        return lambda message: None
    paho_client.manual_ack_set(True)
    return lambda message: paho_client.ack(message.mid, message.qos)


@contextlib.contextmanager
def _translated(connection: str, doing: str) -> Iterator[None]:
    try:
        yield
    except errors.LobflowsError:
        raise
    except Exception as exc:
        translated = translate(exc, connection=connection, doing=doing)
        if translated is None:
            raise
        raise translated from exc


def translate(
    exc: BaseException, *, connection: str, doing: str
) -> errors.ConnectorError | None:
    """Our error for one of aiomqtt's, or None for what is not the broker's."""
    aiomqtt, _ = _aiomqtt()
    where = f"{connection}: {doing}"
    code = getattr(exc, "rc", None)
    code_value = getattr(code, "value", code)
    if isinstance(exc, aiomqtt.MqttCodeError) and code_value in REFUSALS:
        return errors.ConnectorError(
            f"{where}: the broker refused the credentials or access ({exc})",
            retryable=False,
            connection=connection,
        )
    if isinstance(exc, aiomqtt.MqttError | OSError | asyncio.TimeoutError):
        return errors.TransportError(
            f"{where} failed: {type(exc).__name__} {exc}".rstrip(),
            connection=connection,
        )
    return None


def _aiomqtt() -> tuple[Any, Any]:
    try:
        import aiomqtt
        import paho.mqtt.packettypes
        import paho.mqtt.properties
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise errors.ConfigurationError(
            "the mqtt connector needs aiomqtt: pip install aiomqtt"
        ) from exc
    return aiomqtt, paho.mqtt
