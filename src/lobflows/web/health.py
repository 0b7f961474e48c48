"""Probes for load balancers and the Prometheus scrape endpoint."""

from __future__ import annotations

from starlette.routing import BaseRoute

from lobflows.runtime import Runtime


def routes(runtime: Runtime) -> list[BaseRoute]:
    """/readyz and /metrics."""
    return []
