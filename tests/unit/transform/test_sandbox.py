"""Known template-injection and sandbox-escape payloads: each is refused with a
clear error, and none runs. Flow data never becomes a template."""

from __future__ import annotations

import pytest

from lobflows import errors
from lobflows.transform import templates

CONTEXT = {
    "input": {"name": "Ada", "tags": ["a", "b"], "n": 7, "text": "{{ 7 * 7 }}"},
    "steps": {},
}

ATTRIBUTE_WALKS = [
    "{{ input.__class__ }}",
    "{{ input['__class__'] }}",
    "{{ input.name.__class__.__mro__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ ().__class__.__bases__[0].__subclasses__() }}",
    "{{ input.tags.__class__.__base__.__subclasses__() }}",
    "{{ (1).__class__.__base__ }}",
    "{{ input | attr('__class__') }}",
    "{{ input | attr('\\x5f\\x5fclass\\x5f\\x5f') }}",
    "{{ input.tags | map(attribute='__class__') | list }}",
    "{{ input.items.__globals__ }}",
    "{{ input.get.__self__ }}",
    "{{ range.__self__ }}",
    "{{ range.__globals__ }}",
    "{{ dict.__init__.__globals__ }}",
    "{{ dict.mro() }}",
    "{{ namespace.__init__.__globals__ }}",
    "{{ self }}",
    "{{ self._TemplateReference__context }}",
    "{{ config }}",
    "{{ request }}",
    "{{ lipsum.__globals__ }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ joiner }}",
    "{{ loop }}",
    "{{ input.name.__len__ }}",
    "{{ input.tags.pop() }}",
    "{{ input.tags.append(1) }}",
    "{{ input.update({'x': 1}) }}",
    "{% set ns = namespace() %}{{ ns.update({'a': 1}) }}",
    "{{ input.name.translate.__self__.__class__ }}",
]

FORMAT_TRICKS = [
    "{{ '{0.__class__}'.format(input) }}",
    "{{ '{0.__class__.__mro__}'.format(input.name) }}",
    "{{ '{x.__class__}'.format_map({'x': input}) }}",
    "{{ '%s' % input.__class__ }}",
    "{{ '%(a)s' | format(a=input.__class__) }}",
]

BOMBS = [
    "{{ 'a' * 100000000 }}",
    "{{ [1] * 100000000 }}",
    "{{ 9 ** 999999 }}",
    "{{ (2 ** 100) ** 101 }}",
    "{{ '{:>999999999}'.format(1) }}",
    "{{ '%999999999s' | format(1) }}",
    "{{ '{:>999999999}'['format'](1) }}",
    "{{ 'x'.zfill(1000000000) }}",
    "{{ range(10 ** 9) | list }}",
    "{{ 'x'.center(1000000000) }}",
    "{{ 'x'.ljust(1000000000) }}",
    "{% macro r() %}{{ r() }}{% endmacro %}{{ r() }}",
]

LOADERS = [
    "{% include 'secrets.yaml' %}",
    "{% import 'os' as os %}",
    "{% extends 'base' %}",
    "{% from 'x' import y %}",
]


@pytest.mark.parametrize("payload", ATTRIBUTE_WALKS + FORMAT_TRICKS + BOMBS + LOADERS)
def test_the_payload_is_refused_with_a_template_error(payload: str):
    with pytest.raises(errors.TemplateError) as refused:
        templates.compile_template(payload).render(CONTEXT)
    message = str(refused.value)
    assert message and "Traceback" not in message


def test_data_that_looks_like_a_template_stays_data():
    assert templates.render_value("{{ input.text }}", CONTEXT) == "{{ 7 * 7 }}"
    assert templates.render_value("{{ input.text | upper }}", CONTEXT) == "{{ 7 * 7 }}"


def test_refusals_say_what_was_refused():
    with pytest.raises(errors.TemplateError) as refused:
        templates.compile_template("{{ input.__class__ }}").render(CONTEXT)
    assert "__class__" in str(refused.value)
