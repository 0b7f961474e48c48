from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from lobflows import errors, secrets
from lobflows.secrets import vault


@pytest.fixture(autouse=True)
def no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(vault.MASTER_KEY_ENV, raising=False)
    monkeypatch.delenv(vault.MASTER_KEY_FILE_ENV, raising=False)


def test_master_key_is_none_when_no_key_is_set():
    assert vault.master_key("sqlite:///runs.db") is None


def test_master_key_reads_the_variable_and_round_trips_a_value(
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setenv(vault.MASTER_KEY_ENV, vault.new_key())

    cipher = vault.master_key("sqlite:///runs.db")

    assert cipher is not None
    assert cipher.decrypt(cipher.encrypt(b"value")) == b"value"


def test_master_key_refuses_a_malformed_key_without_echoing_it(
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setenv(vault.MASTER_KEY_ENV, "not-a-key-at-all")

    with pytest.raises(errors.ConfigurationError) as raised:
        vault.master_key("sqlite:///runs.db")

    assert "LOBFLOWS_MASTER_KEY is malformed" in str(raised.value)
    assert "44 characters" in str(raised.value)
    assert "not-a-key-at-all" not in str(raised.value)


def test_master_key_refuses_a_key_file_beside_the_sqlite_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    key_file = tmp_path / "master.key"
    key_file.write_text(vault.new_key() + "\n")
    monkeypatch.setenv(vault.MASTER_KEY_FILE_ENV, str(key_file))

    with pytest.raises(errors.ConfigurationError, match="same folder as the run store"):
        vault.master_key(f"sqlite:///{tmp_path / 'runs.db'}")


def test_master_key_reads_a_key_file_kept_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    (tmp_path / "keys").mkdir()
    (tmp_path / "data").mkdir()
    key = vault.new_key()
    key_file = tmp_path / "keys" / "master.key"
    key_file.write_text(key + "\n")
    monkeypatch.setenv(vault.MASTER_KEY_FILE_ENV, str(key_file))

    cipher = vault.master_key(f"sqlite:///{tmp_path / 'data' / 'runs.db'}")

    assert cipher is not None
    assert Fernet(key.encode()).decrypt(cipher.encrypt(b"x")) == b"x"


def test_master_key_names_a_key_file_that_cannot_be_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv(vault.MASTER_KEY_FILE_ENV, str(tmp_path / "missing.key"))

    with pytest.raises(errors.ConfigurationError, match="cannot read the master key"):
        vault.master_key("postgresql://u@127.0.0.1/db")


def test_master_key_refuses_both_a_variable_and_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv(vault.MASTER_KEY_ENV, vault.new_key())
    monkeypatch.setenv(vault.MASTER_KEY_FILE_ENV, str(tmp_path / "k"))

    with pytest.raises(errors.ConfigurationError, match="set one"):
        vault.master_key("sqlite:///runs.db")


def test_vault_encrypt_without_a_key_says_how_to_make_one():
    with pytest.raises(errors.ConfigurationError, match="secrets new-key"):
        vault.Vault(None, None).encrypt("value")


def test_master_key_refuses_a_key_file_in_a_folder_below_the_sqlite_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    key_file = tmp_path / "keys" / "deeper" / "master.key"
    key_file.parent.mkdir(parents=True)
    key_file.write_text(vault.new_key() + "\n")
    monkeypatch.setenv(vault.MASTER_KEY_FILE_ENV, str(key_file))

    with pytest.raises(errors.ConfigurationError, match="or in a folder below it"):
        vault.master_key(f"sqlite:///{tmp_path / 'runs.db'}")


def test_master_key_warns_once_about_a_key_file_others_can_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    (tmp_path / "keys").mkdir()
    key = vault.new_key()
    key_file = tmp_path / "keys" / "open.key"
    key_file.write_text(key + "\n")
    key_file.chmod(0o644)
    monkeypatch.setenv(vault.MASTER_KEY_FILE_ENV, str(key_file))
    url = f"sqlite:///{tmp_path / 'data' / 'runs.db'}"

    with caplog.at_level("WARNING", logger=vault.__name__):
        first = vault.master_key(url)
        again = vault.master_key(url)

    assert first is not None and again is not None  # used, not refused
    [record] = caplog.records
    assert record.event == "master_key_file_readable"  # type: ignore[attr-defined]
    assert f"chmod 600 {key_file}" in record.getMessage()
    assert "mode 644" in record.getMessage()
    assert key not in record.getMessage()


def test_master_key_does_not_warn_about_a_key_file_only_its_owner_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    (tmp_path / "keys").mkdir()
    key_file = tmp_path / "keys" / "private.key"
    key_file.write_text(vault.new_key() + "\n")
    key_file.chmod(0o600)
    monkeypatch.setenv(vault.MASTER_KEY_FILE_ENV, str(key_file))

    with caplog.at_level("WARNING", logger=vault.__name__):
        cipher = vault.master_key(f"sqlite:///{tmp_path / 'data' / 'runs.db'}")

    assert cipher is not None
    assert caplog.records == []


@pytest.mark.parametrize(
    ("value", "phrase"),
    [
        ("abc", "too short: expected at least 4 characters"),  # below the minimum
        ("", "empty or only whitespace"),  # nothing
        ("   \t  ", "empty or only whitespace"),  # long enough, but blank
    ],
)
def test_check_value_refuses_what_the_redactor_cannot_mask(value: str, phrase: str):
    with pytest.raises(errors.ConfigurationError, match=phrase) as raised:
        vault.check_value("crm-token", value)

    assert "'crm-token'" in str(raised.value)


def test_check_value_accepts_a_value_of_the_minimum_length():
    vault.check_value("crm-token", "a" * secrets.MIN_REDACTED_LENGTH)
