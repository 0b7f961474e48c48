"""The README's first command: the onboarding demo, end to end, as a new user runs it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import support

pytestmark = pytest.mark.acceptance


def test_demo_runs_the_sample_hire_through_erp_mail_and_chat(tmp_path: Path):
    env = support.base_env(
        f"sqlite:///{tmp_path / 'demo.db'}", LOBFLOWS_LOG_LEVEL="WARNING"
    )

    result = support.cli(
        env, "demo", str(support.ONBOARDING), "--once", cwd=tmp_path, timeout=120
    )

    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "succeeded" in out
    assert (
        "ERPNext stand-in: Employee HR-EMP-00001 Ada Quinterro joins 2027-01-04" in out
    )
    assert (
        "Mailbox: 'Welcome to Example Corp, Ada!' to ada.quinterro@example.com" in out
    )
    assert 'Chat: "New hire Ada Quinterro (HR-EMP-00001)' in out
    assert (
        "Task waiting for m.okafor@example.com: 'Choose an onboarding buddy for Ada Quinterro'"
        in out
    )
    assert "lobflows tasks decide" in out
    assert (
        "demo-api-secret" not in out + result.stderr
    )  # the ERPNext secret stays hidden
