from __future__ import annotations

import pytest

from lobflows import errors
from lobflows.spec import models
from lobflows.transform import mapping

CONTEXT = {
    "input": {"first": " Ada ", "email": "", "manager": None, "items": [{"sku": "X1"}]}
}


def rule(**fields) -> models.FieldRule:
    return models.FieldRule.model_validate(fields)


def test_apply_mapping_renders_templates_and_paths():
    record = mapping.apply_mapping(
        {
            "name": "{{ input.first | trim }}",
            "sku": rule(**{"from": "input.items.0.sku"}),
        },
        CONTEXT,
    )

    assert record == {"name": "Ada", "sku": "X1"}


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("skip", {}),  # the field is left out
        ("null", {"age": None}),
        ("default", {"age": 18}),
    ],
)
def test_apply_mapping_applies_the_missing_policy(policy: str, expected: dict):
    rules = {"age": rule(**{"from": "input.age", "on_missing": policy, "default": 18})}

    assert mapping.apply_mapping(rules, CONTEXT) == expected


def test_apply_mapping_missing_value_is_an_error_by_default_naming_the_field():
    with pytest.raises(
        errors.StepInputError, match="field 'age': source 'input.age' is missing"
    ):
        mapping.apply_mapping({"age": rule(**{"from": "input.age"})}, CONTEXT)


def test_apply_mapping_missing_template_variable_follows_the_policy():
    rules = {"age": rule(value="{{ input.age }}", on_missing="null")}

    assert mapping.apply_mapping(rules, CONTEXT) == {"age": None}


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("keep", {"email": ""}),
        ("null", {"email": None}),
        ("skip", {}),
        ("default", {"email": "nobody@example.com"}),
    ],
)
def test_apply_mapping_applies_the_null_policy_to_empty_strings(
    policy: str, expected: dict
):
    rules = {
        "email": rule(
            **{
                "from": "input.email",
                "on_null": policy,
                "default": "nobody@example.com",
            }
        )
    }

    assert mapping.apply_mapping(rules, CONTEXT) == expected


def test_apply_mapping_null_error_names_the_field():
    with pytest.raises(errors.StepInputError, match="field 'manager'.*is empty"):
        mapping.apply_mapping(
            {"manager": rule(**{"from": "input.manager", "on_null": "error"})}, CONTEXT
        )


def test_field_rule_needs_exactly_one_source():
    with pytest.raises(ValueError, match="exactly one of: value, from"):
        rule(value="x", **{"from": "input.x"})
