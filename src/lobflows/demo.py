"""``lobflows demo``: an example run end to end on one machine.

Starts local stand-ins for the systems the example talks to (an ERPNext
site, a chat webhook, an SMTP server), serves the example's flows, posts the
sample trigger signed like the real sender would, and shows what arrived
where.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets as random_tokens
import socket
import time
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

from lobflows import errors, server
from lobflows.cli import views
from lobflows.secrets import SecretStore
from lobflows.settings import Settings
from lobflows.spec import loader
from lobflows.store import RunStore
from lobflows.triggers.webhook import sign

ERPNEXT_PORT, CHAT_PORT, SMTP_PORT = 8701, 8702, 8725
DEMO_SECRETS = "secrets.demo.yaml"
# The dashboard user the demo signs in as; its password is new at every start.
DEMO_USER = "demo"
# An example's sample trigger bodies: samples/<flow name>.json.
SAMPLES = "samples"
RUN_TIMEOUT_SECONDS = 60.0


async def run_demo(
    settings: Settings, example: Path, *, port: int, once: bool, console: Console
) -> int:
    flows_dir = example / "flows"
    if not flows_dir.is_dir():
        raise errors.ConfigurationError(
            f"{example} has no flows/ folder: name an example folder, e.g. examples/onboarding from the repository root"
        )
    settings = _with_demo_secrets(settings, example)
    _check_ports_free(
        {
            "LoB Flows": port,
            "ERPNext stand-in": ERPNEXT_PORT,
            "chat stand-in": CHAT_PORT,
            "SMTP stand-in": SMTP_PORT,
        }
    )
    os.environ.setdefault("ERPNEXT_URL", f"http://127.0.0.1:{ERPNEXT_PORT}")
    os.environ.setdefault("SMTP_PORT", str(SMTP_PORT))
    secrets = SecretStore.load(settings.secrets_file)
    standins = asyncio.create_task(_serve_standins(secrets))
    started, stop = asyncio.Event(), asyncio.Event()
    serving = asyncio.create_task(
        server.serve(
            settings, flows_dir, host="127.0.0.1", port=port, started=started, stop=stop
        )
    )
    try:
        await _first_of(started.wait(), serving, standins)
        console.print(
            f"[green]LoB Flows serves {flows_dir} on http://127.0.0.1:{port}[/] (run store {settings.database_url})",
            highlight=False,
        )
        code = await _post_samples(settings, example, flows_dir, port, secrets, console)
        if once:
            return code
        password = await _demo_user(settings)
        console.print(
            f"\n[bold]Dashboard:[/] http://127.0.0.1:{port}/ (sign in as "
            f"{DEMO_USER!r} with the password {password!r}, new at every demo start)",
            highlight=False,
            soft_wrap=True,
        )
        console.print("\n[bold]Serving on; press Ctrl-C to stop.[/]")
        await _first_of(serving, standins)
        return 0
    finally:
        stop.set()
        await asyncio.wait_for(
            asyncio.gather(serving, return_exceptions=True), timeout=15
        )
        standins.cancel()
        await asyncio.gather(standins, return_exceptions=True)


def _with_demo_secrets(settings: Settings, example: Path) -> Settings:
    demo_secrets = example / DEMO_SECRETS
    if settings.secrets_file is None and demo_secrets.exists():
        return settings.model_copy(update={"secrets_file": demo_secrets})
    return settings


def _check_ports_free(ports: dict[str, int]) -> None:
    for what, port in ports.items():
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                raise errors.ConfigurationError(
                    f"port {port} for the {what} is in use; stop the process that holds it and try again"
                ) from None


async def _serve_standins(secrets: SecretStore) -> None:
    from lobflows.testing.standins import serve_standins

    key, _, secret = secrets.get("erpnext-api").partition(":")
    chat_url = (
        secrets.get("facilities-chat-webhook")
        if "facilities-chat-webhook" in secrets.names()
        else f"http://127.0.0.1:{CHAT_PORT}/services/T0000/B0000/demo"
    )
    await serve_standins(
        erpnext_port=ERPNEXT_PORT,
        slack_port=CHAT_PORT,
        smtp_port=SMTP_PORT,
        api_key=key,
        api_secret=secret,
        slack_path=chat_url.split("/services/", 1)[1],
    )


async def _first_of(*awaitables: Any) -> None:
    tasks = [
        a if isinstance(a, asyncio.Future) else asyncio.ensure_future(a)
        for a in awaitables
    ]
    done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in done:
        if task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


async def _post_samples(
    settings: Settings,
    example: Path,
    flows_dir: Path,
    port: int,
    secrets: SecretStore,
    console: Console,
) -> int:
    project = loader.load_project(flows_dir)
    code = 0
    for flow in project.flows.values():
        hook = flow.spec.trigger.webhook
        sample = example / SAMPLES / f"{flow.name}.json"
        if hook is None or not sample.exists():
            continue
        raw = _fresh_delivery(sample)
        headers = {"Content-Type": "application/json"}
        key = secrets.get(hook.signature.secret) if hook.signature else ""
        if hook.signature is not None:
            headers[hook.signature.header] = sign(
                raw,
                key,
                prefix=hook.signature.prefix,
                encoding=hook.signature.encoding,
            )
        url = f"http://127.0.0.1:{port}{hook.path}"
        console.print(f"\nPOST {url} with {sample}", highlight=False, soft_wrap=True)
        async with httpx.AsyncClient() as client:
            reply = await client.post(url, content=raw, headers=headers)
        console.print(
            f"→ {reply.status_code} {reply.text}", highlight=False, soft_wrap=True
        )
        if reply.status_code >= 300:
            return 1
        run_id = reply.json()["run_id"]
        code |= await _show_outcome(settings, run_id, console)
        _print_try_it(console, sample, url, key, hook, run_id)
    return code


def _fresh_delivery(sample: Path) -> bytes:
    """The sample with new ids (an employee id, a request or ticket id), so
    every demo starts a run of its own instead of meeting the last one's."""
    body = json.loads(sample.read_text(encoding="utf-8"))
    stamp = str(int(time.time() * 1000) % 10**9)
    if isinstance(body, dict):
        employees = body.get("employees")
        if employees and isinstance(employees[0], dict):
            employees[0]["id"] = stamp
        for key, value in body.items():
            if key.endswith("_id") and isinstance(value, str):
                body[key] = f"{value}-{stamp}"
    return json.dumps(body).encode()


def _print_try_it(
    console: Console, sample: Path, url: str, key: str, hook: Any, run_id: str
) -> None:
    header = hook.signature.header if hook.signature else "X-Signature-256"
    prefix = hook.signature.prefix if hook.signature else "sha256="
    lines = [
        "",
        "[bold]Try it yourself[/] (change the sample's id to start a new run; the signature is an HMAC-SHA256 of the body):",
        f"  body=$(cat {sample})",
        f"  sig=$(printf %s \"$body\" | openssl dgst -sha256 -hmac '{key}' | sed 's/.* //')",
        f'  curl -s -X POST {url} -H \'Content-Type: application/json\' -H "{header}: {prefix}$sig" --data-binary "$body"',
        f"  lobflows runs list;  lobflows runs show {run_id[:8]} --data;  lobflows dlq list",
    ]
    for line in lines:
        console.print(line, highlight=False, soft_wrap=True)


async def _show_outcome(settings: Settings, run_id: str, console: Console) -> int:
    store = RunStore(settings.database_url)
    try:
        deadline = time.monotonic() + RUN_TIMEOUT_SECONDS
        run = await store.get_run(run_id)
        while (
            not run.is_terminal
            and run.status != "waiting"
            and time.monotonic() < deadline
        ):
            await asyncio.sleep(0.1)
            run = await store.get_run(run_id)
        views.print_run(console, run, await store.attempts(run_id), with_data=False)
        waiting_on_people = await _open_tasks(store)
    finally:
        await store.close()
    async with httpx.AsyncClient() as client:
        employees = (
            await client.get(
                f"http://127.0.0.1:{ERPNEXT_PORT}/__standin__/docs/Employee"
            )
        ).json()
        mails = (
            await client.get(f"http://127.0.0.1:{CHAT_PORT}/__standin__/mail/messages")
        ).json()
        chats = (
            await client.get(f"http://127.0.0.1:{CHAT_PORT}/__standin__/messages")
        ).json()
    if employees:
        e = employees[-1]
        console.print(
            f"ERPNext stand-in: Employee {e['name']} {e.get('employee_name')} joins {e.get('date_of_joining')}",
            highlight=False,
        )
    for mail in mails:
        console.print(
            f"Mailbox: {mail.get('subject')!r} to {mail.get('to')}", highlight=False
        )
    for chat in chats[-1:]:
        console.print(
            f"Chat: {json.dumps(chat.get('payload', chat).get('text'))}",
            highlight=False,
        )
    for task in waiting_on_people:
        console.print(
            f"Task waiting for {', '.join(task.assignees)}: {task.title!r}\n"
            f"  decide it: {_decide_hint(task)}",
            highlight=False,
            soft_wrap=True,
        )
    return 0 if run.status in ("succeeded", "waiting") else 1


async def _demo_user(settings: Settings) -> str:
    """An admin for the dashboard, with a fresh password each demo."""
    from lobflows.web import credentials

    password = random_tokens.token_urlsafe(12)
    store = RunStore(settings.database_url)
    try:
        hashed = credentials.hash_password(password)
        try:
            await store.find_user(DEMO_USER)
        except errors.UserNotFoundError:
            await store.add_user(DEMO_USER, roles=["admin"], password_hash=hashed)
        else:
            await store.set_password_hash(DEMO_USER, hashed)
            await store.set_roles(DEMO_USER, ["admin"])
    finally:
        await store.close()
    return password


def _decide_hint(task: Any) -> str:
    decision = "complete" if task.kind == "review" else "approve"
    fields = "".join(f" -f {f['name']}=…" for f in task.form if f.get("required"))
    return f"lobflows tasks decide {task.id[:8]} {decision} --as {task.assignees[0]}{fields}"


async def _open_tasks(store: RunStore) -> list[Any]:
    """Tasks the example opened for people, once its follow-up runs got there."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        found = await store.list_tasks()
        if found:
            return found
        await asyncio.sleep(0.1)
    return []
