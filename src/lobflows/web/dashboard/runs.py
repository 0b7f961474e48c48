"""A run's page: its timeline of steps and attempts, its family, its dead letter."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from lobflows.runtime import Runtime
from lobflows.store.records import Attempt, DeadLetter, RunRecord
from lobflows.web import auth
from lobflows.web.dashboard import render

SENSITIVE = ("pii", "secret")


@dataclass(frozen=True)
class TimelineEntry:
    """One attempt of a step, with what the page says about it."""

    attempt: Attempt
    seconds: float
    # How long the run waited before trying the step again, after a failure.
    retry_delay_seconds: float | None


def timeline(attempts: list[Attempt]) -> list[TimelineEntry]:
    return [
        TimelineEntry(
            attempt=a,
            seconds=max(a.finished_at - a.started_at, 0.0),
            retry_delay_seconds=(
                max(a.next_attempt_at - a.finished_at, 0.0)
                if a.next_attempt_at is not None
                else None
            ),
        )
        for a in attempts
    ]


def replay_input(letter: DeadLetter, run: RunRecord) -> tuple[str, Any]:
    """What a replay may correct: the failed step's input, or else the run's."""
    if letter.step_input is not None:
        return "step", letter.step_input
    return "run", run.input


class RunPages:
    """The run page of one runtime."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.store = runtime.store

    async def show(self, request: Request) -> Response:
        auth.require(request, "view")
        return await self.page(request, request.path_params["run_id"])

    async def page(
        self,
        request: Request,
        run_id: str,
        *,
        correction: str | None = None,
        problem: str | None = None,
        status: int = 200,
    ) -> Response:
        """The page; after a refused replay, with the text given and the problem."""
        run = await self.store.find_run(run_id)
        attempts = await self.store.attempts(run.id)
        letters = await self.store.dead_letters_of_run(run.id)
        open_letter = next((d for d in letters if d.status == "open"), None)
        parent = (
            await self.store.get_run(run.parent_run_id) if run.parent_run_id else None
        )
        loaded = self.runtime.engine.project.flows.get(run.flow)
        sensitivity = loaded.spec.card.data.sensitivity if loaded else "internal"
        replay_target, replay_value = (
            replay_input(open_letter, run) if open_letter else ("step", None)
        )
        return render.render(
            request,
            "run.html",
            status=status,
            title=f"Run {run.id[:12]}",
            run=run,
            timeline=timeline(attempts),
            parent=parent,
            children=await self.store.children(run.id),
            tasks=await self.store.list_tasks(status=None, run_id=run.id),
            letters=letters,
            open_letter=open_letter,
            replay_target=replay_target,
            replay_text=(
                correction
                if correction is not None
                else render.pretty_json(replay_value)
            ),
            problem=problem,
            is_sensitive=sensitivity in SENSITIVE,
            sensitivity=sensitivity,
            replayed=request.query_params.get("replayed") == "1",
        )
