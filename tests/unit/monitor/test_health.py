from __future__ import annotations

import pytest

from lobflows.monitor import health
from lobflows.monitor.config import MonitorConfig
from lobflows.spec.models import Expectations

NOW = 1_000_000.0
CONFIG = MonitorConfig.model_validate(
    {"checks": {"down_after_failures": 3, "down_after": "10m"}, "min_runs": 3}
)


def figures(**values) -> health.Figures:
    return health.Figures(**{"last_run_at": NOW - 60, **values})


def test_judge_flow_is_healthy_within_every_expectation():
    verdict = health.judge_flow(
        figures(finished=10, failed=0, durations=[1.0] * 10, last_success_at=NOW - 60),
        Expectations(latency=30, every=3600, error_rate=0.05),
        CONFIG,
        now=NOW,
    )

    assert (verdict.status, verdict.reasons) == ("healthy", [])


def test_judge_flow_is_degraded_when_p95_is_over_the_latency_sla():
    durations = [1.0] * 90 + [45.0] * 10
    verdict = health.judge_flow(
        figures(finished=100, durations=durations),
        Expectations(latency=30),
        CONFIG,
        now=NOW,
    )

    assert verdict.status == "degraded"
    assert verdict.reasons == ["p95 run time 45 s is over the expected 30 s"]


@pytest.mark.parametrize(
    ("failed", "finished", "status"),
    [
        (1, 10, "degraded"),  # 10% is over the card's 5%
        (10, 10, "down"),  # every run failed
        (0, 10, "healthy"),
        (2, 2, "healthy"),  # too few runs to judge a rate
    ],
)
def test_judge_flow_rates_errors_against_the_card(failed, finished, status):
    verdict = health.judge_flow(
        figures(failed=failed, finished=finished),
        Expectations(error_rate=0.05),
        CONFIG,
        now=NOW,
    )

    assert verdict.status == status


def test_judge_flow_uses_the_monitor_error_rate_without_an_expectation():
    verdict = health.judge_flow(figures(failed=2, finished=10), None, CONFIG, now=NOW)

    assert verdict.status == "degraded"
    assert verdict.reasons[0].startswith("20% of runs failed in the last 60 min")


@pytest.mark.parametrize(
    ("since_success", "status"),
    [
        (3000, "healthy"),
        (5000, "degraded"),  # past the expected gap
        (8000, "down"),  # past twice the gap
    ],
)
def test_judge_flow_compares_the_time_since_the_last_success(since_success, status):
    verdict = health.judge_flow(
        figures(last_success_at=NOW - since_success),
        Expectations(every=3600),
        CONFIG,
        now=NOW,
    )

    assert verdict.status == status


def test_judge_flow_counts_the_gap_from_registration_when_nothing_succeeded():
    verdict = health.judge_flow(
        figures(last_run_at=None, registered_at=NOW - 5000),
        Expectations(every=3600),
        CONFIG,
        now=NOW,
    )

    assert verdict.status == "degraded"
    assert verdict.reasons == [
        "no successful run yet for 83 min (expected one every 60 min)"
    ]


def test_judge_flow_is_degraded_over_the_backlog_and_unknown_without_runs():
    busy = health.judge_flow(
        figures(backlog=12), Expectations(backlog=10), CONFIG, now=NOW
    )
    fresh = health.judge_flow(figures(last_run_at=None), None, CONFIG, now=NOW)

    assert busy.status == "degraded" and "12 runs are due" in busy.reasons[0]
    assert (fresh.status, fresh.reasons) == ("unknown", ["no runs yet"])


@pytest.mark.parametrize(
    ("failures", "failing_for", "status"),
    [
        (0, 0, "healthy"),
        (1, 1, "degraded"),
        (3, 2, "down"),  # down_after_failures
        (2, 900, "down"),  # failing longer than down_after
    ],
)
def test_judge_connection_turns_failed_checks_into_a_status(
    failures, failing_for, status
):
    check = (failures, NOW - failing_for, "connection refused")

    verdict = health.judge_connection(
        health.Figures(), check, "closed", CONFIG, now=NOW
    )

    assert verdict.status == status
    if failures:
        assert verdict.reasons[-1].endswith(": connection refused")


def test_judge_connection_is_degraded_with_an_open_breaker_and_down_when_all_calls_fail():
    open_breaker = health.judge_connection(
        health.Figures(), None, "open", CONFIG, now=NOW
    )
    failing = health.judge_connection(
        health.Figures(finished=4, failed=4), None, "closed", CONFIG, now=NOW
    )

    assert open_breaker.reasons == ["the circuit breaker is open"]
    assert open_breaker.status == "degraded"
    assert failing.status == "down"
    assert failing.reasons == ["all 4 calls in the last 60 min failed"]


def test_percentile_takes_the_nearest_rank():
    values = [float(v) for v in range(1, 101)]

    assert health.percentile(values, 0.5) == 50
    assert health.percentile(values, 0.95) == 95
    assert health.percentile([], 0.95) is None


def test_worst_orders_down_over_degraded_over_unknown():
    assert health.worst(["healthy", "unknown", "degraded"]) == "degraded"
    assert health.worst(["down", "degraded"]) == "down"
    assert health.worst([]) == "healthy"
