from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import typer

from lobflows.cli import secrets as secrets_cli
from lobflows.secrets import inventory, usage
from lobflows.spec import loader

QUOTE = Path(__file__).resolve().parents[2] / "flows" / "quote"
DAY = inventory.SECONDS_PER_DAY


def test_declared_users_finds_connection_settings_and_webhook_signatures(
    tmp_path: Path,
):
    project = loader.load_project(QUOTE)
    connections = {
        "erp": {"type": "erpnext", "auth_secret": "erp-api"},
        "api": {"type": "http", "auth": {"kind": "bearer", "secret": "api-token"}},
        "sftp": {"type": "files", "sftp": {"password_secret": "erp-api"}},
    }
    project = SimpleNamespace(connections=connections, flows=project.flows)

    users = usage.declared_users(project)  # type: ignore[arg-type]

    assert users["erp-api"] == ["connection erp", "connection sftp"]
    assert users["api-token"] == ["connection api"]
    assert users["quote-signing-key"] == ["flow quote (webhook signature)"]


@pytest.mark.parametrize(
    ("rotated_days_ago", "overdue"),
    [
        (89, False),  # inside the policy
        (91, True),  # past it
    ],
)
def test_is_overdue_counts_from_the_last_rotation(rotated_days_ago: int, overdue: bool):
    now = 1_000 * DAY
    record = SimpleNamespace(
        rotate_every_days=90,
        created_at=now - 400 * DAY,
        rotated_at=now - rotated_days_ago * DAY,
    )

    assert inventory.is_overdue(record, now) is overdue


def test_is_overdue_is_false_without_a_policy():
    record = SimpleNamespace(rotate_every_days=None, created_at=0.0, rotated_at=None)

    assert inventory.is_overdue(record, 10_000 * DAY) is False


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1h", 3600.0),
        ("30m", 1800.0),
        ("90d", 90 * DAY),
        ("2w", 14 * DAY),
        ("0", 0.0),  # no grace at all
    ],
)
def test_parse_duration_reads_units(text: str, seconds: float):
    assert secrets_cli.parse_duration(text, option="--grace") == seconds


@pytest.mark.parametrize("text", ["5", "1y", "soon", "-1h"])
def test_parse_duration_refuses_what_is_not_a_duration(text: str):
    with pytest.raises(typer.Exit):
        secrets_cli.parse_duration(text, option="--grace")
