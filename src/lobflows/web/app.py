"""The HTTP application: webhook triggers, a small authenticated REST API, health."""

from __future__ import annotations

import hmac
import re
from typing import Any

import orjson
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from starlette.applications import Starlette
from starlette.routing import Mount, Route

from lobflows import errors
from lobflows.engine import tasks as task_rules
from lobflows.runtime import Runtime
from lobflows.secrets import redactor
from lobflows.spec import models
from lobflows.triggers.webhook import WebhookRoutes
from lobflows.web import auth, dashboard, health
from lobflows.web.tasks import TaskPages, task_summary


def create_app(runtime: Runtime, *, has_local_worker: bool) -> Starlette:
    """Build the app; the runtime is opened and closed by the caller.

    Webhooks are plain Starlette routes on the outer app: they read the raw
    body themselves, and on the hot path they skip the REST API's middleware.
    """
    webhooks = WebhookRoutes(runtime, has_local_worker=has_local_worker)
    routes = [
        Route("/healthz", _healthz, methods=["GET"]),
        *health.routes(runtime),
        *auth.routes(runtime),
        Mount("/api", app=create_api(runtime)),
        *dashboard.routes(runtime),
        *TaskPages(runtime).routes(),
        Route("/{path:path}", webhooks.handle, methods=["POST"]),
    ]
    app = Starlette(routes=routes)
    app.state.runtime = runtime
    return app


async def _healthz(request: Request) -> JSONResponse:
    """Up, with each connection's circuit breaker: closed, open or half-open."""
    runtime = request.app.state.runtime
    breakers = runtime.engine.limiter.breakers
    states = {
        name: breakers[name].state if name in breakers else "closed"
        for name in runtime.engine.connections
    }
    degraded = any(state != "closed" for state in states.values())
    return JSONResponse(
        {"status": "degraded" if degraded else "ok", "connections": states}
    )


def create_api(runtime: Runtime) -> FastAPI:
    """The REST API, served under /api."""
    app = FastAPI(
        title="LoB Flows",
        # The schema would describe the API to anyone; it is not served.
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

    @app.get("/runs/{run_id}")
    async def get_run(run_id: str, request: Request) -> dict[str, Any]:
        _authorize(runtime, request)
        try:
            run = await runtime.store.find_run(run_id)
        except errors.RunNotFoundError as exc:
            raise HTTPException(404, str(exc)) from None
        attempts = await runtime.store.attempts(run.id)
        return redactor.redact_data(
            {
                "id": run.id,
                "flow": run.flow,
                "status": run.status,
                "error": run.error,
                "created_at": run.created_at,
                "finished_at": run.finished_at,
                "steps": [
                    {
                        "step": a.step,
                        "attempt": a.attempt,
                        "status": a.status,
                        "error": a.error,
                        "started_at": a.started_at,
                        "finished_at": a.finished_at,
                    }
                    for a in attempts
                ],
            }
        )

    @app.post("/runs/{run_id}/signals/{name}", status_code=202)
    async def send_signal(run_id: str, name: str, request: Request) -> dict[str, Any]:
        """Send a named signal, with an optional JSON body, to a run."""
        _authorize(runtime, request)
        if not re.fullmatch(models.NAME_PATTERN, name):
            raise HTTPException(
                400, f"signal name {name!r} must be lower case letters, digits, - and _"
            )
        raw = await request.body()
        try:
            payload = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError as exc:
            raise HTTPException(400, f"body is not valid JSON: {exc}") from None
        try:
            run = await runtime.store.find_run(run_id)
            await runtime.store.send_signal(run.id, name, payload)
            runtime.engine.notify_due()
        except errors.RunNotFoundError as exc:
            raise HTTPException(404, str(exc)) from None
        except errors.StoreError as exc:
            raise HTTPException(409, str(exc)) from None
        return {"run_id": run.id, "signal": name}

    @app.get("/tasks")
    async def list_tasks(
        request: Request,
        status: str = "open",
        user: str | None = None,
        limit: int = 100,
    ) -> dict[str, Any]:
        """Tasks, newest first; `user` keeps those they may act on."""
        _authorize(runtime, request)
        found = await runtime.store.list_tasks(
            status=None if status == "all" else status,
            user=user,
            limit=max(1, min(limit, 1000)),
        )
        return {"tasks": [task_summary(t) for t in found]}

    @app.get("/tasks/{task_id}")
    async def get_task(task_id: str, request: Request) -> dict[str, Any]:
        _authorize(runtime, request)
        try:
            task = await runtime.store.find_task(task_id)
        except errors.TaskNotFoundError as exc:
            raise HTTPException(404, str(exc)) from None
        return task_summary(task, await runtime.store.task_actions(task.id))

    @app.post("/tasks/{task_id}/decisions")
    async def decide(task_id: str, request: Request) -> dict[str, Any]:
        """Body: decision, by, and optionally data (the form) and comment."""
        _authorize(runtime, request)
        body = await _json_object(request)
        decision, by = body.get("decision"), body.get("by")
        if not isinstance(decision, str) or not isinstance(by, str) or not by.strip():
            raise HTTPException(400, "give decision and by, as text")
        comment = body.get("comment")
        if comment is not None and not isinstance(comment, str):
            raise HTTPException(400, "comment must be text")
        try:
            task = await task_rules.decide(
                runtime.store,
                task_id,
                by=by,
                decision=decision,
                data=body.get("data"),
                comment=comment,
            )
        except errors.TaskNotFoundError as exc:
            raise HTTPException(404, str(exc)) from None
        except errors.DecisionRefusedError as exc:
            raise HTTPException(409, str(exc)) from None
        if not task.is_open:
            runtime.engine.notify_due()
        return task_summary(task)

    @app.post("/tasks/{task_id}/delegations")
    async def delegate(task_id: str, request: Request) -> dict[str, Any]:
        """Body: from (an assignee) and to (who decides in their place)."""
        _authorize(runtime, request)
        body = await _json_object(request)
        by, to = body.get("from"), body.get("to")
        if not isinstance(by, str) or not isinstance(to, str):
            raise HTTPException(400, "give from and to, as text")
        try:
            task = await runtime.store.find_task(task_id)
            await runtime.store.delegate(task.id, by=by, to=to)
        except errors.TaskNotFoundError as exc:
            raise HTTPException(404, str(exc)) from None
        except errors.DecisionRefusedError as exc:
            raise HTTPException(409, str(exc)) from None
        return {"task_id": task.id, "from": by.strip(), "to": to.strip()}

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse(
            {"error": exc.detail}, status_code=exc.status_code, headers=exc.headers
        )

    return app


async def _json_object(request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise HTTPException(400, f"body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise HTTPException(400, "body must be a JSON object")
    return body


def _authorize(runtime: Runtime, request: Request) -> None:
    token = runtime.settings.api_token
    if not token:
        raise HTTPException(
            403, "the REST API is disabled: set LOBFLOWS_API_TOKEN to enable it"
        )
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    # The scheme name is case-insensitive (RFC 9110, section 11.1).
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode(), token.encode()
    ):
        raise HTTPException(
            401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
        )
