"""Probes for load balancers and the Prometheus scrape endpoint.

``/readyz`` is open, like ``/healthz``: 200 when the run store answers, its
schema is the newest, and (in a process with a worker) the worker runs;
503 with the reason otherwise. ``/metrics`` needs a signed-in user or an
API token, as every other page does.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from lobflows.monitor import metrics
from lobflows.runtime import Runtime
from lobflows.web import auth


def routes(runtime: Runtime) -> list[BaseRoute]:
    """/readyz and /metrics."""

    async def readyz(request: Request) -> JSONResponse:
        problem = await runtime.store.schema_problem()
        if problem is None and runtime.monitor.expects_worker:
            if runtime.worker.stopping.is_set():
                problem = "the worker is stopping"
        if problem is not None:
            return JSONResponse({"status": "unavailable", "reason": problem}, 503)
        return JSONResponse({"status": "ready"})

    async def scrape(request: Request) -> Response:
        auth.require(request, "view")
        body = await metrics.render(runtime.monitor)
        return Response(body, media_type=metrics.CONTENT_TYPE)

    return [
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", scrape, methods=["GET"]),
    ]
