"""REST API routes for operators: dead letters, the audit log, the secret inventory.

Each change is written to the audit log with the principal that made it.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

import orjson
from fastapi import FastAPI, Query, Request
from starlette.exceptions import HTTPException

from lobflows import errors
from lobflows.runtime import Runtime
from lobflows.secrets import redactor
from lobflows.store import dead_letters as dead_letter_store
from lobflows.store.records import DeadLetter
from lobflows.web import auth

LETTER_STATUSES = ("open", "replayed", "discarded", "all")
MAX_REASON_CHARS = 2000
MAX_LIMIT = 1000
# How many entries a listing returns: 1 to MAX_LIMIT; outside that, 400.
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT)]


def add_routes(app: FastAPI, runtime: Runtime) -> None:
    """Add the operator routes to the REST API app."""

    @app.get("/dead-letters")
    async def list_dead_letters(
        request: Request, status: str = "open", limit: Limit = 100
    ) -> dict[str, Any]:
        """Dead letters, newest first; status open, replayed, discarded or all."""
        auth.require(request, "operate")
        if status not in LETTER_STATUSES:
            raise HTTPException(
                400, f"status {status!r} is not one of {', '.join(LETTER_STATUSES)}"
            )
        letters = await runtime.store.dead_letters(
            status=None if status == "all" else status, limit=limit
        )
        return {"dead_letters": [letter_summary(d) for d in letters]}

    @app.post("/dead-letters/{dead_letter_id}/replay")
    async def replay(dead_letter_id: str, request: Request) -> dict[str, Any]:
        """Body (optional): input, the failed step's corrected input, and
        run_input, the run's corrected input; each a JSON object, left out
        to replay unchanged."""
        principal = auth.require(request, "operate")
        body = await json_object(request, empty_ok=True)
        corrected = _correction(body, "input", "the failed step's corrected input")
        corrected_run = _correction(body, "run_input", "the run's corrected input")
        letter = await _letter(runtime, dead_letter_id)
        if corrected is not None and letter.step_input is None:
            raise HTTPException(
                400,
                f"step {letter.step!r} takes no input of its own: it reads the "
                "run's input; give run_input instead",
            )
        try:
            run_id = await runtime.store.replay_dead_letter(
                letter.id, corrected_input=corrected, corrected_run_input=corrected_run
            )
        except errors.StoreError as exc:
            raise HTTPException(409, str(exc)) from None
        runtime.engine.notify_due()
        await runtime.store.record_audit(
            auth.actor(principal),
            "replay",
            f"dead letter {letter.id}",
            {
                "run_id": run_id,
                "flow": letter.flow,
                "step": letter.step,
                "corrected_input": corrected is not None,
                "corrected_run_input": corrected_run is not None,
            },
        )
        return {"dead_letter_id": letter.id, "run_id": run_id, "status": "replayed"}

    @app.post("/dead-letters/{dead_letter_id}/discard")
    async def discard(dead_letter_id: str, request: Request) -> dict[str, Any]:
        """Body: reason, why the dead letter is closed without a replay."""
        principal = auth.require(request, "operate")
        body = await json_object(request)
        reason = body.get("reason")
        if not isinstance(reason, str) or not reason.strip():
            raise HTTPException(400, "give the reason for discarding, as text")
        letter = await _letter(runtime, dead_letter_id)
        try:
            await runtime.store.discard_dead_letter(letter.id)
        except errors.StoreError as exc:
            raise HTTPException(409, str(exc)) from None
        await runtime.store.record_audit(
            auth.actor(principal),
            "discard",
            f"dead letter {letter.id}",
            {
                "run_id": letter.run_id,
                "flow": letter.flow,
                "step": letter.step,
                "reason": reason.strip()[:MAX_REASON_CHARS],
            },
        )
        return {"dead_letter_id": letter.id, "status": "discarded"}

    @app.get("/audit")
    async def audit(
        request: Request,
        limit: Limit = 100,
        actor: str | None = None,
        action: str | None = None,
    ) -> dict[str, Any]:
        """The audit log, newest first, optionally of one actor or action."""
        auth.require(request, "admin")
        entries = await runtime.store.audit_entries(
            limit=limit, actor=actor, action=action
        )
        return {"entries": [dataclasses.asdict(e) for e in entries]}

    @app.get("/secrets")
    async def secrets(request: Request) -> dict[str, Any]:
        """The secret inventory: names, versions, ages and users; never a value."""
        auth.require(request, "secrets")
        from lobflows.secrets import inventory

        found = await inventory.secret_inventory(runtime)
        return {"secrets": [dataclasses.asdict(s) for s in found]}


def letter_summary(letter: DeadLetter) -> dict[str, Any]:
    """A dead letter as the REST API returns it, its step input redacted."""
    return {
        "id": letter.id,
        "run_id": letter.run_id,
        "flow": letter.flow,
        "step": letter.step,
        "error": redactor.redact(letter.error),
        "step_input": redactor.redact_data(letter.step_input),
        "status": letter.status,
        "created_at": letter.created_at,
        "resolved_at": letter.resolved_at,
    }


async def _letter(runtime: Runtime, text: str) -> DeadLetter:
    try:
        letter_id = dead_letter_store.dead_letter_id(text)
        return await runtime.store.dead_letter(letter_id)
    except errors.RunNotFoundError as exc:
        raise HTTPException(404, str(exc)) from None


def _correction(body: dict[str, Any], key: str, what: str) -> Any:
    """A corrected input of a replay: None when left out, else a JSON object."""
    if key not in body:
        return None
    try:
        return dead_letter_store.checked_correction(body[key], what=what)
    except ValueError as exc:
        raise HTTPException(
            400, f"{key}: {exc}; leave {key} out to replay unchanged"
        ) from None


async def json_object(request: Request, *, empty_ok: bool = False) -> dict[str, Any]:
    """The request body as a JSON object; an empty body is {} when empty_ok."""
    raw = await request.body()
    if empty_ok and not raw.strip():
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise HTTPException(400, f"body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise HTTPException(400, "body must be a JSON object")
    return body
