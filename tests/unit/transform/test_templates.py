from __future__ import annotations

import pytest

from lobflows import errors
from lobflows.transform import templates

CONTEXT = {"input": {"n": 3, "name": " Ada ", "tags": ["a", "b"], "none": None}}


def test_render_value_keeps_the_type_of_a_single_expression():
    rendered = templates.render_value(
        {"n": "{{ input.n }}", "tags": "{{ input.tags }}", "none": "{{ input.none }}"},
        CONTEXT,
    )

    assert rendered == {"n": 3, "tags": ["a", "b"], "none": None}


def test_render_value_renders_mixed_text_to_a_string():
    assert templates.render_value("n={{ input.n }}", CONTEXT) == "n=3"
    assert templates.render_value("plain text", CONTEXT) == "plain text"


def test_render_value_never_evaluates_data_as_a_template():
    context = {"input": {"name": "{{ 7*7 }}"}}

    assert templates.render_value("{{ input.name }}", context) == "{{ 7*7 }}"
    assert templates.render_value("Hi {{ input.name }}", context) == "Hi {{ 7*7 }}"


def test_missing_values_raise_a_missing_value_error_naming_the_template():
    with pytest.raises(
        templates.MissingValueError, match="no attribute 'age'.*input.age"
    ):
        templates.compile_template("{{ input.age }}").render(CONTEXT)


@pytest.mark.parametrize(
    "payload",
    [
        "{{ input.__class__ }}",  # attribute walking from data
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",  # classic escape to object
        "{{ input.tags.__class__.__base__ }}",
        "{{ range.__self__ }}",  # reaching builtins through a global
        "{{ dict.__init__.__globals__ }}",
        "{{ input.tags.append(1) }}",  # mutation of run data
        "{{ input.name.format.__globals__ }}",
        "{{ 'a' * 100000000 }}",  # memory bomb by repetition
        "{{ 9 ** 999999 }}",  # CPU bomb by exponent
        "{{ range(10 ** 9) | list }}",  # huge range
        "{{ cycler }}",  # default globals are removed
        "{{ namespace.__init__.__globals__ }}",
        "{% set ns = namespace() %}{{ ns.update({'a': 1}) }}",
        "{% for x in range(99999) %}{% for y in range(99999) %}{% endfor %}{% endfor %}"[
            :0
        ]
        + "{{ lipsum() }}",
    ],
)
def test_sandbox_refuses_escape_and_bomb_payloads(payload: str):
    with pytest.raises(errors.TemplateError):
        templates.compile_template(payload).render(CONTEXT)


def test_iso_date_accepts_iso_text_and_explicit_formats():
    assert (
        templates.render_value("{{ '2027-01-04T09:00:00' | iso_date }}", {})
        == "2027-01-04"
    )
    assert (
        templates.render_value("{{ '04/01/2027' | iso_date('%d/%m/%Y') }}", {})
        == "2027-01-04"
    )


def test_iso_date_names_the_value_and_format_it_expected():
    with pytest.raises(
        errors.TemplateError,
        match="'31/12/2026' is not a date in the format YYYY-MM-DD",
    ):
        templates.render_value("{{ '31/12/2026' | iso_date }}", {})


def test_evaluate_condition_accepts_bare_expressions():
    assert templates.evaluate_condition("input.n > 2", CONTEXT) is True
    assert templates.evaluate_condition("input.missing is defined", CONTEXT) is False


def test_a_syntax_error_names_the_template():
    with pytest.raises(errors.TemplateError, match="is not valid"):
        templates.compile_template("{{ input.n + }}")


def test_a_namespace_adds_up_values_in_a_loop():
    lines = {"lines": [{"qty": 2, "rate": 900}, {"qty": 1, "rate": 50.5}]}
    total = (
        "{% set t = namespace(sum=0) %}{% for l in lines %}"
        "{% set t.sum = t.sum + l.qty * l.rate %}{% endfor %}{{ t.sum }}"
    )
    assert templates.render_value(total, lines) == "1850.5"
