"""The dashboard: server-rendered pages over the engine and the store.

Pages work without JavaScript; the overview's tiles update live through
server-sent events (``/events``) and a small script of our own.

    /                       tiles per flow, recent errors
    /flows/{name}           card, mappings, versions, runs with filters
    /mappings/{name}        a named mapping's fields and rules
    /runs/{id}              timeline of steps and attempts; replay if dead-lettered
    /dead-letters           inspect, replay one or many, discard with a reason
    /inbox                  the signed-in person's approvals and reviews
    /map                    the integration map, coloured by health
    /connections            health, limits and breaker of each connection
    /secrets                the secret inventory, without values
    /audit                  who did what, when
    /users                  users, their roles and API tokens (admins)
"""

from __future__ import annotations

from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from lobflows.runtime import Runtime
from lobflows.web.dashboard import render
from lobflows.web.dashboard.dead_letters import DeadLetterPages
from lobflows.web.dashboard.inbox import InboxPages
from lobflows.web.dashboard.live import LiveUpdates
from lobflows.web.dashboard.runs import RunPages
from lobflows.web.dashboard.users import UserPages
from lobflows.web.dashboard.views import Views


def routes(runtime: Runtime) -> list[BaseRoute]:
    """Every dashboard page, its live updates and its static files."""
    views = Views(runtime)
    runs = RunPages(runtime)
    letters = DeadLetterPages(runtime, runs)
    inbox = InboxPages(runtime)
    live = LiveUpdates(runtime)
    users = UserPages(runtime)
    page = render.page
    return [
        Route("/", page(views.overview), methods=["GET"]),
        Route("/events", live.events, methods=["GET"]),
        Route("/flows/{name}", page(views.flow), methods=["GET"]),
        Route("/mappings/{name}", page(views.mapping), methods=["GET"]),
        Route("/runs/{run_id}", page(runs.show), methods=["GET"]),
        Route("/dead-letters", page(letters.index), methods=["GET"]),
        Route("/dead-letters/replay", page(letters.replay_many), methods=["POST"]),
        Route("/dead-letters/jobs/{job_id}", page(letters.job), methods=["GET"]),
        Route("/dead-letters/{letter_id}", page(letters.show), methods=["GET"]),
        Route(
            "/dead-letters/{letter_id}/replay",
            page(letters.replay_one),
            methods=["POST"],
        ),
        Route(
            "/dead-letters/{letter_id}/discard",
            page(letters.discard),
            methods=["POST"],
        ),
        Route("/inbox", page(inbox.index), methods=["GET"]),
        Route("/inbox/{task_id}", page(inbox.show), methods=["GET"]),
        Route("/inbox/{task_id}", page(inbox.decide), methods=["POST"]),
        Route("/map", page(views.integration_map), methods=["GET"]),
        Route("/connections", page(views.connections), methods=["GET"]),
        Route("/secrets", page(views.secrets), methods=["GET"]),
        Route("/audit", page(views.audit), methods=["GET"]),
        Route("/users", page(users.index), methods=["GET"]),
        Route("/users", page(users.add), methods=["POST"]),
        Route("/users/{name}", page(users.show), methods=["GET"]),
        Route("/users/{name}/roles", page(users.set_roles), methods=["POST"]),
        Route("/users/{name}/password", page(users.set_password), methods=["POST"]),
        Route("/users/{name}/tokens", page(users.create_token), methods=["POST"]),
        Route(
            "/users/{name}/tokens/revoke", page(users.revoke_token), methods=["POST"]
        ),
        Route("/users/{name}/remove", page(users.remove), methods=["POST"]),
        Mount("/static", app=StaticFiles(directory=render.STATIC), name="static"),
    ]
