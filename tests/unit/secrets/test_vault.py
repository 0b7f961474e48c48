from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from lobflows import errors
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
