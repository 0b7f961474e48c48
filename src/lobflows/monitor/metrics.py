"""Prometheus metrics, computed from the run store at scrape time.

Every process answers a scrape with the same figures, since they come from
the store, circuit breakers included (each process records its own there).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

from lobflows.monitor import health

if TYPE_CHECKING:
    from lobflows.monitor.monitor import Monitor

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
BREAKER_STATES = ("closed", "open", "half-open")


class _Collected:
    """A collector that yields metric families already computed."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        yield from self.families


async def render(monitor: Monitor) -> bytes:
    """The Prometheus text exposition of the current health."""
    snapshot = await monitor.snapshot()
    day_start = health.start_of_day(snapshot.at)
    runs_today = await monitor.store.run_counts_since(day_start)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collected(families(snapshot, runs_today)))  # type: ignore[arg-type]
    return generate_latest(registry)


def families(
    snapshot: health.Snapshot, runs_today: list[tuple[str, str, int]]
) -> list[Metric]:
    """Every metric family of a snapshot."""
    return [
        *_flow_families(snapshot, runs_today),
        *_connection_families(snapshot),
    ]


def _flow_families(
    snapshot: health.Snapshot, runs_today: list[tuple[str, str, int]]
) -> list[Metric]:
    flows = snapshot.flows.values()
    runs = GaugeMetricFamily(
        "lobflows_runs_today",
        "Runs started today, by flow and current status.",
        labels=["flow", "status"],
    )
    for flow, status, count in sorted(runs_today):
        if flow in snapshot.flows:
            runs.add_metric([flow, status], count)
    return [
        _status(
            "lobflows_flow_status",
            "Health of each flow (1 for its status).",
            "flow",
            flows,
        ),
        runs,
        _gauge(
            "lobflows_flow_errors_today",
            "Failed step attempts today.",
            "flow",
            flows,
            lambda h: h.errors_today,
        ),
        _gauge(
            "lobflows_flow_error_rate",
            "Share of runs that failed over the monitor's window.",
            "flow",
            flows,
            lambda h: h.error_rate,
        ),
        _latency(
            "lobflows_flow_latency_seconds",
            "Run duration over the window.",
            "flow",
            flows,
        ),
        _gauge(
            "lobflows_flow_backlog",
            "Runs due now that no worker has taken.",
            "flow",
            flows,
            lambda h: h.backlog,
        ),
        _gauge(
            "lobflows_flow_last_success_timestamp_seconds",
            "When a run of the flow last succeeded.",
            "flow",
            flows,
            lambda h: h.last_success_at,
        ),
    ]


def _connection_families(snapshot: health.Snapshot) -> list[Metric]:
    connections = snapshot.connections.values()
    breaker = GaugeMetricFamily(
        "lobflows_connection_breaker_state",
        "Worst circuit breaker state over every process (1 for its state).",
        labels=["connection", "state"],
    )
    for h in connections:
        for state in BREAKER_STATES:
            breaker.add_metric([h.name, state], float(h.breaker == state))
    return [
        _status(
            "lobflows_connection_status",
            "Health of each connection (1 for its status).",
            "connection",
            connections,
        ),
        _gauge(
            "lobflows_connection_check_ok",
            "Whether the latest scheduled check passed (1) or failed (0).",
            "connection",
            connections,
            lambda h: None if h.last_check_at is None else float(h.check_error is None),
        ),
        _gauge(
            "lobflows_connection_last_check_timestamp_seconds",
            "When the connection was last checked.",
            "connection",
            connections,
            lambda h: h.last_check_at,
        ),
        _gauge(
            "lobflows_connection_calls_today",
            "Step attempts calling the connection today.",
            "connection",
            connections,
            lambda h: h.runs_today,
        ),
        _gauge(
            "lobflows_connection_errors_today",
            "Failed calls today.",
            "connection",
            connections,
            lambda h: h.errors_today,
        ),
        _gauge(
            "lobflows_connection_error_rate",
            "Share of calls that failed over the monitor's window.",
            "connection",
            connections,
            lambda h: h.error_rate,
        ),
        _latency(
            "lobflows_connection_latency_seconds",
            "Call duration over the window.",
            "connection",
            connections,
        ),
        _gauge(
            "lobflows_connection_backlog",
            "Runs due now whose next step calls the connection.",
            "connection",
            connections,
            lambda h: h.backlog,
        ),
        breaker,
    ]


def _status(name: str, text: str, label: str, items: Any) -> Metric:
    family = GaugeMetricFamily(name, text, labels=[label, "status"])
    for h in items:
        for status in health.ORDER:
            family.add_metric([h.name, status], float(h.status == status))
    return family


def _gauge(name: str, text: str, label: str, items: Any, value: Any) -> Metric:
    family = GaugeMetricFamily(name, text, labels=[label])
    for h in items:
        found = value(h)
        if found is not None:
            family.add_metric([h.name], float(found))
    return family


def _latency(name: str, text: str, label: str, items: Any) -> Metric:
    family = GaugeMetricFamily(name, text, labels=[label, "quantile"])
    for h in items:
        for quantile, found in (("0.5", h.p50_seconds), ("0.95", h.p95_seconds)):
            if found is not None:
                family.add_metric([h.name, quantile], found)
    return family
