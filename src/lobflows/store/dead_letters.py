"""The dead letter queue: runs parked for a person, replayed or discarded once."""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa

from lobflows import errors
from lobflows.spec.models import COMPENSATION_STEP
from lobflows.store import tables
from lobflows.store.base import StoreBase
from lobflows.store.records import DeadLetter

# Ids are positive 64-bit integers in every store; any other number names
# no dead letter (and SQLite cannot even compare a larger one).
MAX_ID = 2**63 - 1


def dead_letter_id(text: str) -> int:
    """The dead letter id written in `text`, or RunNotFoundError when the
    text is not a whole number from 1 to 2**63 - 1."""
    shown = text if len(text) <= 40 else text[:40] + "…"
    is_number = text.isascii() and text.isdigit() and len(text) <= len(str(MAX_ID))
    if not is_number or not 1 <= int(text) <= MAX_ID:
        raise errors.RunNotFoundError(
            f"no dead letter with id {shown!r}: ids are whole numbers "
            f"from 1 to {MAX_ID}"
        )
    return int(text)


def checked_correction(value: Any, *, what: str) -> dict[str, Any]:
    """A replay's corrected input, which must be a JSON object; else
    ValueError naming what was found instead."""
    if isinstance(value, dict):
        return value
    found = {
        type(None): "null",
        bool: "true or false",
        str: "a string",
        int: "a number",
        float: "a number",
        list: "a list",
    }.get(type(value), type(value).__name__)
    raise ValueError(f"{what} must be a JSON object, not {found}")


class DeadLetterOps(StoreBase):
    """Listing, replaying and discarding dead letters."""

    async def dead_letters(
        self, *, status: str | None = "open", limit: int = 100
    ) -> list[DeadLetter]:
        d = tables.dead_letters
        query = sa.select(d).order_by(d.c.id.desc()).limit(limit)
        if status:
            query = query.where(d.c.status == status)
        async with self.engine.connect() as conn:
            return [DeadLetter(**row._mapping) for row in await conn.execute(query)]

    async def dead_letter(self, dead_letter_id: int) -> DeadLetter:
        if not 1 <= dead_letter_id <= MAX_ID:
            raise errors.RunNotFoundError(f"no dead letter with id {dead_letter_id}")
        d = tables.dead_letters
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(sa.select(d).where(d.c.id == dead_letter_id))
            ).first()
        if row is None:
            raise errors.RunNotFoundError(f"no dead letter with id {dead_letter_id}")
        return DeadLetter(**row._mapping)

    async def dead_letters_of_run(self, run_id: str) -> list[DeadLetter]:
        """A run's dead letters, newest first (a replayed run may fail again)."""
        d = tables.dead_letters
        query = sa.select(d).where(d.c.run_id == run_id).order_by(d.c.id.desc())
        async with self.engine.connect() as conn:
            return [DeadLetter(**row._mapping) for row in await conn.execute(query)]

    async def _compensated(self, run_id: str) -> bool:
        a = tables.step_attempts
        query = sa.select(a.c.id).where(
            a.c.run_id == run_id,
            a.c.step == COMPENSATION_STEP,
            a.c.status == "succeeded",
        )
        async with self.engine.connect() as conn:
            return (await conn.execute(query.limit(1))).first() is not None

    async def replay_dead_letter(
        self,
        dead_letter_id: int,
        *,
        corrected_input: Any = None,
        corrected_run_input: Any = None,
    ) -> str:
        """Queue the run again from its failed step.

        `corrected_input` replaces the failed step's input; `corrected_run_input`
        replaces the run's input (the trigger payload) that every step reads.
        Only an open dead letter can be replayed, once.
        """
        letter = await self.dead_letter(dead_letter_id)
        run = await self.get_run(letter.run_id)
        if not letter.step.startswith("undo.") and await self._compensated(run.id):
            raise errors.StoreError(
                f"run {run.id} was compensated (its completed steps were undone); "
                "replaying it would go on from a state that no longer exists: "
                "start a new run with its input instead"
            )
        overrides = dict(run.overrides or {})
        if corrected_input is not None:
            overrides[letter.step] = corrected_input
        run_values: dict[str, Any] = {}
        if corrected_run_input is not None:
            run_values["input"] = corrected_run_input
        d = tables.dead_letters

        def write(conn: sa.Connection) -> None:
            now = time.time()
            claimed = conn.execute(
                d.update()
                .where(d.c.id == dead_letter_id, d.c.status == "open")
                .values(status="replayed", resolved_at=now)
            )
            if claimed.rowcount != 1:
                raise errors.StoreError(
                    f"dead letter {dead_letter_id} is {letter.status}, not open"
                )
            conn.execute(
                tables.runs.update()
                .where(tables.runs.c.id == letter.run_id)
                .values(
                    status="queued",
                    error=None,
                    overrides=overrides or None,
                    current_attempts=0,
                    due_at=now,
                    finished_at=None,
                    updated_at=now,
                    **run_values,
                )
            )

        await self._write(write)
        return letter.run_id

    async def discard_dead_letter(self, dead_letter_id: int) -> None:
        letter = await self.dead_letter(dead_letter_id)
        d = tables.dead_letters
        statement = d.update().where(d.c.id == dead_letter_id, d.c.status == "open")
        discarded = await self._write(
            lambda conn: (
                conn.execute(
                    statement.values(status="discarded", resolved_at=time.time())
                ).rowcount
            )
        )
        if discarded != 1:
            raise errors.StoreError(
                f"dead letter {dead_letter_id} is {letter.status}, not open"
            )
