from __future__ import annotations

from pathlib import Path

import pytest

from lobflows import errors
from lobflows.secrets import SecretStore, backends, env_name


def test_secret_store_reads_a_folder_of_files_without_the_trailing_newline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    (tmp_path / "db-password").write_text("folder-value-1\n")
    monkeypatch.setenv(backends.SECRETS_DIR_ENV, str(tmp_path))

    secrets = SecretStore.load()

    assert secrets.get("db-password") == "folder-value-1"
    assert secrets.backend_of("db-password") == "folder"
    assert "db-password" in secrets.names()


def test_secret_store_folder_ignores_names_that_leave_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    (tmp_path / "inner").mkdir()
    (tmp_path / "outside").write_text("outside-value")
    monkeypatch.setenv(backends.SECRETS_DIR_ENV, str(tmp_path / "inner"))

    assert SecretStore.load().find("../outside") is None


def test_secret_store_refuses_a_secrets_folder_that_is_not_a_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv(backends.SECRETS_DIR_ENV, str(tmp_path / "nope"))

    with pytest.raises(errors.ConfigurationError, match="is not a folder"):
        SecretStore.load()


def test_secret_store_precedence_is_env_then_file_then_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    folder = tmp_path / "folder"
    folder.mkdir()
    for name in ("a-key", "b-key", "c-key"):
        (folder / name).write_text(f"folder-{name}")
    path = tmp_path / "secrets.yaml"
    path.write_text("a-key: file-a-key\nb-key: file-b-key\n")
    monkeypatch.setenv(backends.SECRETS_DIR_ENV, str(folder))
    monkeypatch.setenv(env_name("a-key"), "env-a-key")

    secrets = SecretStore.load(path)

    assert [secrets.get(n) for n in ("a-key", "b-key", "c-key")] == [
        "env-a-key",
        "file-b-key",
        "folder-c-key",
    ]
    assert [secrets.backend_of(n) for n in ("a-key", "b-key", "c-key")] == [
        "env",
        "file",
        "folder",
    ]


def test_secret_store_notes_reads_until_taken():
    secrets = SecretStore({"api-token": "value-of-token"})

    secrets.get("api-token")
    first = secrets.take_reads()

    assert set(first) == {"api-token"}
    assert secrets.take_reads() == {}
    secrets.put_back_reads(first)
    assert secrets.recent_reads() == first


def test_secret_store_find_is_not_counted_as_a_use():
    secrets = SecretStore({"api-token": "value-of-token"})

    assert secrets.find("api-token") == "value-of-token"
    assert secrets.take_reads() == {}


def test_hashicorp_backend_needs_its_token_secret(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(backends.HASHICORP_URL_ENV, "http://127.0.0.1:1")
    monkeypatch.delenv(env_name(backends.DEFAULT_HASHICORP_TOKEN_SECRET), raising=False)

    with pytest.raises(errors.ConfigurationError, match="hashicorp-vault-token"):
        backends.HashicorpBackend.from_environment(lambda name: None)


def test_hashicorp_backend_refuses_a_url_that_is_not_http(
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setenv(backends.HASHICORP_URL_ENV, "file:///etc/passwd")

    with pytest.raises(errors.ConfigurationError, match="must be an http"):
        backends.HashicorpBackend.from_environment(lambda name: "token-value")
