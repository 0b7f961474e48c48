"""The HTTP application: webhook triggers, a small authenticated REST API, health."""

from __future__ import annotations

import re
from typing import Any

import jinja2
import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from lobflows import errors
from lobflows.engine import tasks as task_rules
from lobflows.runtime import Runtime
from lobflows.secrets import redactor
from lobflows.spec import models
from lobflows.triggers.webhook import WebhookRoutes
from lobflows.web import auth, dashboard, health, operator_api
from lobflows.web.tasks import TaskPages, task_summary


def create_app(runtime: Runtime, *, has_local_worker: bool) -> Starlette:
    """Build the app; the runtime is opened and closed by the caller.

    Webhooks are plain Starlette routes on the outer app: they read the raw
    body themselves, and on the hot path they skip the REST API's middleware.
    """
    webhooks = WebhookRoutes(runtime, has_local_worker=has_local_worker)
    pages = [
        Route("/healthz", _healthz, methods=["GET"]),
        *health.routes(runtime),
        *auth.routes(runtime),
        Mount("/api", app=create_api(runtime)),
        *dashboard.routes(runtime),
        *TaskPages(runtime).routes(),
    ]
    # Every POST no page claims goes to the webhooks, which answer 404 for a
    # path no flow listens on; any other method there is a page not found.
    unclaimed = _Unclaimed(webhooks, frozenset(webhooks.by_path))
    routes = [*pages, Route("/{path:path}", unclaimed.handle, methods=_METHODS)]
    app = Starlette(
        routes=routes,
        middleware=_middleware(runtime, frozenset(webhooks.by_path), pages),
        exception_handlers={HTTPException: _http_error},
    )
    app.state.runtime = runtime
    return app


def _middleware(
    runtime: Runtime, webhook_paths: frozenset[str], pages: list[BaseRoute]
) -> list[Middleware]:
    # The session comes first: the access check reads who signed in from it.
    settings = runtime.settings
    return [
        Middleware(
            SessionMiddleware,
            secret_key=auth.session_key(runtime),
            session_cookie=auth.SESSION_COOKIE,
            max_age=int(settings.session_hours * 3600),
            same_site="lax",
            https_only=settings.public_url.startswith("https://"),
        ),
        Middleware(
            auth.AccessMiddleware,
            runtime=runtime,
            webhook_paths=webhook_paths,
            pages=pages,
        ),
    ]


_ERROR_PAGE = jinja2.Environment(autoescape=True).from_string(
    """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ status }} · LoB Flows</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:38rem;margin:4rem auto;padding:0 1rem;color:#1d232b}</style>
</head><body><h1>{{ status }}</h1><p>{{ message }}</p><p><a href="/">Back to the overview</a></p></body></html>
"""
)


_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


class _Unclaimed:
    """A path no page claims: POST is a webhook delivery; anything else is
    not found, unless a flow listens there (then only POST is allowed)."""

    def __init__(self, webhooks: WebhookRoutes, webhook_paths: frozenset[str]) -> None:
        self.webhooks = webhooks
        self.webhook_paths = webhook_paths

    async def handle(self, request: Request) -> Response:
        if request.method == "POST":
            return await self.webhooks.handle(request)
        path = request.url.path
        if (path.rstrip("/") or "/") in self.webhook_paths:
            raise HTTPException(
                405, f"{path} takes webhook deliveries by POST", {"Allow": "POST"}
            )
        raise HTTPException(404, f"there is no page at {path}")


async def _http_error(request: Request, exc: Exception) -> Response:
    """Refusals as a small page for browsers, as JSON for everything else."""
    assert isinstance(exc, HTTPException)
    if "text/html" in request.headers.get("accept", ""):
        html = _ERROR_PAGE.render(status=exc.status_code, message=exc.detail)
        return HTMLResponse(html, status_code=exc.status_code, headers=exc.headers)
    return JSONResponse(
        {"error": exc.detail}, status_code=exc.status_code, headers=exc.headers
    )


async def _healthz(request: Request) -> JSONResponse:
    """Up, with this process's circuit breaker of each connection: closed,
    open or half-open."""
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
    """The REST API, served under /api; every call needs a permission."""
    app = FastAPI(
        title="LoB Flows",
        # The schema would describe the API to anyone; it is not served.
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

    @app.get("/runs/{run_id}")
    async def get_run(run_id: str, request: Request) -> dict[str, Any]:
        auth.require(request, "view")
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
        principal = auth.require(request, "operate")
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
        await runtime.store.record_audit(
            auth.actor(principal), "signal", f"run {run.id}", {"signal": name}
        )
        return {"run_id": run.id, "signal": name}

    @app.get("/tasks")
    async def list_tasks(
        request: Request,
        status: str = "open",
        user: str | None = None,
        limit: operator_api.Limit = 100,
    ) -> dict[str, Any]:
        """Tasks, newest first; `user` keeps those they may act on."""
        auth.require(request, "view")
        found = await runtime.store.list_tasks(
            status=None if status == "all" else status, user=user, limit=limit
        )
        return {"tasks": [task_summary(t) for t in found]}

    @app.get("/tasks/{task_id}")
    async def get_task(task_id: str, request: Request) -> dict[str, Any]:
        auth.require(request, "view")
        try:
            task = await runtime.store.find_task(task_id)
        except errors.TaskNotFoundError as exc:
            raise HTTPException(404, str(exc)) from None
        return task_summary(task, await runtime.store.task_actions(task.id))

    @app.post("/tasks/{task_id}/decisions")
    async def decide(task_id: str, request: Request) -> dict[str, Any]:
        """Body: decision, optionally by (the principal when left out), data
        (the form) and comment."""
        principal = auth.require(request, "decide")
        body = await operator_api.json_object(request)
        decision = body.get("decision")
        by = _acting_for(principal, body.get("by"), "by")
        if not isinstance(decision, str):
            raise HTTPException(
                400, "give decision as text: approve, reject or complete"
            )
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
        except errors.InvalidDecisionError as exc:
            raise HTTPException(400, str(exc)) from None
        except errors.DecisionRefusedError as exc:
            raise HTTPException(409, str(exc)) from None
        if not task.is_open:
            runtime.engine.notify_due()
        await runtime.store.record_audit(
            auth.actor(principal),
            "decide",
            f"task {task.id}",
            {"decision": decision, "by": by},
        )
        return task_summary(task)

    @app.post("/tasks/{task_id}/delegations")
    async def delegate(task_id: str, request: Request) -> dict[str, Any]:
        """Body: to (who decides in their place) and from (an assignee; the
        principal when left out)."""
        principal = auth.require(request, "decide")
        body = await operator_api.json_object(request)
        by = _acting_for(principal, body.get("from"), "from")
        to = body.get("to")
        if not isinstance(to, str) or not to.strip():
            raise HTTPException(400, "give to (who decides instead), as text")
        try:
            task = await runtime.store.find_task(task_id)
            await runtime.store.delegate(task.id, by=by, to=to)
        except errors.TaskNotFoundError as exc:
            raise HTTPException(404, str(exc)) from None
        except errors.DecisionRefusedError as exc:
            raise HTTPException(409, str(exc)) from None
        await runtime.store.record_audit(
            auth.actor(principal),
            "delegate",
            f"task {task.id}",
            {"from": by.strip(), "to": to.strip()},
        )
        return {"task_id": task.id, "from": by.strip(), "to": to.strip()}

    operator_api.add_routes(app, runtime)

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse(
            {"error": exc.detail}, status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(
        _request: Request, exc: RequestValidationError
    ) -> JSONResponse:
        return JSONResponse({"error": validation_problem(exc)}, status_code=400)

    return app


def validation_problem(exc: RequestValidationError) -> str:
    """A refused request's problems in words: "<field>: <what was expected>"."""
    problems = []
    for error in exc.errors():
        # The location starts with where the value was: query, path or body.
        field = ".".join(str(part) for part in error["loc"][1:]) or "request"
        problems.append(f"{field}: {_expected(error)}")
    return "; ".join(problems)


def _expected(error: dict[str, Any]) -> str:
    context = error.get("ctx") or {}
    kind = error["type"]
    given = str(error.get("input"))
    given = given if len(given) <= 40 else given[:40] + "…"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return f"expected a whole number, got {given!r}"
    if kind == "greater_than_equal":
        return f"expected at least {context['ge']}, got {given}"
    if kind == "less_than_equal":
        return f"expected at most {context['le']}, got {given}"
    if kind == "missing":
        return "required"
    message = str(error.get("msg", "not valid"))
    return message[:1].lower() + message[1:]


def _acting_for(principal: auth.Principal, given: Any, field: str) -> str:
    """Whom a task action is taken for: the principal, unless an admin names
    someone else."""
    if given is None:
        return principal.assignee
    if not isinstance(given, str) or not given.strip():
        raise HTTPException(400, f"{field} must be a user name or e-mail, as text")
    if not principal.is_called(given) and not principal.can("admin"):
        raise HTTPException(
            403, f"{principal.name} may act only for themselves, not for {given!r}"
        )
    return given
