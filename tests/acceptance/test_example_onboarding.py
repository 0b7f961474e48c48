"""The onboarding example's people part, end to end: the manager chooses a
buddy, or the three-day deadline escalates to HR by email and HR chooses.
Real SMTP, the ERPNext and chat stand-ins, a clock moved by the test; on
SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from tests import support
from tests.examples import Example, mails_to

pytestmark = pytest.mark.acceptance

MANAGER, HIRE = "m.okafor@example.com", "ada.quinterro@example.com"
DAY = 86400


@pytest.fixture
async def onboarding(store_url, standins, monkeypatch):
    example = await Example.open("onboarding", store_url, standins, monkeypatch)
    yield example
    await example.close()


async def hire(onboarding: Example) -> str:
    """Post the sample hire; the id of the buddy run it leads to."""
    await onboarding.post(
        "/hooks/bamboohr/new-hire",
        support.sample_hire(),
        secret="hris-webhook-secret",
    )
    await onboarding.settle()
    [buddy] = await onboarding.store.list_runs(flow="onboarding-buddy")
    return buddy.id


async def test_the_manager_chooses_a_buddy_and_both_are_introduced(
    onboarding, standins
):
    run_id = await hire(onboarding)
    task = await onboarding.task(run_id, "choose_buddy")
    [ask] = mails_to(standins, MANAGER)
    assert ask.subject == "Choose an onboarding buddy for Ada Quinterro"
    assert f"https://flows.example.com/tasks/{task.id}?token=" in ask.text

    await onboarding.advance(DAY)
    await onboarding.decide(
        task, MANAGER, "complete", buddy_email=" Sam.Lee@example.com ", note="Say hi!"
    )

    assert await onboarding.status(run_id) == "succeeded"
    [intro] = mails_to(standins, "sam.lee@example.com")
    assert intro.rcpt_tos == (HIRE, "sam.lee@example.com")
    assert "sam.lee@example.com is your buddy" in intro.text and "Say hi!" in intro.text
    assert mails_to(standins, "people-team@example.com") == []


async def test_no_choice_in_three_days_reminds_then_hr_is_told_and_chooses(
    onboarding, standins
):
    run_id = await hire(onboarding)
    task = await onboarding.task(run_id, "choose_buddy")

    await onboarding.advance(2 * DAY + 60)
    assert mails_to(standins, MANAGER)[-1].subject.startswith("Reminder: ")
    await onboarding.advance(DAY)

    assert (await onboarding.store.get_task(task.id)).status == "timed_out"
    told = [
        m
        for m in mails_to(standins, "people-team@example.com")
        if m.subject.startswith("No buddy")
    ]
    assert len(told) == 1
    hr_task = await onboarding.task(run_id, "hr_chooses_buddy")
    assert hr_task.assignees == ["people-team@example.com", "hana.schulz@example.com"]

    await onboarding.decide(
        hr_task, "hana.schulz@example.com", "complete", buddy_email="kim@example.com"
    )

    assert await onboarding.status(run_id) == "succeeded"
    assert mails_to(standins, "kim@example.com")
