"""The task inbox: the signed-in person's open approvals and reviews, and deciding them.

Deciding here is the same decision as through a signed link or the REST
API (lobflows.engine.tasks.decide), taken as the signed-in person and
written to the audit log.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from lobflows import errors
from lobflows.engine import tasks as task_rules
from lobflows.runtime import Runtime
from lobflows.store.tasks import DECISIONS, TaskRecord
from lobflows.web import auth
from lobflows.web.dashboard import render

LABELS = {"approve": "Approve", "reject": "Reject", "complete": "Complete"}


class InboxPages:
    """The inbox pages of one runtime."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.store = runtime.store

    async def index(self, request: Request) -> Response:
        principal = auth.require(request, "decide")
        found = await self.store.list_tasks(user=principal.assignee)
        return render.render(request, "inbox.html", title="Inbox", tasks=found)

    async def show(self, request: Request) -> Response:
        principal = auth.require(request, "decide")
        task = await self._task(request, principal.assignee)
        notice = None if task.is_open else f"This task is {task.status}."
        return self._page(request, task, notice=notice)

    async def decide(self, request: Request) -> Response:
        principal = auth.require(request, "decide")
        form = await auth.verified_form(request)
        task = await self._task(request, principal.assignee)
        decision = form.get("decision", "")
        data = {
            key.removeprefix("field."): value
            for key, value in form.items()
            if key.startswith("field.") and value != ""
        }
        try:
            decided = await task_rules.decide(
                self.store,
                task.id,
                by=principal.assignee,
                decision=decision,
                data=data,
                comment=form.get("comment", "").strip() or None,
            )
        except errors.DecisionRefusedError as exc:
            status = 400 if isinstance(exc, errors.InvalidDecisionError) else 409
            return self._page(
                request, task, problem=str(exc), given=form, status=status
            )
        await self.store.record_audit(
            principal.name,
            "decide",
            f"task {task.id}",
            {"decision": decision, "run_id": task.run_id, "flow": task.flow},
        )
        if not decided.is_open:
            self.runtime.engine.notify_due()
        return RedirectResponse(f"/inbox/{task.id}?decided=1", status_code=303)

    async def _task(self, request: Request, user: str) -> TaskRecord:
        task = await self.store.find_task(request.path_params["task_id"])
        mine = await self.store.list_tasks(status=None, user=user, limit=100_000)
        if task.id not in {t.id for t in mine}:
            raise HTTPException(403, "this task is not assigned or delegated to you")
        return task

    def _page(
        self,
        request: Request,
        task: TaskRecord,
        *,
        notice: str | None = None,
        problem: str | None = None,
        given: dict[str, str] | None = None,
        status: int = 200,
    ) -> Response:
        if request.query_params.get("decided") == "1":
            notice = (
                "Your decision is recorded; the task waits for more decisions."
                if task.is_open
                else f"Your decision is recorded: the task is {task.status}."
            )
        return render.render(
            request,
            "task.html",
            status=status,
            title=task.title,
            task=task,
            due=task_rules.iso_time(task.due_at),
            decisions=DECISIONS[task.kind],
            labels=LABELS,
            notice=notice,
            problem=problem,
            given=given or {},
        )
