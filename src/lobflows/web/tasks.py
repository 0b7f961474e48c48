"""Task pages for the people a task is sent to: reached by a signed link, no login.

``GET /tasks/{id}?token=…`` shows the task and its form (a link's
``decision`` preselects the button); ``POST /tasks/{id}`` takes the decision.
A GET never decides: mail scanners that open links change nothing.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from lobflows import errors
from lobflows.engine import tasks as task_rules
from lobflows.runtime import Runtime
from lobflows.store.tasks import DECISIONS, TaskRecord

MAX_FORM_BYTES = 65_536
_LABELS = {"approve": "Approve", "reject": "Reject", "complete": "Complete"}

_PAGE = jinja2.Environment(
    autoescape=True, undefined=jinja2.StrictUndefined
).from_string(
    """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>{{ heading }}</title>
<style>
body{font:16px/1.5 system-ui,sans-serif;max-width:38rem;margin:2rem auto;padding:0 1rem;color:#1d232b}
h1{font-size:1.35rem} .muted{color:#5b6570} label{display:block;margin:.8rem 0 .2rem}
input,select,textarea{font:inherit;width:100%;padding:.4rem;box-sizing:border-box}
button{font:inherit;padding:.5rem 1.2rem;margin:1rem .5rem 0 0;border:1px solid #1d232b;border-radius:4px;background:#fff;cursor:pointer}
button.chosen{background:#1d232b;color:#fff} .notice{padding:.8rem;border-radius:4px;background:#eef3f8}
.refused{background:#fbeaea}
</style></head><body>
<h1>{{ heading }}</h1>
{% if notice %}<p class="notice {{ notice_kind }}" role="status">{{ notice }}</p>{% endif %}
{% if task %}
<p class="muted">Requested {% if task.requester %}by {{ task.requester }}{% endif %}
{% if due %} · due {{ due }}{% endif %} · you act as {{ user }}</p>
{% if task.description %}<p>{{ task.description }}</p>{% endif %}
{% if task.is_open %}
<form method="post" action="{{ action }}">
<input type="hidden" name="token" value="{{ token }}">
{% for field in task.form %}
<label for="f-{{ field.name }}">{{ field.label or field.name }}{% if field.required %} *{% endif %}</label>
{% if field.type == "choice" %}
<select id="f-{{ field.name }}" name="field.{{ field.name }}"><option value=""></option>
{% for choice in field.choices %}<option>{{ choice }}</option>{% endfor %}</select>
{% elif field.type == "boolean" %}
<select id="f-{{ field.name }}" name="field.{{ field.name }}"><option value=""></option><option>yes</option><option>no</option></select>
{% else %}
<input id="f-{{ field.name }}" name="field.{{ field.name }}" type="{{ {'number': 'number', 'date': 'date'}.get(field.type, 'text') }}"{% if field.type == 'number' %} step="any"{% endif %}>
{% endif %}
{% endfor %}
<label for="comment">Comment</label>
<textarea id="comment" name="comment" rows="3"></textarea>
{% for decision in decisions %}
<button type="submit" name="decision" value="{{ decision }}"{% if decision == chosen %} class="chosen" autofocus{% endif %}>{{ labels[decision] }}</button>
{% endfor %}
</form>
{% endif %}
{% endif %}
</body></html>
"""
)


class TaskPages:
    """The routes of the task pages, bound to one runtime."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def routes(self) -> list[Route]:
        return [
            Route("/tasks/{task_id}", self.show, methods=["GET"]),
            Route("/tasks/{task_id}", self.decide, methods=["POST"]),
        ]

    async def show(self, request: Request) -> HTMLResponse:
        task_id = request.path_params["task_id"]
        token = request.query_params.get("token", "")
        try:
            task, user = await self._granted(task_id, token)
        except errors.LobflowsError as exc:
            return _refused(exc)
        chosen = request.query_params.get("decision")
        notice = None if task.is_open else f"This task is already {task.status}."
        return self._page(task, user, token, chosen=chosen, notice=notice)

    async def decide(self, request: Request) -> HTMLResponse:
        task_id = request.path_params["task_id"]
        try:
            form = await _read_form(request)
        except errors.DecisionRefusedError as exc:
            return _refused(exc, 400)
        token = form.get("token", "")
        try:
            task, user = await self._granted(task_id, token)
        except errors.LobflowsError as exc:
            return _refused(exc)
        decision = form.get("decision", "")
        data = {
            key[len("field.") :]: value
            for key, value in form.items()
            if key.startswith("field.") and value != ""
        }
        try:
            task = await task_rules.decide(
                self.runtime.store,
                task.id,
                by=user,
                decision=decision,
                data=data,
                comment=form.get("comment", "").strip() or None,
            )
        except errors.DecisionRefusedError as exc:
            return self._page(
                task, user, token, chosen=decision, notice=str(exc), refused=True
            )
        if not task.is_open:
            self.runtime.engine.notify_due()
        notice = (
            "Thank you: your decision is recorded; the task waits for more approvals."
            if task.is_open
            else f"Thank you: the task is {task.status}."
        )
        return self._page(task, user, token, chosen=decision, notice=notice)

    async def _granted(self, task_id: str, token: str) -> tuple[TaskRecord, str]:
        grant = self.runtime.engine.links.verify(task_id, token)
        return await self.runtime.store.get_task(grant.task_id), grant.user

    def _page(
        self,
        task: TaskRecord,
        user: str,
        token: str,
        *,
        chosen: str | None,
        notice: str | None,
        refused: bool = False,
    ) -> HTMLResponse:
        html = _PAGE.render(
            heading=task.title,
            task=task,
            user=user,
            token=token,
            action=f"/tasks/{task.id}",
            due=task_rules.readable_time(task.due_at),
            decisions=DECISIONS[task.kind],
            labels=_LABELS,
            chosen=chosen,
            notice=notice,
            notice_kind="refused" if refused else "",
        )
        return HTMLResponse(html, status_code=409 if refused else 200, headers=_HEADERS)


# The page holds a bearer token in its form: keep it out of caches and frames.
_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
}


async def _read_form(request: Request) -> dict[str, str]:
    """The fields of a URL-encoded form post (the page sends nothing else)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise errors.DecisionRefusedError("expected a form post")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise errors.DecisionRefusedError("the form is too large")
    try:
        pairs = urllib.parse.parse_qsl(
            body.decode(), keep_blank_values=True, max_num_fields=200
        )
    except (UnicodeDecodeError, ValueError):
        raise errors.DecisionRefusedError("the form could not be read") from None
    return dict(pairs)


def _refused(exc: Exception, status: int = 403) -> HTMLResponse:
    html = _PAGE.render(
        heading="This task link cannot be used",
        task=None,
        notice=str(exc),
        notice_kind="refused",
    )
    return HTMLResponse(html, status_code=status, headers=_HEADERS)


def task_summary(task: TaskRecord, actions: list[Any] | None = None) -> dict[str, Any]:
    """A task as the REST API returns it."""
    summary: dict[str, Any] = {
        "id": task.id,
        "run_id": task.run_id,
        "flow": task.flow,
        "step": task.step,
        "kind": task.kind,
        "title": task.title,
        "description": task.description,
        "status": task.status,
        "assignees": task.assignees,
        "required": task.required,
        "requester": task.requester,
        "form": task.form,
        "data": task.data,
        "due_at": task.due_at,
        "created_at": task.created_at,
        "closed_at": task.closed_at,
    }
    if actions is not None:
        summary["history"] = [
            {
                "action": a.action,
                "by": a.by,
                "for": a.for_user,
                "comment": a.comment,
                "at": a.at,
            }
            for a in actions
        ]
    return summary
