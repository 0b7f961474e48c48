"""Events: an event on a topic starts a run of every flow that listens, and an
event with a key goes on to the runs waiting for that topic and key.

Events come from `emit` steps today and from broker subscriptions (RabbitMQ,
NATS, Redis Streams, MQTT) through the same door: `EventRouter.deliver`
stores one run per listening flow and returns only then, so a consumer
acknowledges a message after its runs are durable. The event id is each
run's dedupe key: a redelivered event starts nothing new.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lobflows.engine.runs import Engine

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Event:
    """One event: its topic, its data, and an id unique to this occurrence."""

    topic: str
    data: Any
    id: str
    source: str = "emit"
    # Correlation key: runs waiting for this topic and key go on.
    key: str | None = None


def topic_pattern(topic: str) -> re.Pattern[str]:
    """A trigger's topic as a pattern: ``*`` stands for one dot-separated part."""
    parts = (re.escape(part) if part != "*" else r"[^.]+" for part in topic.split("."))
    return re.compile(r"\.".join(parts) + r"\Z")


class EventRouter:
    """Starts runs for the flows of an engine whose event trigger matches."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.listeners = [
            (name, topic_pattern(loaded.spec.trigger.event.topic))
            for name, loaded in engine.project.flows.items()
            if loaded.spec.trigger.event is not None
        ]

    def flows_for(self, topic: str) -> list[str]:
        return [name for name, pattern in self.listeners if pattern.match(topic)]

    async def deliver(self, event: Event) -> list[str]:
        """Store a run per listening flow, and hand a keyed event to the runs
        waiting for it; return the ids of the runs started, once all is stored."""
        if event.key is not None:
            woken = await self.engine.store.deliver_keyed_event(
                topic=event.topic, key=event.key, event_id=event.id, data=event.data
            )
            log.info(
                "Keyed event delivered",
                extra={
                    "event": "event_delivered",
                    "topic": event.topic,
                    "waiting_runs": len(woken),
                },
            )
        started = []
        for flow in self.flows_for(event.topic):
            run, _ = await self.engine.start_run(
                flow,
                input=event.data,
                trigger="event",
                trigger_data={
                    "topic": event.topic,
                    "event_id": event.id,
                    "source": event.source,
                },
                dedupe_key=f"event:{event.id}",
            )
            started.append(run.id)
        if not started and event.key is None:
            log.debug(
                "Event had no listening flow",
                extra={"event": "event_unrouted", "topic": event.topic},
            )
        return started
