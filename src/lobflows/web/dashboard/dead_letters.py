"""Working the dead letter queue from the dashboard: inspect, replay, discard.

Replaying many letters at once runs in the background at a bounded pace
(`REPLAYS_PER_SECOND`), so a queue of hundreds does not hit a system that
just recovered with all of them at once. Its progress is kept in the store
(lobflows.store.replay_jobs): its page shows it from any server process,
and opening the page of a job whose process stopped takes it over.
Every replay and discard is written to the audit log.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from lobflows import errors
from lobflows.runtime import Runtime
from lobflows.secrets import redactor
from lobflows.store import dead_letters as dead_letter_store
from lobflows.store.records import DeadLetter
from lobflows.store.replay_jobs import ReplayJob
from lobflows.web import auth
from lobflows.web.dashboard import render
from lobflows.web.dashboard.runs import RunPages

log = logging.getLogger(__name__)

REPLAYS_PER_SECOND = 5.0
# How long a replay job stays with its process without news of it.
JOB_LEASE_SECONDS = 30.0
MAX_SELECTED = 500
MAX_REASON_CHARS = 500
LETTERS_SHOWN = 200
LETTER_STATUSES = ("open", "replayed", "discarded")


class CorrectionError(ValueError):
    """A corrected input that cannot be used, with the reason in words."""


def parse_correction(text: str, shown: Any) -> Any:
    """The corrected input of a replay form, or None when left as shown.

    `shown` is what the form was filled with (redacted); an unchanged text
    means no correction, so a redacted value is never written back. A
    correction must be a JSON object, like the API's.
    """
    if not text.strip():
        return None
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise CorrectionError(f"the corrected input is not valid JSON: {exc}") from None
    if value == redactor.redact_data(shown):
        return None
    try:
        return dead_letter_store.checked_correction(value, what="the corrected input")
    except ValueError as exc:
        raise CorrectionError(
            f"{exc}: give the JSON object the step should get, "
            "or leave the text as shown to replay unchanged"
        ) from None


async def replay(
    runtime: Runtime,
    letter: DeadLetter,
    *,
    actor: str,
    corrected_input: Any = None,
    corrected_run_input: Any = None,
) -> str:
    """Queue a dead letter's run again, audited, and wake a local worker."""
    run_id = await runtime.store.replay_dead_letter(
        letter.id,
        corrected_input=corrected_input,
        corrected_run_input=corrected_run_input,
    )
    corrected = [
        name
        for name, value in (
            ("step input", corrected_input),
            ("run input", corrected_run_input),
        )
        if value is not None
    ]
    await runtime.store.record_audit(
        actor,
        "replay",
        f"dead letter {letter.id}",
        {
            "run_id": run_id,
            "flow": letter.flow,
            "step": letter.step,
            "corrected": corrected,
        },
    )
    runtime.engine.notify_due()
    return run_id


class DeadLetterPages:
    """The dead letter pages of one runtime, and its replay jobs."""

    def __init__(self, runtime: Runtime, runs: RunPages) -> None:
        self.runtime = runtime
        self.store = runtime.store
        self.runs = runs
        self._tasks: set[asyncio.Task[None]] = set()

    async def index(self, request: Request) -> Response:
        auth.require(request, "operate")
        status = request.query_params.get("status", "open")
        if status not in (*LETTER_STATUSES, "all"):
            raise HTTPException(
                400,
                f"status {status!r} is not one of {', '.join(LETTER_STATUSES)}, all",
            )
        letters = await self.store.dead_letters(
            status=None if status == "all" else status, limit=LETTERS_SHOWN
        )
        return render.render(
            request,
            "dead_letters.html",
            title="Dead letters",
            letters=letters,
            chosen_status=status,
            statuses=(*LETTER_STATUSES, "all"),
            reasons=await self._discard_reasons(),
            jobs=await self.store.recent_replay_jobs(5),
            rate=REPLAYS_PER_SECOND,
        )

    async def show(self, request: Request) -> Response:
        auth.require(request, "operate")
        letter = await self._letter(request)
        run = await self.store.get_run(letter.run_id)
        reasons = await self._discard_reasons()
        return render.render(
            request,
            "dead_letter.html",
            title=f"Dead letter {letter.id}",
            letter=letter,
            run=run,
            reason=reasons.get(letter.id),
            correction=None,
            problem=None,
        )

    async def replay_one(self, request: Request) -> Response:
        """Replay one letter, optionally with a corrected step or run input."""
        principal = auth.require(request, "operate")
        form = await auth.verified_form(request)
        letter = await self._letter(request)
        back = form.get("back", "")
        run = await self.store.get_run(letter.run_id)
        text = form.get("input", "")
        try:
            if letter.step_input is not None:
                corrected = parse_correction(text, letter.step_input)
                corrected_run = None
            else:
                corrected, corrected_run = None, parse_correction(text, run.input)
        except CorrectionError as exc:
            if back == "run":
                return await self.runs.page(
                    request, run.id, correction=text, problem=str(exc), status=400
                )
            return render.render(
                request,
                "dead_letter.html",
                status=400,
                title=f"Dead letter {letter.id}",
                letter=letter,
                run=run,
                reason=None,
                correction=text,
                problem=str(exc),
            )
        await replay(
            self.runtime,
            letter,
            actor=principal.name,
            corrected_input=corrected,
            corrected_run_input=corrected_run,
        )
        return RedirectResponse(f"/runs/{letter.run_id}?replayed=1", status_code=303)

    async def discard(self, request: Request) -> Response:
        principal = auth.require(request, "operate")
        form = await auth.verified_form(request)
        letter = await self._letter(request)
        reason = " ".join(form.get("reason", "").split())
        if not reason:
            raise HTTPException(400, "give a reason for discarding the dead letter")
        if len(reason) > MAX_REASON_CHARS:
            raise HTTPException(
                400, f"the reason is longer than {MAX_REASON_CHARS} characters"
            )
        await self.store.discard_dead_letter(letter.id)
        await self.store.record_audit(
            principal.name,
            "discard",
            f"dead letter {letter.id}",
            {"run_id": letter.run_id, "flow": letter.flow, "reason": reason},
        )
        return RedirectResponse("/dead-letters", status_code=303)

    async def replay_many(self, request: Request) -> Response:
        """Start a background job replaying the selected letters at a bounded pace."""
        principal = auth.require(request, "operate")
        await auth.verified_form(request)
        selected = (await request.form()).getlist("letter")
        ids = _letter_ids(selected)
        job = await self.store.create_replay_job(
            uuid.uuid4().hex[:12],
            actor=principal.name,
            letter_ids=ids,
            owner=self.runtime.engine.owner,
            lease_seconds=JOB_LEASE_SECONDS,
        )
        self._start(job)
        return RedirectResponse(f"/dead-letters/jobs/{job.id}", status_code=303)

    async def job(self, request: Request) -> Response:
        auth.require(request, "operate")
        job = await self.store.replay_job(request.path_params["job_id"])
        if job is None:
            raise HTTPException(404, "no such replay job")
        if job.is_stalled(time.time()):
            # Its process stopped: this one goes on from where it was.
            taken = await self.store.take_over_replay_job(
                job.id, owner=self.runtime.engine.owner, lease_seconds=JOB_LEASE_SECONDS
            )
            if taken is not None:
                log.info(
                    "Took over replay job %s at %s of %s letters",
                    taken.id,
                    taken.done,
                    len(taken.letter_ids),
                    extra={"event": "replay_job_taken_over", "job": taken.id},
                )
                self._start(taken)
                job = taken
        return render.render(
            request, "replay_job.html", title="Replaying dead letters", job=job
        )

    def _start(self, job: ReplayJob) -> None:
        task = asyncio.create_task(self._work(job))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _work(self, job: ReplayJob) -> None:
        """Replay the job's remaining letters, writing each outcome; stop if
        another process has taken the job over."""
        pause = 1.0 / REPLAYS_PER_SECOND
        for index, letter_id in enumerate(job.remaining):
            if index:
                await asyncio.sleep(pause)
            result: dict[str, Any] = {"letter": letter_id}
            try:
                letter = await self.store.dead_letter(letter_id)
                result["run_id"] = await replay(self.runtime, letter, actor=job.actor)
            except errors.LobflowsError as exc:
                result["refused"] = redactor.redact(str(exc))
            except Exception:
                log.exception(
                    "replaying dead letter %s failed",
                    letter_id,
                    extra={"event": "dashboard_replay_failed"},
                )
                result["refused"] = "failed; the server log says why"
            still_ours = await self.store.record_replay_result(
                job.id,
                result,
                owner=self.runtime.engine.owner,
                lease_seconds=JOB_LEASE_SECONDS,
            )
            if not still_ours:
                return

    async def _letter(self, request: Request) -> DeadLetter:
        text = request.path_params["letter_id"]
        return await self.store.dead_letter(dead_letter_store.dead_letter_id(text))

    async def _discard_reasons(self) -> dict[int, str]:
        """Why letters were discarded, from the audit log, by letter id."""
        entries = await self.store.audit_entries(limit=1000, action="discard")
        reasons: dict[int, str] = {}
        for entry in entries:
            number = entry.target.removeprefix("dead letter ")
            if number.isdigit() and int(number) not in reasons:
                detail = entry.detail or {}
                reasons[int(number)] = f"{detail.get('reason', '')} ({entry.actor})"
        return reasons


def _letter_ids(selected: list[Any]) -> list[int]:
    if not selected:
        raise HTTPException(400, "select at least one dead letter to replay")
    if len(selected) > MAX_SELECTED:
        raise HTTPException(
            400, f"select at most {MAX_SELECTED} dead letters at a time"
        )
    try:
        return list(dict.fromkeys(int(str(value)) for value in selected))
    except ValueError:
        raise HTTPException(400, "dead letter ids are numbers") from None
