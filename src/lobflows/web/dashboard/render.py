"""Rendering dashboard pages: the templates, their filters, and error pages.

Every page handler is wrapped by `page`, so a refusal, a missing record or
an unexpected failure becomes a page that says what happened, never a
traceback.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import jinja2
import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from lobflows import errors
from lobflows.engine import tasks as task_rules
from lobflows.secrets import redactor
from lobflows.web import auth

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"

Handler = Callable[[Request], Awaitable[Response]]

# The navigation: path, label, and the permission a person needs to see it.
NAVIGATION = (
    ("/", "Overview", "view"),
    ("/dead-letters", "Dead letters", "operate"),
    ("/inbox", "Inbox", "decide"),
    ("/map", "Map", "view"),
    ("/connections", "Connections", "view"),
    ("/secrets", "Secrets", "secrets"),
    ("/audit", "Audit", "admin"),
    ("/users", "Users", "admin"),
)

# Pages hold CSRF tokens and run data: keep them out of shared caches and frames.
HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:;"
        " form-action 'self'; frame-ancestors 'none'"
    ),
}


def when(seconds: float | None) -> str:
    """A moment as UTC date and time, e.g. 2025-03-04 10:23:07 UTC."""
    return task_rules.readable_time(seconds) or "—"


def iso(seconds: float | None) -> str:
    """A moment in ISO 8601, UTC, for a ``<time datetime>`` attribute."""
    return task_rules.iso_time(seconds) or ""


def ago(seconds: float | None, now: float | None = None) -> str:
    """How long ago a moment was, in words: 30 s ago, 2 min ago, 3 h ago."""
    if seconds is None:
        return "never"
    gap = max((now or time.time()) - seconds, 0.0)
    if gap < 60:
        return f"{gap:.0f} s ago"
    if gap < 3600:
        return f"{gap / 60:.0f} min ago"
    if gap < 86400:
        return f"{gap / 3600:.0f} h ago"
    return f"{gap / 86400:.0f} d ago"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min"


def pretty_json(value: Any) -> str:
    """Redacted, indented JSON of run data, as text for a <pre> or a textarea."""
    safe = redactor.redact_data(value)
    return orjson.dumps(
        safe, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS, default=str
    ).decode()


def scrub(value: Any) -> str:
    """A text from the run store with every known secret value removed."""
    return redactor.redact("" if value is None else str(value))


ENVIRONMENT = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
ENVIRONMENT.filters.update(
    when=when, ago=ago, iso=iso, duration=duration, json=pretty_json, scrub=scrub
)


def fragment(template: str, **context: Any) -> str:
    """A part of a page (a tile, the error list), as the live updates send it."""
    return ENVIRONMENT.get_template(template).render(**context)


def render(
    request: Request, template: str, *, status: int = 200, **context: Any
) -> HTMLResponse:
    """A whole page, with the navigation, the signed-in person and a CSRF token."""
    principal = getattr(request.state, "principal", None)
    can = principal.can if principal is not None else (lambda _p: False)
    navigation = [
        (path, label, path == request.url.path)
        for path, label, permission in NAVIGATION
        if can(permission)
    ]
    html = ENVIRONMENT.get_template(template).render(
        principal=principal,
        csrf_token=auth.csrf_token(request) if principal is not None else "",
        navigation=navigation,
        can=can,
        **context,
    )
    return HTMLResponse(html, status_code=status, headers=HEADERS)


def error_page(request: Request, status: int, message: str) -> HTMLResponse:
    titles = {
        400: "That request cannot be used",
        403: "Not allowed",
        404: "Not found",
        409: "That cannot be done now",
    }
    title = titles.get(status, "Something went wrong")
    return render(
        request, "error.html", status=status, title=title, message=scrub(message)
    )


def page(handler: Handler) -> Handler:
    """Turn refusals and failures of a page handler into error pages."""

    @functools.wraps(handler)
    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except HTTPException as exc:
            return error_page(request, exc.status_code, str(exc.detail))
        except (errors.RunNotFoundError, errors.TaskNotFoundError) as exc:
            return error_page(request, 404, str(exc))
        except errors.LobflowsError as exc:
            return error_page(request, 409, str(exc))
        except Exception:
            log.exception(
                "dashboard page %s failed",
                request.url.path,
                extra={"event": "dashboard_page_failed"},
            )
            return error_page(
                request, 500, "The page could not be shown; the server log says why."
            )

    return wrapped
