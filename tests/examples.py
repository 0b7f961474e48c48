"""Driving a shipped example in one process: its flows, roles and demo secrets,
against the stand-ins, with a clock the test moves."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from lobflows.engine import tasks
from lobflows.engine.clock import ManualClock
from lobflows.runtime import Runtime
from lobflows.settings import Settings
from lobflows.store.tasks import TaskRecord
from lobflows.triggers.webhook import sign
from lobflows.web.app import create_app
from tests.support import REPO, pass_once

EXAMPLES = REPO / "examples"


class Example:
    """One example's flows served in this process; webhooks go through the app."""

    def __init__(self, runtime: Runtime, folder: Path) -> None:
        self.runtime = runtime
        self.store = runtime.store
        self.folder = folder
        self.clock: ManualClock = runtime.engine.clock  # type: ignore[assignment]
        self.app = create_app(runtime, has_local_worker=False)

    @classmethod
    async def open(
        cls, name: str, store_url: str, standins: Any, monkeypatch: pytest.MonkeyPatch
    ) -> Example:
        """The example `name`, its connections pointed at the stand-ins."""
        folder = EXAMPLES / name
        monkeypatch.setenv("ERPNEXT_URL", standins.erpnext_url)
        monkeypatch.setenv("SMTP_PORT", str(standins.mailbox.port))
        monkeypatch.setenv("LOBFLOWS_SECRET_ERPNEXT_API", standins.erpnext_credentials)
        monkeypatch.setenv(
            "LOBFLOWS_SECRET_FACILITIES_CHAT_WEBHOOK", standins.chat_webhook
        )
        settings = Settings(
            database_url=store_url,
            secrets_file=folder / "secrets.demo.yaml",
            public_url="https://flows.example.com",
        )
        runtime = await Runtime.open(settings, folder / "flows")
        # Decisions and events wake runs by the real time; the test clock
        # stays ahead of it, and moves on only when the test says so.
        runtime.engine.clock = ManualClock(start=time.time() + 3600)
        return cls(runtime, folder)

    async def close(self) -> None:
        await self.runtime.close()

    def sample(self, flow: str, **changes: Any) -> dict[str, Any]:
        """The example's sample trigger body of a flow, with fields replaced."""
        body = json.loads((self.folder / "samples" / f"{flow}.json").read_text())
        body.update(changes)
        return body

    async def post(
        self,
        path: str,
        body: Any,
        *,
        secret: str,
        header: str = "X-Signature-256",
        prefix: str = "sha256=",
        encoding: str = "hex",
    ) -> httpx.Response:
        """POST a webhook signed the way its sender signs it."""
        raw = json.dumps(body).encode()
        key = self.runtime.secrets.get(secret)
        headers = {
            "Content-Type": "application/json",
            header: sign(raw, key, prefix=prefix, encoding=encoding),
        }
        transport = httpx.ASGITransport(app=self.app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://flows.test"
        ) as client:
            reply = await client.post(path, content=raw, headers=headers)
        assert reply.status_code in (200, 202), reply.text
        return reply

    async def settle(self) -> None:
        """Run everything that is due by the test clock, until nothing is."""
        while await pass_once(self.runtime):
            pass

    async def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        await self.settle()

    async def status(self, run_id: str) -> str:
        return (await self.store.get_run(run_id)).status

    async def steps(self, run_id: str) -> dict[str, Any]:
        return await self.store.completed_steps(run_id)

    async def task(self, run_id: str, step: str) -> TaskRecord:
        found = await self.store.task_of_step(run_id, step)
        assert found is not None, f"no task at step {step} of run {run_id}"
        return found

    async def decide(
        self, task: TaskRecord, by: str, decision: str, **data: Any
    ) -> TaskRecord:
        decided = await tasks.decide(
            self.store, task.id, by=by, decision=decision, data=data
        )
        await self.settle()
        return decided


def mails_to(standins: Any, address: str) -> list[Any]:
    """The messages the SMTP stand-in accepted for one address, in order."""
    return [m for m in standins.mailbox.messages if address in m.rcpt_tos]
