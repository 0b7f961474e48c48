"""The onboarding example end to end: a real server process, real SMTP, the
ERPNext and chat stand-ins, on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from lobflows.store import RunStore
from tests import support
from tests.conftest import Standins

pytestmark = pytest.mark.acceptance


def employees(standins: Standins) -> list[dict]:
    return list(standins.erpnext.docs["Employee"].values())


def attempts_of(attempts: list, step: str) -> list:
    return [a for a in attempts if a.step == step]


async def test_onboarding_sample_hire_reaches_erp_mail_and_chat(
    onboarding_server, onboarding_env, store: RunStore, standins: Standins
):
    reply = onboarding_server.post_hire(support.sample_hire())

    assert reply.status_code == 202, reply.text
    run = await support.wait_for_run(store, reply.json()["run_id"])
    assert run.status == "succeeded", run.error

    [employee] = employees(standins)
    assert employee["first_name"] == "Ada"
    assert employee["last_name"] == "Quinterro"
    assert employee["employee_name"] == "Ada Quinterro"
    assert (
        employee["company_email"] == "ada.quinterro@example.com"
    )  # trimmed, lower-cased
    assert employee["date_of_joining"] == "2027-01-04"
    assert employee["gender"] == "Female"
    assert employee["custom_bamboohr_id"] == "4127"
    [mail] = support.welcomes(standins)
    assert mail.subject == "Welcome to Example Corp, Ada!"
    assert mail.rcpt_tos == ("ada.quinterro@example.com",)
    assert employee["name"] in mail.text
    # the checklist: one ToDo per branch, each closed when its branch finished
    todos = standins.erpnext.query("ToDo")
    checklist = [t for t in todos if t["description"].startswith("Onboarding ")]
    assert sorted(t["description"].rsplit(": ", 1)[1] for t in checklist) == [
        "badge ordered",
        "equipment ordered",
        "mailbox and welcome email",
    ]
    assert {t["status"] for t in checklist} == {"Closed"}
    assert all(t["reference_name"] == employee["name"] for t in checklist)
    [badge] = [t for t in todos if t["description"].startswith("Facilities: badge")]
    assert badge["status"] == "Open"
    [equipment] = standins.erpnext.query("Material Request")
    assert equipment["title"] == "Equipment for Ada Quinterro"
    # the directory account, in the real slapd
    [account_run] = await store.list_runs(flow="directory-account")
    account_run = await support.wait_for_run(store, account_run.id)
    assert account_run.status == "succeeded", account_run.error
    entry = support.directory_entry("ada.quinterro")
    assert entry["mail"] == ["ada.quinterro@example.com"]
    assert entry["cn"] == ["Ada Quinterro"]
    [chat] = standins.chat.messages
    assert (
        "Ada Quinterro" in chat.payload["text"]
        and "m.okafor@example.com" in chat.payload["text"]
    )

    shown = support.cli(onboarding_env, "runs", "show", run.id)
    assert shown.returncode == 0, shown.stderr
    for step in (
        "hire",
        "create_employee",
        "welcome_email",
        "has_manager",
        "announce_with_manager",
    ):
        assert any(
            step in line and "succeeded" in line for line in shown.stdout.splitlines()
        ), shown.stdout


async def test_onboarding_without_manager_takes_the_else_branch(
    onboarding_server, store: RunStore, standins: Standins
):
    reply = onboarding_server.post_hire(support.sample_hire(supervisorEmail=None))

    run = await support.wait_for_run(store, reply.json()["run_id"])

    assert run.status == "succeeded", run.error
    steps = {a.step for a in await store.attempts(run.id)}
    assert "announce_without_manager" in steps and "announce_with_manager" not in steps
    [chat] = standins.chat.messages
    assert "no manager assigned yet" in chat.payload["text"]


async def test_onboarding_retries_503_with_growing_delays(
    onboarding_server, store: RunStore, standins: Standins
):
    standins.erpnext.add_fault(503, count=2, match="POST /api/resource/Employee")

    reply = onboarding_server.post_hire(support.sample_hire())
    run = await support.wait_for_run(store, reply.json()["run_id"])

    assert run.status == "succeeded", run.error
    tries = attempts_of(await store.attempts(run.id), "create_employee")
    assert [a.status for a in tries] == ["failed", "failed", "succeeded"]
    assert [a.attempt for a in tries] == [1, 2, 3]
    first_wait = tries[0].next_attempt_at - tries[0].finished_at
    second_wait = tries[1].next_attempt_at - tries[1].finished_at
    assert 0 <= first_wait < second_wait
    assert tries[1].started_at >= tries[0].next_attempt_at
    assert tries[2].started_at >= tries[1].next_attempt_at
    assert "503" in tries[0].error
    assert standins.erpnext.request_counts["POST /api/resource/Employee"] == 3
    assert len(employees(standins)) == 1


async def test_onboarding_honours_retry_after(
    onboarding_server, store: RunStore, standins: Standins
):
    standins.erpnext.add_fault(
        429, count=1, headers={"Retry-After": "2"}, match="POST /api/resource/Employee"
    )

    reply = onboarding_server.post_hire(support.sample_hire())
    run = await support.wait_for_run(store, reply.json()["run_id"])

    assert run.status == "succeeded", run.error
    first, second = attempts_of(await store.attempts(run.id), "create_employee")
    assert first.status == "failed" and "429" in first.error
    assert second.started_at >= first.finished_at + 2.0


async def test_onboarding_validation_error_dead_letters_then_replays_with_corrected_input(
    onboarding_server,
    onboarding_env,
    store: RunStore,
    standins: Standins,
    tmp_path: Path,
):
    reply = onboarding_server.post_hire(support.sample_hire(dateOfBirth=None))
    run = await support.wait_for_run(store, reply.json()["run_id"])

    assert run.status == "failed"
    [attempt] = attempts_of(
        await store.attempts(run.id), "create_employee"
    )  # permanent: no retry
    assert attempt.status == "dead"
    assert "417" in run.error and "Date of Birth" in run.error
    assert employees(standins) == []
    [letter] = await store.dead_letters()
    assert letter.step == "create_employee" and letter.run_id == run.id

    listed = support.cli(onboarding_env, "dlq", "list")
    assert str(letter.id) in listed.stdout and "create_employee" in listed.stdout
    shown = support.cli(onboarding_env, "dlq", "show", str(letter.id), "--input-only")
    corrected = json.loads(shown.stdout)
    corrected["doc"]["date_of_birth"] = "1991-07-23"
    fixed = tmp_path / "fixed.json"
    fixed.write_text(json.dumps(corrected))
    replayed = support.cli(
        onboarding_env, "dlq", "replay", str(letter.id), "--input", str(fixed)
    )
    assert replayed.returncode == 0, replayed.stderr

    run = await support.wait_for_run(store, run.id, statuses=("succeeded",))
    [employee] = employees(standins)
    assert employee["date_of_birth"] == "1991-07-23"
    assert len(support.welcomes(standins)) == 1
    assert (await store.dead_letter(letter.id)).status == "replayed"


async def test_onboarding_chat_failure_replays_from_the_chat_step(
    onboarding_server, onboarding_env, store: RunStore, standins: Standins
):
    standins.chat.add_fault(404, body="channel_not_found")

    reply = onboarding_server.post_hire(support.sample_hire())
    run = await support.wait_for_run(store, reply.json()["run_id"])

    assert run.status == "failed"
    assert "404" in run.error and "channel_not_found" in run.error
    assert len(support.welcomes(standins)) == 1
    [letter] = await store.dead_letters()
    assert letter.step == "announce_with_manager"

    replayed = support.cli(onboarding_env, "dlq", "replay", str(letter.id))
    assert replayed.returncode == 0, replayed.stderr
    await support.wait_for_run(store, run.id, statuses=("succeeded",))

    assert len(standins.chat.messages) == 1
    assert len(support.welcomes(standins)) == 1  # the email step was not run again
    assert len(employees(standins)) == 1


async def test_onboarding_duplicate_delivery_yields_one_run(
    onboarding_server, store: RunStore, standins: Standins
):
    first = onboarding_server.post_hire(support.sample_hire())
    second = onboarding_server.post_hire(support.sample_hire())

    assert first.status_code == 202 and second.status_code == 200
    assert second.json() == {
        "run_id": first.json()["run_id"],
        "flow": "employee-onboarding",
        "duplicate": True,
    }
    await support.wait_for_run(store, first.json()["run_id"])
    assert len(await store.list_runs(flow="employee-onboarding")) == 1
    assert len(employees(standins)) == 1
    assert len(support.welcomes(standins)) == 1
    # one hire, one buddy task for the manager
    [buddy] = await store.list_runs(flow="onboarding-buddy")
    await support.wait_for_run(store, buddy.id, statuses=("waiting",))
    assert (await store.task_of_step(buddy.id, "choose_buddy")) is not None


async def test_onboarding_resumes_after_sigkill_without_repeating_steps(
    onboarding_env, store: RunStore, standins: Standins, tmp_path: Path
):
    # The chat stand-in holds the request long enough to kill the server mid-step.
    standins.chat.add_fault(count=1, delay=3.0, status=503, body="rollup_error")
    server = support.ServerProcess(
        onboarding_env, support.ONBOARDING / "flows", tmp_path / "first.log"
    ).start()
    reply = server.post_hire(support.sample_hire())
    run_id = reply.json()["run_id"]
    await _wait_for_step(store, run_id, "welcome_email")
    server.kill()
    assert (await store.get_run(run_id)).status == "running"

    restarted = support.ServerProcess(
        onboarding_env, support.ONBOARDING / "flows", tmp_path / "second.log"
    ).start()
    try:
        run = await support.wait_for_run(store, run_id, timeout=30)
    finally:
        restarted.stop()

    assert run.status == "succeeded", run.error
    assert standins.erpnext.request_counts["POST /api/resource/Employee"] == 1
    assert len(support.welcomes(standins)) == 1
    assert len(standins.chat.messages) == 1
    succeeded = [
        a.step for a in await store.attempts(run_id) if a.status == "succeeded"
    ]
    assert (
        succeeded.count("create_employee") == 1
        and succeeded.count("welcome_email") == 1
    )


async def _wait_for_step(store: RunStore, run_id: str, step: str) -> None:
    for _ in range(300):
        if step in await store.completed_steps(run_id):
            return
        import asyncio

        await asyncio.sleep(0.02)
    raise TimeoutError(f"step {step} did not complete")


async def test_onboarding_hire_without_email_is_dead_lettered_then_replayed_with_a_corrected_run_input(
    onboarding_server,
    onboarding_env,
    store: RunStore,
    standins: Standins,
    tmp_path: Path,
):
    reply = onboarding_server.post_hire(support.sample_hire(workEmail=None))
    run = await support.wait_for_run(store, reply.json()["run_id"])

    assert run.status == "failed"
    assert "'email'" in run.error and "missing" in run.error
    assert employees(standins) == [] and standins.mailbox.messages == []
    [letter] = await store.dead_letters()
    assert letter.step == "hire"

    refused = support.cli(
        onboarding_env,
        "dlq",
        "replay",
        str(letter.id),
        "--input",
        str(support.ONBOARDING / "samples" / "employee-onboarding.json"),
    )
    assert refused.returncode == 2 and "--run-input" in refused.stderr
    hire = json.loads(
        support.cli(
            onboarding_env, "dlq", "show", str(letter.id), "--run-input-only"
        ).stdout
    )
    hire["employees"][0]["fields"]["workEmail"] = "ada.q@example.com"
    fixed = tmp_path / "hire.json"
    fixed.write_text(json.dumps(hire))
    replayed = support.cli(
        onboarding_env, "dlq", "replay", str(letter.id), "--run-input", str(fixed)
    )
    assert replayed.returncode == 0, replayed.stderr

    await support.wait_for_run(store, run.id, statuses=("succeeded",))
    [mail] = support.welcomes(standins)
    assert mail.rcpt_tos == ("ada.q@example.com",)


@pytest.mark.parametrize(
    ("raw", "headers", "path", "status", "phrase"),
    [
        # malformed JSON, correctly signed
        (b'{"employees": [', None, support.HOOK_PATH, 400, "not valid JSON"),
        # a signature made with another key
        (
            b"{}",
            {"X-Signature-256": "sha256=" + "0" * 64},
            support.HOOK_PATH,
            401,
            "does not match",
        ),
        # no signature at all
        (b"{}", {"X-Signature-256": ""}, support.HOOK_PATH, 401, "missing"),
        # a path no flow listens on
        (
            b"{}",
            None,
            "/hooks/nobody-here",
            404,
            "no flow listens on /hooks/nobody-here",
        ),
        # larger than the flow's 64 KiB limit
        (
            b'{"pad": "' + b"x" * 70_000 + b'"}',
            None,
            support.HOOK_PATH,
            413,
            "larger than the limit",
        ),
        # the dedupe key cannot be computed
        (b'{"employees": []}', None, support.HOOK_PATH, 400, "dedupe key"),
        # an employee id of null must not make every such hire a duplicate
        (
            b'{"employees": [{"id": null, "fields": {}}]}',
            None,
            support.HOOK_PATH,
            400,
            "null or empty",
        ),
        # an empty list or blank text as the id is no id either
        (
            b'{"employees": [{"id": [], "fields": {}}]}',
            None,
            support.HOOK_PATH,
            400,
            "null or empty",
        ),
        (
            b'{"employees": [{"id": "  ", "fields": {}}]}',
            None,
            support.HOOK_PATH,
            400,
            "null or empty",
        ),
        # nesting deep enough to exhaust a recursive parser
        (b"[" * 30_000, None, support.HOOK_PATH, 400, "not valid JSON"),
        # a lone surrogate cannot be stored or printed as text
        (b'{"id": "\\udfff"}', None, support.HOOK_PATH, 400, "not valid JSON"),
        # NaN is not JSON
        (b'{"n": NaN}', None, support.HOOK_PATH, 400, "not valid JSON"),
    ],
)
async def test_webhook_rejects_bad_deliveries_and_stores_nothing(
    onboarding_server, store: RunStore, raw, headers, path, status, phrase
):
    signed = {
        "Content-Type": "application/json",
        "X-Signature-256": support.sign(raw, support.WEBHOOK_KEY),
    }
    signed.update(headers or {})
    if signed["X-Signature-256"] == "":
        del signed["X-Signature-256"]

    reply = httpx.post(onboarding_server.url + path, content=raw, headers=signed)

    assert reply.status_code == status
    assert phrase in reply.json()["error"]
    assert await store.count_runs() == 0


async def test_secret_values_never_reach_logs_rows_or_output(
    onboarding_server,
    onboarding_env,
    store: RunStore,
    standins: Standins,
    tmp_path: Path,
):
    # given runs through success, retry, dead letter and replay
    standins.erpnext.add_fault(503, count=1, match="POST /api/resource/Employee")
    ok = onboarding_server.post_hire(support.sample_hire())
    await support.wait_for_run(store, ok.json()["run_id"])
    bad = onboarding_server.post_hire(support.sample_hire(id="5000", dateOfBirth=None))
    failed = await support.wait_for_run(store, bad.json()["run_id"])
    [letter] = await store.dead_letters()
    support.cli(onboarding_env, "dlq", "replay", str(letter.id))
    await support.wait_for_run(
        store, failed.id, statuses=("failed", "succeeded"), timeout=10
    )

    # when everything a person or a log shipper could see is collected
    seen = [onboarding_server.log()]
    for run_id in (ok.json()["run_id"], failed.id):
        seen.append(
            support.cli(onboarding_env, "runs", "show", run_id, "--data").stdout
        )
    seen.append(support.cli(onboarding_env, "dlq", "show", str(letter.id)).stdout)
    seen.append(support.cli(onboarding_env, "dlq", "list", "--status", "all").stdout)
    async with store.engine.connect() as conn:
        for table in ("runs", "step_attempts", "dead_letters", "flow_versions"):
            rows = (await conn.exec_driver_sql(f"SELECT * FROM {table}")).all()
            seen.append(json.dumps([list(map(str, row)) for row in rows]))

    # then no secret value appears anywhere
    everything = "\n".join(seen)
    assert "create_employee" in everything and "announce_with_manager" in everything
    for secret in (
        onboarding_env["LOBFLOWS_SECRET_ERPNEXT_API"],
        "test-api-secret-value",
        support.WEBHOOK_KEY,
        "test-chat-token",
    ):
        assert secret not in everything
