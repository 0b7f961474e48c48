"""The dashboard: server-rendered pages over the engine and the store."""

from __future__ import annotations

from starlette.routing import BaseRoute

from lobflows.runtime import Runtime


def routes(runtime: Runtime) -> list[BaseRoute]:
    """Every dashboard page, its live updates and its static files."""
    return []
