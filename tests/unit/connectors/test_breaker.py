"""The circuit breaker of one connection in one process."""

from __future__ import annotations

import pytest

from lobflows import errors
from lobflows.connectors.limits import PROBE_RETRY_SECONDS, Breaker


def opened(failures_to_open: int = 2, cool_down: float = 300.0) -> Breaker:
    breaker = Breaker(failures_to_open=failures_to_open, cool_down_seconds=cool_down)
    for _ in range(failures_to_open):
        breaker.after_call(0.0, unwell=True)
    return breaker


def test_calls_wait_out_the_cool_down_then_one_probe_closes_the_breaker():
    breaker = opened()

    with pytest.raises(errors.CircuitOpenError) as cooling:
        breaker.before_call("crm", 100.0)
    breaker.before_call("crm", 301.0)  # the probe goes through
    probing = breaker.state
    breaker.after_call(302.0, unwell=False)

    assert cooling.value.retry_after_seconds == 200.0
    assert "circuit breaker open; next try in 200 s" in str(cooling.value)
    assert probing == "half-open"
    assert breaker.state == "closed"
    breaker.before_call("crm", 302.5)  # closed: no refusal


def test_a_call_during_the_probe_is_tried_again_soon_not_after_a_cool_down():
    breaker = opened()
    breaker.before_call("crm", 301.0)  # the probe, still in flight

    with pytest.raises(errors.CircuitOpenError) as turned_away:
        breaker.before_call("crm", 301.5)

    assert turned_away.value.retry_after_seconds == PROBE_RETRY_SECONDS
    assert "circuit breaker half-open" in str(turned_away.value)
    assert "a probe call is under way after 2 failures" in str(turned_away.value)


def test_a_failed_probe_opens_the_breaker_for_another_cool_down():
    breaker = opened()
    breaker.before_call("crm", 301.0)
    breaker.after_call(302.0, unwell=True)

    with pytest.raises(errors.CircuitOpenError) as cooling:
        breaker.before_call("crm", 303.0)

    assert breaker.state == "open"
    assert cooling.value.retry_after_seconds == 299.0
