"""Pages that show: overview, flow, run, mapping, map, connections, secrets, audit."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from lobflows.docs import svg
from lobflows.runtime import Runtime
from lobflows.web import auth
from lobflows.web.dashboard import render
from lobflows.web.dashboard.docs_html import Docs

RUN_STATUSES = ("queued", "running", "waiting", "succeeded", "failed")
# The time filter of a flow's runs: label to seconds back from now.
PERIODS = {"1h": 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400}
RUNS_SHOWN = 100
HEALTH_STATUSES = ("healthy", "degraded", "down", "unknown")


@dataclass(frozen=True)
class Tile:
    """A flow as the overview shows it, from its health."""

    flow: str
    description: str
    status: str
    reasons: list[str]
    last_run_at: float | None
    runs_today: int
    backlog: int
    errors_today: int


def tiles(runtime: Runtime, snapshot: Any) -> list[Tile]:
    """A tile per served flow; a flow the monitor has not seen yet is unknown."""
    found = []
    for name in sorted(runtime.engine.project.flows):
        health = snapshot.flows.get(name)
        spec = runtime.engine.project.flows[name].spec
        found.append(
            Tile(
                flow=name,
                description=spec.card.target,
                status=_status(health),
                reasons=list(getattr(health, "reasons", []) or []),
                last_run_at=getattr(health, "last_run_at", None),
                runs_today=getattr(health, "runs_today", 0) or 0,
                backlog=getattr(health, "backlog", 0) or 0,
                errors_today=getattr(health, "errors_today", 0) or 0,
            )
        )
    return found


def _status(health: Any) -> str:
    status = getattr(health, "status", "unknown")
    return status if status in HEALTH_STATUSES else "unknown"


async def summary(
    runtime: Runtime, principal: auth.Principal, snapshot: Any
) -> dict[str, int | None]:
    """What waits for this person: open dead letters (for operators) and
    tasks in their inbox (for deciders); None where they may not act."""
    open_letters = (
        sum(count for count, *_ in snapshot.dead_letters.values())
        if principal.can("operate")
        else None
    )
    open_tasks = (
        len(await runtime.store.list_tasks(user=principal.assignee))
        if principal.can("decide")
        else None
    )
    return {"open_letters": open_letters, "open_tasks": open_tasks}


class Views:
    """The read-only pages of one runtime."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.store = runtime.store
        self.docs = Docs(runtime.engine.project)

    async def overview(self, request: Request) -> Response:
        principal = auth.require(request, "view")
        snapshot = await self.runtime.monitor.snapshot()
        return render.render(
            request,
            "overview.html",
            title="Overview",
            tiles=tiles(self.runtime, snapshot),
            recent_errors=snapshot.recent_errors,
            **await summary(self.runtime, principal, snapshot),
        )

    async def flow(self, request: Request) -> Response:
        auth.require(request, "view")
        name = request.path_params["name"]
        loaded = self.runtime.engine.project.flows.get(name)
        if loaded is None:
            raise HTTPException(404, f"no flow named {name!r} is served here")
        filters, problems = _run_filters(request)
        runs = await self.store.search_runs(flow=name, limit=RUNS_SHOWN, **filters)
        snapshot = await self.runtime.monitor.snapshot()
        mappings = [
            (mapping, self.docs.mapping_html(mapping))
            for mapping in self.docs.mappings_of(name)
        ]
        return render.render(
            request,
            "flow.html",
            status=400 if problems else 200,
            title=f"Flow {name}",
            flow=loaded.spec,
            tile=next(t for t in tiles(self.runtime, snapshot) if t.flow == name),
            page=self.docs.flow_html(name) or "",
            mappings=mappings,
            versions=list(reversed(await self.store.flow_versions(name))),
            runs=runs,
            statuses=RUN_STATUSES,
            periods=PERIODS,
            chosen=dict(request.query_params),
            problems=problems,
        )

    async def mapping(self, request: Request) -> Response:
        auth.require(request, "view")
        name = request.path_params["name"]
        page = self.docs.mapping_html(name)
        if page is None:
            raise HTTPException(404, f"no mapping named {name!r} is served here")
        return render.render(
            request, "mapping.html", title=f"Mapping {name}", name=name, page=page
        )

    async def integration_map(self, request: Request) -> Response:
        auth.require(request, "view")
        snapshot = await self.runtime.monitor.snapshot()
        landscape = self.docs.integration_map()
        flow_status = {t.flow: t.status for t in tiles(self.runtime, snapshot)}
        drawing = health_coloured_map(landscape, flow_status, snapshot.connections)
        return render.render(
            request,
            "map.html",
            title="Integration map",
            drawing=drawing,
            links=landscape.links,
            flow_status=flow_status,
        )

    async def connections(self, request: Request) -> Response:
        auth.require(request, "view")
        snapshot = await self.runtime.monitor.snapshot()
        rows = [
            {
                "name": name,
                "type": type(connection).__name__,
                "health": snapshot.connections.get(name),
                "status": _status(snapshot.connections.get(name)),
                "limits": connection.limits,
                "breaker": getattr(snapshot.connections.get(name), "breaker", None)
                or "closed",
            }
            for name, connection in sorted(self.runtime.engine.connections.items())
        ]
        return render.render(
            request, "connections.html", title="Connections", rows=rows
        )

    async def secrets(self, request: Request) -> Response:
        from lobflows.secrets import inventory

        auth.require(request, "secrets")
        found = await inventory.secret_inventory(self.runtime)
        return render.render(request, "secrets.html", title="Secrets", secrets=found)

    async def audit(self, request: Request) -> Response:
        auth.require(request, "admin")
        actor = request.query_params.get("actor") or None
        action = request.query_params.get("action") or None
        entries = await self.store.audit_entries(limit=200, actor=actor, action=action)
        return render.render(
            request,
            "audit.html",
            title="Audit log",
            entries=entries,
            actor=actor or "",
            action=action or "",
        )


def _run_filters(request: Request) -> tuple[dict[str, Any], list[str]]:
    """The run filters of a query string, and what is wrong with them."""
    query = request.query_params
    filters: dict[str, Any] = {}
    problems = []
    status = query.get("status", "")
    if status and status not in RUN_STATUSES:
        problems.append(f"status {status!r} is not one of {', '.join(RUN_STATUSES)}")
    elif status:
        filters["status"] = status
    period = query.get("period", "")
    if period and period not in PERIODS:
        problems.append(f"period {period!r} is not one of {', '.join(PERIODS)}")
    elif period:
        filters["since"] = time.time() - PERIODS[period]
    text = query.get("run", "").strip().lower()
    if text and not re.fullmatch(r"[0-9a-f]{1,32}", text):
        problems.append(f"run id text {text!r} must be hexadecimal digits")
    elif text:
        filters["id_contains"] = text
    return filters, problems


def health_coloured_map(
    landscape: Any, flow_status: dict[str, str], connection_health: dict[str, Any]
) -> str:
    """The catalogue's SVG map, its connections and links classed by health.

    The page's style sheet colours the classes; CSS overrides the drawing's
    own fill and stroke attributes, so the drawing code stays as it is.
    """
    drawing = svg.render(landscape)
    drawing = drawing.split("\n", 1)[1]  # no XML declaration inside HTML
    for system in landscape.systems:
        status = _system_status(system, flow_status, connection_health)
        opening = f'<g class="system {system.kind}"><title>{svg.xml_text(system.label)}'
        drawing = drawing.replace(
            opening,
            opening.replace(
                f'class="system {system.kind}"',
                f'class="system {system.kind} health-{status}" data-status="{status}"',
            ),
            1,
        )
    parts = drawing.split('<g class="link">')
    for index, link in enumerate(landscape.links, start=1):
        worst = _worst(flow_status.get(flow, "unknown") for flow in link.flows)
        parts[index] = f'<g class="link health-{worst}">' + parts[index]
    return parts[0] + "".join(parts[1:])


def _system_status(
    system: Any, flow_status: dict[str, str], connection_health: dict[str, Any]
) -> str:
    if system.kind == "connection":
        name = system.key.split(":")[1]
        return _status(connection_health.get(name))
    if system.kind == "flow":
        return flow_status.get(system.key.split(":", 1)[1], "unknown")
    return "none"


def _worst(statuses: Any) -> str:
    found = set(statuses)
    for status in ("down", "degraded", "healthy"):
        if status in found:
            return status
    return "unknown"
