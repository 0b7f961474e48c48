"""Templates and conditions, rendered in a sandbox so flow data never runs code.

Templates use Jinja syntax in an immutable sandbox: no attribute starting
with an underscore, no method that mutates, no access to Python objects
beyond plain data. A template that is one expression (``"{{ input.age }}"``)
keeps the value's type; anything else renders to text. Every template is
compiled once and cached, since the same flow version renders it per run.
"""

from __future__ import annotations

import datetime as dt
import functools
import operator
import re
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment, safe_range
from jinja2.utils import Namespace

from lobflows import errors

MAX_TEXT_LENGTH = 1_000_000
MAX_POWER_EXPONENT = 100


# String methods whose argument is a length to pad to: bounded like repetition.
_PADDING_METHODS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs"})
# A width or precision in a format specification: "{:>999}" or "%999s".
_FORMAT_WIDTH = re.compile(r"(\d{5,})")


class _Environment(ImmutableSandboxedEnvironment):
    """The sandbox, with guards against arithmetic that would exhaust memory."""

    intercepted_binops = frozenset({"*", "**"})

    def unsafe_undefined(self, obj: Any, attribute: str) -> Any:
        # Refuse loudly instead of handing back an undefined value that could
        # slip into output (e.g. through map(attribute=...)).
        raise jinja2.exceptions.SecurityError(
            f"access to attribute {attribute!r} of a {type(obj).__name__} is not allowed"
        )

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 - the sandbox's own signature
        owner = getattr(__obj, "__self__", None)
        name = getattr(__obj, "__name__", "")
        if isinstance(owner, str):
            sizes = [a for a in (*args, *kwargs.values()) if isinstance(a, int)]
            if name in _PADDING_METHODS and any(n > MAX_TEXT_LENGTH for n in sizes):
                raise errors.TemplateError(
                    f"{name}() to more than {MAX_TEXT_LENGTH} characters is refused"
                )
        return super().call(__context, __obj, *args, **kwargs)

    def getattr(self, obj: Any, attribute: str) -> Any:
        _check_format(obj, attribute)
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        _check_format(obj, argument)
        return super().getitem(obj, argument)

    def call_binop(
        self, context: Any, operator_name: str, left: Any, right: Any
    ) -> Any:
        if operator_name == "**":
            if isinstance(right, (int, float)) and abs(right) > MAX_POWER_EXPONENT:
                raise errors.TemplateError(
                    f"exponent {right} is larger than {MAX_POWER_EXPONENT}"
                )
            return operator.pow(left, right)
        if (
            isinstance(left, (str, list))
            and isinstance(right, int)
            or isinstance(right, (str, list))
            and isinstance(left, int)
        ):
            sequence, times = (left, right) if isinstance(right, int) else (right, left)
            if len(sequence) * times > MAX_TEXT_LENGTH:
                raise errors.TemplateError(
                    f"repeating a value would exceed {MAX_TEXT_LENGTH} items"
                )
        return operator.mul(left, right)


def _check_format(obj: Any, attribute: Any) -> None:
    # str.format comes back wrapped by the sandbox; its widths are checked here.
    if (
        isinstance(obj, str)
        and attribute in ("format", "format_map")
        and _FORMAT_WIDTH.search(obj)
    ):
        raise errors.TemplateError("format widths of five digits or more are refused")


def _iso_date(value: Any, input_format: str | None = None) -> str:
    """A date as ISO 8601 (YYYY-MM-DD), from ISO text or an explicit strptime format."""
    if isinstance(value, dt.datetime):
        return value.date().isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    text = str(value).strip()
    try:
        if input_format:
            return dt.datetime.strptime(text, input_format).date().isoformat()
        return dt.date.fromisoformat(text[:10]).isoformat()
    except ValueError:
        expected = input_format or "YYYY-MM-DD"
        raise errors.TemplateError(
            f"{text!r} is not a date in the format {expected}"
        ) from None


def _bounded_format(value: Any, *args: Any, **kwargs: Any) -> str:
    """The ``format`` filter (printf style), refusing widths that exhaust memory."""
    text = str(value)
    if _FORMAT_WIDTH.search(text):
        raise errors.TemplateError("format widths of five digits or more are refused")
    return jinja2.filters.do_format(text, *args, **kwargs)


def _text(value: Any) -> Any:
    """In text, null is empty: "Hello {{ x }}" with x null reads "Hello ", not "Hello None"."""
    return "" if value is None else value


def _key_part(value: Any) -> Any:
    empty = value is None or value == [] or value == {}
    if empty or (isinstance(value, str) and not value.strip()):
        raise MissingValueError("a value in the key is null or empty")
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def _environment(finalize: Any = _text) -> _Environment:
    env = _Environment(
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        finalize=finalize,
    )
    env.filters["iso_date"] = _iso_date
    env.filters["format"] = _bounded_format
    # Only plain helpers; the default globals (cycler, joiner, lipsum) carry
    # Python functions that an attacker could try to walk from.
    # namespace() lets a loop add up values, e.g. the total of order lines.
    env.globals = {"range": safe_range, "dict": dict, "namespace": Namespace}
    return env


_env = _environment()
_key_env = _environment(_key_part)


class Template:
    """A compiled template: render it with a context of plain data."""

    __slots__ = ("source", "_template", "_expression")

    def __init__(self, source: str, *, env: _Environment = _env) -> None:
        self.source = source
        self._expression = _single_expression(source) if env is _env else None
        try:
            _refuse_internals(env.parse(source), source)
            if self._expression is not None:
                self._template = env.compile_expression(
                    self._expression, undefined_to_none=False
                )
            else:
                self._template = env.from_string(source)
        except jinja2.TemplateSyntaxError as exc:
            raise errors.TemplateError(
                f"template {source!r} is not valid: {exc.message}"
            ) from None

    def render(self, context: dict[str, Any]) -> Any:
        try:
            if self._expression is not None:
                value = self._template(**context)
                if isinstance(value, jinja2.Undefined):
                    str(value)  # raises UndefinedError with the missing name
                return value
            text = self._template.render(context)
        except jinja2.UndefinedError as exc:
            raise MissingValueError(f"{exc.message} (in {self.source!r})") from None
        except jinja2.exceptions.SecurityError as exc:
            raise errors.TemplateError(
                f"template {self.source!r} was refused: {exc}"
            ) from None
        except errors.LobflowsError:
            raise
        except Exception as exc:  # any failure of user-written expressions
            raise errors.TemplateError(
                f"template {self.source!r} failed: {exc}"
            ) from None
        if len(text) > MAX_TEXT_LENGTH:
            raise errors.TemplateError(
                f"template {self.source!r} rendered more than {MAX_TEXT_LENGTH} characters"
            )
        return text


class MissingValueError(errors.TemplateError):
    """A template referred to a value that the run data does not have."""


def _refuse_internals(parsed: nodes.Template, source: str) -> None:
    """Names that reach the template machinery itself are refused at compile time."""
    for name in parsed.find_all(nodes.Name):
        if name.name in ("self", "loop_context", "context"):
            raise errors.TemplateError(
                f"template {source!r} uses {name.name!r}, which templates may not reach"
            )


def _single_expression(source: str) -> str | None:
    """The inner expression when the whole template is one ``{{ … }}``."""
    stripped = source.strip()
    if not (stripped.startswith("{{") and stripped.endswith("}}")):
        return None
    inner = stripped[2:-2]
    if "{{" in inner or "}}" in inner or "{%" in inner:
        return None
    try:
        parsed = _env.parse(stripped)
    except jinja2.TemplateSyntaxError:
        return None
    body = parsed.body
    if len(body) == 1 and isinstance(body[0], nodes.Output) and len(body[0].nodes) == 1:
        return inner.strip()
    return None


@functools.lru_cache(maxsize=4096)
def compile_template(source: str) -> Template:
    """Compile once; the cache is keyed by the template text."""
    return Template(source)


@functools.lru_cache(maxsize=256)
def compile_key_template(source: str) -> Template:
    """A template that builds a key: a null or empty value in it is an error."""
    return Template(source, env=_key_env)


@functools.lru_cache(maxsize=1024)
def compile_condition(source: str) -> Template:
    """A condition may be written bare (``input.x > 3``) or in braces."""
    text = source.strip()
    if not text.startswith("{{"):
        text = "{{ " + text + " }}"
    return Template(text)


def is_template(value: str) -> bool:
    return "{{" in value or "{%" in value


def render_value(value: Any, context: dict[str, Any]) -> Any:
    """Render every template inside a JSON-like value."""
    if isinstance(value, str):
        return compile_template(value).render(context) if is_template(value) else value
    if isinstance(value, dict):
        return {k: render_value(v, context) for k, v in value.items()}
    if isinstance(value, list):
        return [render_value(v, context) for v in value]
    return value


def evaluate_condition(source: str, context: dict[str, Any]) -> bool:
    return bool(compile_condition(source).render(context))
