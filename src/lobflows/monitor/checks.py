"""Scheduled connection checks: each due check is claimed in the store, so with
several processes every connection is checked once per interval."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lobflows import errors
from lobflows.connectors import base
from lobflows.secrets import redactor

if TYPE_CHECKING:
    from lobflows.monitor.monitor import Monitor

log = logging.getLogger(__name__)
# A claim outlives the check's timeout by this much before another process
# may take the check over.
CLAIM_MARGIN_SECONDS = 30.0


@dataclass(frozen=True)
class CheckOutcome:
    """What one connection check found."""

    connection: str
    ok: bool
    message: str


def has_check(connection: Any) -> bool:
    """Whether the connection's type can prove it reaches its system."""
    return type(connection).check is not base.Connector.check


class Checker:
    """Runs the connection checks that are due and keeps their outcomes."""

    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor

    async def run_due(self, *, force: bool = False) -> list[CheckOutcome]:
        """Check every connection whose check is due here (every one with `force`)."""
        monitor, rules = self.monitor, self.monitor.config.checks
        names = [n for n, c in sorted(monitor.connections.items()) if has_check(c)]
        claimed = await monitor.store.claim_checks(
            names,
            owner=monitor.owner,
            lease_seconds=rules.timeout_seconds + CLAIM_MARGIN_SECONDS,
            due_only=not force,
        )
        if not claimed:
            return []
        before = await monitor.store.check_records()
        outcomes = await asyncio.gather(*(self._check(name) for name in claimed))
        for outcome in outcomes:
            await monitor.store.record_check(
                outcome.connection,
                ok=outcome.ok,
                message=outcome.message,
                next_due_at=time.time() + rules.interval_seconds,
            )
            _log_change(outcome, before.get(outcome.connection))
        return list(outcomes)

    async def _check(self, name: str) -> CheckOutcome:
        connection = self.monitor.connections[name]
        timeout = self.monitor.config.checks.timeout_seconds
        try:
            text = await asyncio.wait_for(connection.check(), timeout)
        except TimeoutError:
            return CheckOutcome(name, False, f"no answer within {timeout:g} s")
        except errors.LobflowsError as exc:
            return CheckOutcome(name, False, redactor.redact(str(exc)))
        except Exception as exc:  # a connector's own bug must not stop the loop
            message = f"the check failed unexpectedly: {type(exc).__name__}: {exc}"
            return CheckOutcome(name, False, redactor.redact(message))
        return CheckOutcome(name, True, redactor.redact(str(text)))


def _log_change(outcome: CheckOutcome, before: Any) -> None:
    was_ok = before is None or before.ok is None or before.ok
    ids = {"connection": outcome.connection}
    if was_ok and not outcome.ok:
        log.warning(
            "Connection check failed: %s",
            outcome.message,
            extra={"event": "connection_check_failed", **ids},
        )
    elif not was_ok and outcome.ok:
        log.info(
            "Connection check passes again",
            extra={"event": "connection_check_recovered", **ids},
        )
    else:
        log.debug(
            "Connection checked",
            extra={"event": "connection_checked", "ok": outcome.ok, **ids},
        )
