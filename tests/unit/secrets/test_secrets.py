from __future__ import annotations

from pathlib import Path

import pytest

from lobflows import errors
from lobflows.secrets import Redactor, SecretStore, env_name


def test_redactor_masks_values_in_text_and_nested_data():
    redactor = Redactor()
    redactor.register("s3cr3t-value")
    redactor.register("s3cr3t-value-longer")

    assert redactor.redact("a s3cr3t-value-longer b") == "a *** b"
    assert redactor.redact_data({"k": ["x s3cr3t-value", {"s3cr3t-value": 1}]}) == {
        "k": ["x ***", {"***": 1}]
    }


def test_redactor_ignores_values_too_short_to_mask_safely():
    redactor = Redactor()
    redactor.register("on")

    assert redactor.redact("long ago") == "long ago"


def test_secret_store_reads_the_environment_before_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    path = tmp_path / "secrets.yaml"
    path.write_text("crm-token: from-file-value\nmail-password: file-only-value\n")
    monkeypatch.setenv(env_name("crm-token"), "from-env-value")

    store = SecretStore.load(path)

    assert store.get("crm-token") == "from-env-value"
    assert store.get("mail-password") == "file-only-value"
    assert env_name("crm.token-x") == "LOBFLOWS_SECRET_CRM_TOKEN_X"


def test_secret_store_names_the_variable_to_set_for_a_missing_secret():
    with pytest.raises(errors.SecretNotFoundError, match="LOBFLOWS_SECRET_NOT_THERE"):
        SecretStore().get("not-there")


def test_secret_store_refuses_a_file_that_is_not_a_mapping(tmp_path: Path):
    path = tmp_path / "secrets.yaml"
    path.write_text("- a\n- b\n")

    with pytest.raises(errors.ConfigurationError, match="must be a mapping"):
        SecretStore.load(path)
