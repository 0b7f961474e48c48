"""Alerts: rules route problems to connections that can send (chat, mail, HTTP).

A *problem* is one subject (a flow, a connection, a flow's open dead letters,
an overdue secret) matching one rule. Its alert state lives in the store: it
fires once when the problem starts, reminds once per throttle window while it
lasts, and sends one resolved message when it ends. Every change is a
compare-and-set on the state's version, so when several processes evaluate
the same rules only the one whose write lands sends.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from lobflows import errors
from lobflows.connectors import base
from lobflows.monitor import health
from lobflows.monitor.config import Rule
from lobflows.secrets import redactor
from lobflows.store.health import AlertState
from lobflows.transform import templates

if TYPE_CHECKING:
    from lobflows.monitor.monitor import Monitor

log = logging.getLogger(__name__)
SEND_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True)
class Problem:
    """A subject as the alert rules see it."""

    subject: str  # flow | connection | dead_letter | secret
    name: str
    status: str
    reasons: list[str]


class Alerter:
    """Evaluates the alert rules against the current health and sends."""

    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor

    async def evaluate(self, snapshot: health.Snapshot | None = None) -> int:
        """Send what the rules say is due now; returns how many messages were sent."""
        rules = self.monitor.config.alerts.rules
        if not rules:
            return 0
        snapshot = snapshot or await self.monitor.snapshot()
        problems = await self.problems(snapshot)
        states = await self.monitor.store.alert_states()
        sent = 0
        for index, rule in enumerate(rules):
            for problem in problems:
                key = f"{index}:{problem.subject}:{problem.name}"
                sent += await self._advance(rule, key, problem, states.get(key))
        return sent

    async def problems(self, snapshot: health.Snapshot) -> list[Problem]:
        """Every subject with its status: flows, connections, dead letters, secrets."""
        found = [
            Problem("flow", h.name, h.own_status or h.status, h.reasons)
            for h in snapshot.flows.values()
        ]
        found += [
            Problem("connection", h.name, h.status, h.reasons)
            for h in snapshot.connections.values()
        ]
        for flow in self.monitor.project.flows:
            if flow not in snapshot.dead_letters:
                found.append(Problem("dead_letter", flow, "healthy", []))
                continue
            count, _, step, error = snapshot.dead_letters[flow]
            reason = health.dead_letter_reason(count, step, error)
            found.append(Problem("dead_letter", flow, "degraded", [reason]))
        return found + await self._secret_problems()

    async def _secret_problems(self) -> list[Problem]:
        inventory = self.monitor.secret_inventory
        if inventory is None:
            return []
        try:
            secrets = await inventory()
        except Exception:
            log.exception(
                "The secret inventory failed; rotation alerts skipped this round",
                extra={"event": "secret_inventory_failed"},
            )
            return []
        found = []
        for secret in secrets:
            if not secret.overdue:
                found.append(Problem("secret", secret.name, "healthy", []))
                continue
            days = secret.rotate_every_days
            policy = f" (policy: every {days} days)" if days else ""
            reason = f"not rotated within its rotation policy{policy}"
            found.append(Problem("secret", secret.name, "degraded", [reason]))
        return found

    async def _advance(
        self, rule: Rule, key: str, problem: Problem, state: AlertState | None
    ) -> int:
        now = time.time()
        is_problem = problem.status != "healthy" and rule.when.matches(
            problem.subject, problem.name, problem.status
        )
        is_firing = state is not None and state.state == "firing"
        throttle = self.monitor.config.alerts.throttle_seconds
        if is_problem and not is_firing:
            return await self._fire(rule, key, problem, state, now)
        if is_problem and state is not None and is_firing:
            last = state.last_sent_at or 0.0
            if now - last >= throttle:
                return await self._remind(rule, problem, state, now)
            return 0
        if not is_problem and state is not None and is_firing:
            return await self._resolve(rule, problem, state, now)
        return 0

    async def _fire(
        self,
        rule: Rule,
        key: str,
        problem: Problem,
        state: AlertState | None,
        now: float,
    ) -> int:
        new = AlertState(
            key=key,
            subject=problem.subject,
            name=problem.name,
            state="firing",
            status=problem.status,
            reasons=problem.reasons,
            since=now,
            last_sent_at=now,
            sent_count=1,
            version=(state.version + 1) if state else 1,
        )
        store = self.monitor.store
        if not await store.save_alert_state(
            new, expected_version=state.version if state else None
        ):
            return 0  # another process took it
        if await self._send(rule, new, "firing", now):
            return 1
        # Not delivered: resolved again, so the next round tries once more.
        retry = replace(new, state="resolved", sent_count=0, version=new.version + 1)
        await store.save_alert_state(retry, expected_version=new.version)
        return 0

    async def _remind(
        self, rule: Rule, problem: Problem, state: AlertState, now: float
    ) -> int:
        new = replace(
            state,
            status=problem.status,
            reasons=problem.reasons,
            last_sent_at=now,
            sent_count=state.sent_count + 1,
            version=state.version + 1,
        )
        if not await self.monitor.store.save_alert_state(
            new, expected_version=state.version
        ):
            return 0
        return int(await self._send(rule, new, "firing", now))

    async def _resolve(
        self, rule: Rule, problem: Problem, state: AlertState, now: float
    ) -> int:
        new = replace(
            state,
            state="resolved",
            status=problem.status,
            reasons=[],
            last_sent_at=now,
            version=state.version + 1,
        )
        store = self.monitor.store
        if not await store.save_alert_state(new, expected_version=state.version):
            return 0
        shown = replace(new, status=state.status, reasons=state.reasons)
        if await self._send(rule, shown, "resolved", now):
            return 1
        # Not delivered: firing again, so the next round sends the resolve again.
        await store.save_alert_state(
            replace(state, version=new.version + 1), expected_version=new.version
        )
        return 0

    async def _send(self, rule: Rule, state: AlertState, kind: str, now: float) -> bool:
        send = rule.send
        connection = self.monitor.connections.get(send.connection)
        ids = {
            "connection": send.connection,
            "subject": state.subject,
            "about": state.name,
        }
        if connection is None:
            log.error(
                "Alert not sent: no connection named %s",
                send.connection,
                extra={"event": "alert_failed", **ids},
            )
            return False
        message = (
            send.resolved_with
            if kind == "resolved" and send.resolved_with
            else send.with_
        )
        context = {"alert": alert_context(state, kind, now)}
        call = base.CallContext(
            run_id=f"alert-{state.version}",
            flow="monitor",
            step=f"alert.{state.subject}.{state.name}",
            attempt=1,
            timeout_seconds=SEND_TIMEOUT_SECONDS,
        )
        limiter = self.monitor.limiter
        try:
            params = templates.render_value(message, context)
            # Through the connection's limits and breaker, like a flow's call.
            async with (
                limiter.call(
                    send.connection,
                    connection.limits,
                    timeout_seconds=SEND_TIMEOUT_SECONDS,
                )
                if limiter is not None
                else contextlib.nullcontext()
            ):
                await connection.call(send.action, params, call)
        except errors.LobflowsError as exc:
            log.error(
                "Alert not sent: %s",
                redactor.redact(str(exc)),
                extra={"event": "alert_failed", **ids},
            )
            return False
        event = "alert_resolved" if kind == "resolved" else "alert_sent"
        log.info(
            "Alert sent: %s %s is %s",
            state.subject,
            state.name,
            "healthy again" if kind == "resolved" else state.status,
            extra={"event": event, **ids},
        )
        return True


def alert_context(state: AlertState, kind: str, now: float) -> dict[str, Any]:
    """What a message template sees as ``alert``."""
    what = state.subject.replace("_", " ")
    reason = "; ".join(state.reasons)
    if kind == "resolved":
        lasted = health.span(now - state.since)
        summary = f"[RESOLVED] {what} {state.name}: healthy again (was {state.status} for {lasted})"
    else:
        summary = (
            f"[{state.status.upper()}] {what} {state.name}: {reason or state.status}"
        )
    return {
        "state": kind,
        "subject": state.subject,
        "name": state.name,
        "status": "healthy" if kind == "resolved" else state.status,
        "was": state.status,
        "reasons": list(state.reasons),
        "reason": reason,
        "since": datetime.datetime.fromtimestamp(state.since, datetime.UTC).isoformat(),
        "summary": redactor.redact(summary),
    }
