"""Converters: the small named functions a mapping field applies to its value.

A field lists converters in order. Each is a name (``trim``) or a one-key
mapping of name to arguments (``{date: {format: "%d/%m/%Y"}}``), or to one
scalar when the converter has one obvious argument (``{truncate: 40}``).
`parse_chain` checks names and arguments when the flow loads; `apply_chain`
runs the chain per record and raises `ConversionError`, saying what was
expected and what came (the caller adds field and record).

Null: a converter handed null returns null, so once a value becomes null
(``blank_as_null`` on "  ") the rest of the chain passes it through. The
exception is ``default``, the one converter that reads null (and blank
text) and replaces it; converters after it run on its value.

Numbers: ``number`` and ``integer`` return int when the value is whole and
float otherwise, since JSON has no decimal type (a float keeps about 15
significant digits). Money goes through ``money``, which returns exact
decimal text rounded half up to the currency's minor unit.
"""

from __future__ import annotations

import bisect
import datetime as dt
import decimal
import difflib
import math
import re
import unicodedata
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import babel
import babel.numbers
import email_validator
import phonenumbers
import pydantic
from pydantic import AfterValidator, ConfigDict, Field, PrivateAttr

from lobflows import errors

# Rendered with a declared format to show what a value should look like;
# day 31 and month 12 tell day-first from month-first at a glance.
_SAMPLE = dt.datetime(2026, 12, 31, 23, 59, 58, tzinfo=dt.UTC)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_TURKIC_LANGUAGES = ("tr", "az")
_TRUE_WORDS = ("true", "yes", "y", "on", "1", "t")
_FALSE_WORDS = ("false", "no", "n", "off", "0", "f")
_BLANK_HINT = "; put blank_as_null before it to treat blank text as null"
_SHOWN_LENGTH = 60
_SHOWN_CHOICES = 5


class ConversionError(errors.StepInputError):
    """A converter could not convert a value."""

    def __init__(self, message: str, *, converter: str | None = None) -> None:
        self.converter = converter
        super().__init__(message, converter=converter)


# -- arguments ---------------------------------------------------------------


def _check_zone(name: str) -> str:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown IANA time zone {name!r}, expected a name like Europe/Berlin"
        ) from None
    return name


def _check_locale(name: str) -> str:
    try:
        return str(babel.Locale.parse(name.replace("-", "_")))
    except (babel.UnknownLocaleError, ValueError):
        raise ValueError(
            f"unknown locale {name!r}, expected a name like de_DE or tr"
        ) from None


def _check_read_format(text: str) -> str:
    # strptime only finds a bad directive when it reads; reading back what
    # the format writes finds it at load instead.
    try:
        dt.datetime.strptime(_SAMPLE.strftime(text), text)
    except ValueError as exc:
        raise ValueError(f"format {text!r} cannot read dates: {exc}") from None
    return text


def _check_number_pattern(pattern: str) -> str:
    # Babel takes any text as a pattern; one without a digit placeholder
    # would print no number at all.
    if not re.search(r"[0#@]", pattern):
        raise ValueError(
            f"number format {pattern!r} has no digit placeholder, "
            "expected a CLDR pattern like #,##0.00"
        )
    babel.numbers.parse_pattern(pattern)
    return pattern


def _check_currency(code: str) -> str:
    if code.upper() not in babel.numbers.list_currencies():
        raise ValueError(f"unknown currency {code!r}, expected a code like EUR")
    return code.upper()


def _check_region(code: str) -> str:
    if code.upper() not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(f"unknown phone region {code!r}, expected a code like DE")
    return code.upper()


TimeZoneName = Annotated[str, AfterValidator(_check_zone)]
LocaleName = Annotated[str, AfterValidator(_check_locale)]
ReadFormat = Annotated[str, AfterValidator(_check_read_format)]
NumberPattern = Annotated[str, AfterValidator(_check_number_pattern)]
CurrencyCode = Annotated[str, AfterValidator(_check_currency)]
RegionCode = Annotated[str, AfterValidator(_check_region)]
Fold = Literal["earlier", "later", "error"]
EpochUnit = Literal["seconds", "milliseconds"]


class ConverterArguments(pydantic.BaseModel):
    """Arguments of one converter, checked once when the flow loads."""

    # Strict: YAML reads `no` as false and `010` as 8; a locale or key that
    # arrives as a bool or number is refused rather than coerced.
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class CaseArguments(ConverterArguments):
    locale: LocaleName | None = None  # tr or az: dotted and dotless i


class SplitArguments(ConverterArguments):
    separator: str = Field(default=",", min_length=1)


class JoinArguments(ConverterArguments):
    separator: str = ", "


class TruncateArguments(ConverterArguments):
    length: int = Field(ge=1)  # characters kept, at most


class ReplaceArguments(ConverterArguments):
    old: str = Field(min_length=1)
    new: str = ""


class DateArguments(ConverterArguments):
    format: ReadFormat | None = None  # strptime; ISO 8601 when absent
    output: str | None = None  # strftime; YYYY-MM-DD when absent


class DatetimeArguments(ConverterArguments):
    format: ReadFormat | None = None  # strptime; ISO 8601 when absent
    timezone: TimeZoneName | None = None  # how to read times without an offset
    fold: Fold = "earlier"  # which of a time that happens twice
    output_timezone: TimeZoneName = "UTC"
    output: str | None = None  # strftime; ISO 8601 with offset when absent

    @pydantic.model_validator(mode="after")
    def _zone_known(self) -> DatetimeArguments:
        if self.format and "%z" not in self.format and self.timezone is None:
            raise ValueError(
                f"format {self.format!r} has no UTC offset (%z), so a timezone "
                "is required to read it, e.g. timezone: Europe/Berlin"
            )
        return self


class EpochArguments(ConverterArguments):
    unit: EpochUnit = "seconds"
    output_timezone: TimeZoneName = "UTC"


class ToEpochArguments(ConverterArguments):
    unit: EpochUnit = "seconds"
    timezone: TimeZoneName | None = None  # how to read times without an offset
    fold: Fold = "earlier"


class NumberArguments(ConverterArguments):
    locale: LocaleName | None = None  # how text writes numbers; plain 1234.56 if absent


class MoneyArguments(ConverterArguments):
    currency: CurrencyCode
    locale: LocaleName | None = None  # how text writes numbers; plain 1234.56 if absent
    rounding: Literal["half_up", "half_even"] = "half_up"


class FormatNumberArguments(ConverterArguments):
    locale: LocaleName
    format: NumberPattern | None = None  # CLDR pattern, e.g. "#,##0.00"


class BooleanArguments(ConverterArguments):
    true: list[str] = Field(default=list(_TRUE_WORDS), min_length=1)
    false: list[str] = Field(default=list(_FALSE_WORDS), min_length=1)

    @pydantic.model_validator(mode="after")
    def _disjoint(self) -> BooleanArguments:
        both = {w.casefold() for w in self.true} & {w.casefold() for w in self.false}
        if both:
            raise ValueError(f"words both true and false: {', '.join(sorted(both))}")
        return self


class PhoneArguments(ConverterArguments):
    region: RegionCode | None = None  # for numbers written without +country code
    output: Literal["e164", "international", "national"] = "e164"


class LookupArguments(ConverterArguments):
    values: dict[str | int, Any] | list[str | int] = Field(min_length=1)
    default: Any = None  # used for unknown values only when given
    case_insensitive: bool = False
    _table: dict[str, Any] = PrivateAttr(default_factory=dict)

    @pydantic.field_validator("values", mode="before")
    @classmethod
    def _plain_keys(cls, values: Any) -> Any:
        if not isinstance(values, list | dict):
            raise ValueError(
                f"expected a mapping of value to result or a list of values, "
                f"got {_shown(values)}"
            )
        for key in values:
            if isinstance(key, bool) or not isinstance(key, str | int):
                raise ValueError(
                    f"keys must be text or whole numbers, got {key!r}{_yaml_hint(key)}"
                )
        return values

    @pydantic.model_validator(mode="after")
    def _build_table(self) -> LookupArguments:
        values = self.values
        pairs = values.items() if isinstance(values, dict) else ((v, v) for v in values)
        for key, target in pairs:
            text = self.key_of(key)
            if text in self._table and self._table[text] != target:
                raise ValueError(f"values: {key!r} and another key read the same")
            self._table[text] = target
        return self

    def key_of(self, value: Any) -> str:
        text = _scalar_text(value) or ""
        return text.strip().casefold() if self.case_insensitive else text.strip()

    def find(self, value: Any) -> tuple[bool, Any]:
        key = self.key_of(value)
        return key in self._table, self._table.get(key)


class DefaultArguments(ConverterArguments):
    value: Any


class RoundArguments(ConverterArguments):
    digits: int = Field(default=0, ge=-15, le=15)  # negative rounds to tens, ...


# -- the registry ------------------------------------------------------------


@dataclass(frozen=True)
class _Kind:
    function: Callable[[Any, Any], Any]
    arguments: type[ConverterArguments] | None
    summary: str
    shorthand: str | None
    reads_null: bool


_KINDS: dict[str, _Kind] = {}


def _converter(
    name: str,
    summary: str,
    *,
    arguments: type[ConverterArguments] | None = None,
    shorthand: str | None = None,
    reads_null: bool = False,
) -> Callable[[Callable[[Any, Any], Any]], Callable[[Any, Any], Any]]:
    def register(function: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
        _KINDS[name] = _Kind(function, arguments, summary, shorthand, reads_null)
        return function

    return register


@dataclass(frozen=True)
class Converter:
    """One converter of a chain, with its checked arguments."""

    name: str
    args: ConverterArguments | None = None

    def __call__(self, value: Any) -> Any:
        kind = _KINDS[self.name]
        if value is None and not kind.reads_null:
            return None
        try:
            return kind.function(value, self.args)
        except ConversionError as exc:
            hint = _BLANK_HINT if _is_blank(value) else ""
            raise ConversionError(exc.message + hint, converter=self.name) from exc

    def describe(self) -> str:
        """Short text for generated docs: ``date (format %d/%m/%Y)``."""
        if self.args is None:
            return self.name
        given = self.args.model_dump(exclude_unset=True)
        if not given:
            return self.name
        parts = [f"{key} {_brief(value)}" for key, value in given.items()]
        return f"{self.name} ({', '.join(parts)})"


def parse_chain(raw: list[str | dict[str, Any]] | None) -> list[Converter]:
    """Check a field's converter list at load time.

    Raises:
        ValueError: a converter is unknown (the message lists the known ones)
            or its arguments are wrong.
    """
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ValueError(f"converters must be a list, got {_shown(raw)}")
    return [_parse_item(position, item) for position, item in enumerate(raw, 1)]


def apply_chain(value: Any, chain: list[Converter]) -> Any:
    """Run the converters in order.

    Once a converter returns null, the ones after it pass null through,
    except ``default``, which replaces it and hands its value on.
    """
    for converter in chain:
        value = converter(value)
    return value


def _parse_item(position: int, item: Any) -> Converter:
    if isinstance(item, str):
        name, argument = item, None
    elif isinstance(item, dict) and len(item) == 1:
        [(name, argument)] = item.items()
    else:
        raise ValueError(
            f"converter {position}: expected a name or a one-key mapping "
            f"like {{truncate: 40}}, got {_shown(item)}"
        )

    kind = _KINDS.get(name) if isinstance(name, str) else None
    if kind is None:
        raise ValueError(f"converter {position}: {_unknown(name)}")
    try:
        return Converter(name, _parse_arguments(kind, argument))
    except ValueError as exc:
        raise ValueError(f"converter {position} ({name}): {exc}") from None


def _parse_arguments(kind: _Kind, argument: Any) -> ConverterArguments | None:
    if kind.arguments is None:
        if argument not in (None, {}):
            raise ValueError(f"takes no arguments, got {_shown(argument)}")
        return None
    if argument is None:
        argument = {}
    elif not isinstance(argument, dict):
        if kind.shorthand is None:
            accepted = ", ".join(kind.arguments.model_fields)
            raise ValueError(
                f"expected a mapping of {accepted}, got {_shown(argument)}"
            )
        argument = {kind.shorthand: argument}

    try:
        return kind.arguments.model_validate(argument)
    except pydantic.ValidationError as exc:
        raise ValueError(_one_line(exc, kind.arguments)) from None


def _unknown(name: Any) -> str:
    known = sorted(_KINDS)
    close = difflib.get_close_matches(str(name), known, n=1)
    guess = f" (did you mean {close[0]}?)" if close else ""
    return f"unknown converter {name!r}{guess}; known converters: {', '.join(known)}"


def _one_line(exc: pydantic.ValidationError, model: type[ConverterArguments]) -> str:
    problems = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(part) for part in error["loc"])
        if error["type"] == "extra_forbidden":
            text = f"unknown argument (accepted: {', '.join(model.model_fields)})"
        elif error["type"] == "missing":
            text = "required"
        elif error["type"] == "value_error":
            text = str(error["ctx"]["error"])
        else:
            given = error["input"]
            text = f"{error['msg'].lower()}, got {_shown(given)}{_yaml_hint(given)}"
        problems.append(f"{where}: {text}" if where else text)
    return "; ".join(dict.fromkeys(problems))


# -- text ----------------------------------------------------------------------


@_converter("trim", "trim: remove whitespace at both ends")
def _trim(value: Any, args: None) -> str:
    return _text_of(value).strip()


@_converter(
    "lower",
    "lower {locale?}: lower case; locale tr or az lowers I to ı and İ to i",
    arguments=CaseArguments,
    shorthand="locale",
)
def _lower(value: Any, args: CaseArguments) -> str:
    # Python's rules are language-neutral: "İ" lowers to "i" plus a combining
    # dot (U+0307) and "I" to "i". Turkish and Azeri pair I with ı and İ with
    # i; no library in our dependencies does locale case mapping.
    text = _text_of(value)
    if _is_turkic(args.locale):
        text = text.replace("I\u0307", "i").replace("I", "ı").replace("İ", "i")
    return text.lower()


@_converter(
    "upper",
    "upper {locale?}: upper case; locale tr or az uppers i to İ",
    arguments=CaseArguments,
    shorthand="locale",
)
def _upper(value: Any, args: CaseArguments) -> str:
    text = _text_of(value)
    if _is_turkic(args.locale):
        text = text.replace("i", "İ")
    return text.upper()


@_converter(
    "title", "title: each word capitalised (Python rules: o'neil becomes O'Neil)"
)
def _title(value: Any, args: None) -> str:
    return _text_of(value).title()


@_converter("casefold", "casefold: fold case for comparing (ß becomes ss)")
def _casefold(value: Any, args: None) -> str:
    return _text_of(value).casefold()


@_converter(
    "split",
    'split {separator=","}: text to a list of trimmed, non-empty parts',
    arguments=SplitArguments,
    shorthand="separator",
)
def _split(value: Any, args: SplitArguments) -> list[str]:
    parts = (part.strip() for part in _text_of(value).split(args.separator))
    return [part for part in parts if part]


@_converter(
    "join",
    'join {separator=", "}: a list to text; null items are left out',
    arguments=JoinArguments,
    shorthand="separator",
)
def _join(value: Any, args: JoinArguments) -> str:
    if not isinstance(value, list):
        raise ConversionError(f"expected a list, got {_shown(value)}")
    texts = [_scalar_text(item) for item in value if item is not None]
    if None in texts:
        raise ConversionError(f"expected a list of plain values, got {_shown(value)}")
    return args.separator.join(text for text in texts if text is not None)


@_converter(
    "slug", "slug: lower-case ASCII words joined by -, accents folded (Zoë → zoe)"
)
def _slug(value: Any, args: None) -> str:
    folded = unicodedata.normalize("NFKD", _text_of(value).casefold())
    letters = "".join(c for c in folded if not unicodedata.combining(c))
    # Whatever is still not ASCII (a dash, an emoji, 日本) separates words.
    slug = re.sub(r"[^a-z0-9]+", "-", letters.translate(_UNDECOMPOSED)).strip("-")
    if not slug:
        raise ConversionError(
            f"expected text with Latin letters or digits, got {_shown(value)}"
        )
    return slug


# Latin letters that NFKD leaves whole, so they would vanish from a slug.
_UNDECOMPOSED = str.maketrans(
    {"ø": "o", "đ": "d", "ð": "d", "ł": "l", "ı": "i", "æ": "ae", "œ": "oe", "þ": "th"}
)


@_converter(
    "truncate",
    "truncate {length}: at most length characters, never splitting an emoji "
    "or an accent from its letter",
    arguments=TruncateArguments,
    shorthand="length",
)
def _truncate(value: Any, args: TruncateArguments) -> str:
    text = _text_of(value)
    cut = args.length
    if len(text) <= cut:
        return text
    while cut > 0 and not _is_boundary(text, cut):
        cut -= 1
    return text[:cut]


@_converter(
    "blank_as_null", "blank_as_null: empty or whitespace-only text becomes null"
)
def _blank_as_null(value: Any, args: None) -> Any:
    return None if _is_blank(value) else value


@_converter(
    "replace",
    'replace {old, new=""}: replace every occurrence of old by new',
    arguments=ReplaceArguments,
)
def _replace(value: Any, args: ReplaceArguments) -> str:
    return _text_of(value).replace(args.old, args.new)


@_converter(
    "text",
    "text: a plain value as text (true/false, 12 for 12.0, ISO dates)",
)
def _text(value: Any, args: None) -> str:
    text = _scalar_text(value)
    if text is None:
        raise ConversionError(f"expected a plain value, got {_shown(value)}")
    return text


# -- dates and times -----------------------------------------------------------


@_converter(
    "date",
    "date {format?, output?}: read a date with a strptime format (ISO 8601 if "
    "none), write YYYY-MM-DD or the strftime output format",
    arguments=DateArguments,
    shorthand="format",
)
def _date(value: Any, args: DateArguments) -> str:
    # ISO text with a time ("2026-12-31T23:30Z") is refused: its day depends
    # on the zone. datetime with output "%Y-%m-%d" says which zone.
    if isinstance(value, dt.datetime):
        day = value.date()
    elif isinstance(value, dt.date):
        day = value
    else:
        day = _read_datetime(value, args.format, what="date").date()
    return day.strftime(args.output) if args.output else day.isoformat()


@_converter(
    "datetime",
    "datetime {format?, timezone?, fold=earlier, output_timezone=UTC, output?}: "
    "read a date and time (ISO 8601 if no format); times without an offset "
    "need timezone; write ISO 8601 with offset or the output format",
    arguments=DatetimeArguments,
    shorthand="format",
)
def _datetime(value: Any, args: DatetimeArguments) -> str:
    moment = _moment(value, args.format, args.timezone, args.fold)
    local = moment.astimezone(zoneinfo.ZoneInfo(args.output_timezone))
    return local.strftime(args.output) if args.output else local.isoformat()


@_converter(
    "epoch",
    "epoch {unit=seconds|milliseconds, output_timezone=UTC}: Unix time to ISO 8601",
    arguments=EpochArguments,
    shorthand="unit",
)
def _epoch(value: Any, args: EpochArguments) -> str:
    amount = _read_decimal(value, None)
    whole = int(amount) if amount == amount.to_integral_value() else float(amount)
    try:
        if args.unit == "milliseconds":
            moment = _EPOCH + dt.timedelta(milliseconds=whole)
        else:
            moment = _EPOCH + dt.timedelta(seconds=whole)
    except OverflowError:
        hint = "; is it in milliseconds?" if args.unit == "seconds" else ""
        raise ConversionError(
            f"expected Unix time in {args.unit} (years 1 to 9999), "
            f"got {_shown(value)}{hint}"
        ) from None
    return moment.astimezone(zoneinfo.ZoneInfo(args.output_timezone)).isoformat()


@_converter(
    "to_epoch",
    "to_epoch {unit=seconds|milliseconds, timezone?, fold=earlier}: an ISO 8601 "
    "date and time to Unix time (whole units, rounded down)",
    arguments=ToEpochArguments,
    shorthand="unit",
)
def _to_epoch(value: Any, args: ToEpochArguments) -> int:
    moment = _moment(value, None, args.timezone, args.fold)
    unit = dt.timedelta(milliseconds=1 if args.unit == "milliseconds" else 1000)
    return (moment - _EPOCH) // unit


def _moment(
    value: Any, read_format: str | None, timezone: str | None, fold: Fold
) -> dt.datetime:
    """An aware datetime from text or a datetime, never guessing a time zone."""
    if isinstance(value, dt.datetime):
        wall = value
    elif isinstance(value, dt.date):
        wall = dt.datetime.combine(value, dt.time())
    else:
        wall = _read_datetime(value, read_format, what="date and time")
    if wall.tzinfo is not None and wall.utcoffset() is not None:
        return wall
    if timezone is None:
        raise ConversionError(
            f"expected a date and time with a UTC offset, got {_shown(value)} "
            "without one; give a timezone (e.g. Europe/Berlin) to read local times"
        )
    return _localize(wall.replace(tzinfo=None), zoneinfo.ZoneInfo(timezone), fold)


def _read_datetime(value: Any, read_format: str | None, *, what: str) -> dt.datetime:
    if not isinstance(value, str):
        raise ConversionError(f"expected a {what} as text, got {_shown(value)}")
    text = value.strip()
    try:
        if read_format:
            return dt.datetime.strptime(text, read_format)
        if what == "date":
            return dt.datetime.combine(dt.date.fromisoformat(text), dt.time())
        return dt.datetime.fromisoformat(text)
    except ValueError:
        pass

    if read_format:
        like = f"{_SAMPLE.strftime(read_format)} (format {read_format})"
    elif what == "date":
        like = f"{_SAMPLE.date().isoformat()} (ISO 8601)"
    else:
        like = f"{_SAMPLE.isoformat()} (ISO 8601)"
    raise ConversionError(f"expected a {what} like {like}, got {_shown(value)}")


def _localize(wall: dt.datetime, zone: zoneinfo.ZoneInfo, fold: Fold) -> dt.datetime:
    """A wall-clock time in a zone, refusing the skipped hour of a clock change."""
    earlier = wall.replace(tzinfo=zone, fold=0)
    later = wall.replace(tzinfo=zone, fold=1)
    if earlier.astimezone(dt.UTC).astimezone(zone).replace(tzinfo=None) != wall:
        start, end = _gap(wall, zone)
        raise ConversionError(
            f"expected a time that exists in {zone.key}, got {wall.isoformat()}: "
            f"the clocks there jump from {start:%H:%M} to {end:%H:%M} on "
            f"{start:%Y-%m-%d}"
        )
    if earlier.utcoffset() == later.utcoffset() or fold == "earlier":
        return earlier
    if fold == "later":
        return later
    raise ConversionError(
        f"expected a time that happens once in {zone.key}, got {wall.isoformat()}, "
        f"which happens twice (at {_offset(earlier)}, then at {_offset(later)}) "
        "as the clocks go back; set fold to earlier or later"
    )


def _offset(moment: dt.datetime) -> str:
    text = f"{moment:%z}"
    return f"{text[:3]}:{text[3:5]}"


def _gap(wall: dt.datetime, zone: zoneinfo.ZoneInfo) -> tuple[dt.datetime, dt.datetime]:
    """The wall-clock times where the skipped stretch around `wall` begins and ends."""
    offsets = {wall.replace(tzinfo=zone, fold=fold).utcoffset() for fold in (0, 1)}
    before, after = sorted(offset for offset in offsets if offset is not None)
    first = (wall - after).replace(tzinfo=dt.UTC)
    span_seconds = int((after - before).total_seconds())

    def is_after(seconds: int) -> bool:
        moment = first + dt.timedelta(seconds=seconds)
        return moment.astimezone(zone).utcoffset() == after

    # The change happens somewhere in this span of UTC; find the second.
    change = first + dt.timedelta(
        seconds=bisect.bisect_left(range(span_seconds + 1), True, key=is_after)
    )
    naive = change.replace(tzinfo=None)
    return naive + before, naive + after


# -- numbers -------------------------------------------------------------------


@_converter(
    "number",
    "number {locale?}: a number (int when whole, else float); with locale, "
    "text as written there (de_DE: 1.234,56)",
    arguments=NumberArguments,
    shorthand="locale",
)
def _number(value: Any, args: NumberArguments) -> int | float:
    return _plain_number(_read_decimal(value, args.locale))


@_converter(
    "integer",
    "integer {locale?}: a whole number; 12.5 is refused",
    arguments=NumberArguments,
    shorthand="locale",
)
def _integer(value: Any, args: NumberArguments) -> int:
    amount = _read_decimal(value, args.locale)
    if amount != amount.to_integral_value():
        raise ConversionError(f"expected a whole number, got {_shown(value)}")
    return int(amount)


@_converter(
    "money",
    "money {currency, locale?, rounding=half_up|half_even}: exact decimal text "
    "rounded to the currency's minor unit (EUR 1234.56, JPY 1235)",
    arguments=MoneyArguments,
    shorthand="currency",
)
def _money(value: Any, args: MoneyArguments) -> str:
    # Text, not a float: a float holds 0.10 only approximately and JSON
    # drops the zero of 10.50. Half up is what invoices and tills do;
    # half_even (banker's) is there for ledgers that sum rounded amounts.
    amount = _read_decimal(value, args.locale)
    digits = babel.numbers.get_currency_precision(args.currency)
    rounding = (
        decimal.ROUND_HALF_UP if args.rounding == "half_up" else decimal.ROUND_HALF_EVEN
    )
    rounded = _quantize(amount, digits, rounding, value)
    return format(rounded.copy_abs() if rounded.is_zero() else rounded, "f")


@_converter(
    "format_number",
    "format_number {locale, format?}: a number as text written for a locale, "
    "optionally with a CLDR pattern like #,##0.00",
    arguments=FormatNumberArguments,
    shorthand="locale",
)
def _format_number(value: Any, args: FormatNumberArguments) -> str:
    amount = _read_decimal(value, None)
    return babel.numbers.format_decimal(amount, format=args.format, locale=args.locale)


@_converter(
    "round",
    "round {digits=0}: round half up (2.5 → 3); int when digits ≤ 0",
    arguments=RoundArguments,
    shorthand="digits",
)
def _round(value: Any, args: RoundArguments) -> int | float:
    amount = _number_value(value)
    rounded = _quantize(amount, args.digits, decimal.ROUND_HALF_UP, value)
    return int(rounded) if args.digits <= 0 else float(rounded)


@_converter("abs", "abs: the absolute value of a number")
def _abs(value: Any, args: None) -> Any:
    _number_value(value)
    return abs(value)


def _quantize(
    amount: decimal.Decimal, digits: int, rounding: str, value: Any
) -> decimal.Decimal:
    step = decimal.Decimal(1).scaleb(-digits)
    try:
        return amount.quantize(step, rounding=rounding)
    except decimal.InvalidOperation:  # more digits than the context's 28
        raise ConversionError(
            f"expected a number of at most {decimal.getcontext().prec} digits, "
            f"got {_shown(value)}"
        ) from None


def _read_decimal(value: Any, locale: str | None) -> decimal.Decimal:
    """A finite decimal from a number, or from text written for `locale`."""
    if not isinstance(value, str):
        return _number_value(value)
    text = value.strip()
    amount: decimal.Decimal | None = None
    try:
        if locale:
            # strict: a group separator in the wrong place ("1,234.56" in
            # de_DE) is refused instead of read as 1.23456.
            amount = babel.numbers.parse_decimal(
                _with_space_groups(text, locale), locale=locale, strict=True
            )
        elif "_" not in text:  # Decimal reads 1_000 as Python source would
            amount = decimal.Decimal(text)
    except (babel.numbers.NumberFormatError, decimal.InvalidOperation):
        pass
    if amount is not None and amount.is_finite():
        return amount

    if locale:
        example = babel.numbers.format_decimal(
            decimal.Decimal("1234.56"), locale=locale
        )
        like = f"{example} (locale {locale})"
    else:
        like = "1234.56 (give a locale to read 1.234,56 or 1,234.56)"
    raise ConversionError(f"expected a number like {like}, got {_shown(value)}")


def _with_space_groups(text: str, locale: str) -> str:
    # Where digits are grouped by a narrow no-break space (fr_FR), people
    # type a plain space. Babel allows for that only when not strict.
    group = babel.numbers.get_group_symbol(locale)
    if group not in babel.numbers.SPACE_CHARS:
        return text
    return babel.numbers.SPACE_CHARS_RE.sub(group, text)


def _number_value(value: Any) -> decimal.Decimal:
    """A finite decimal from a number that already is one (not text, not a bool)."""
    is_number = isinstance(value, int | float | decimal.Decimal)
    if is_number and not isinstance(value, bool):
        # repr is the shortest text that reads back as the same float, so
        # 2.675 stays 2.675 instead of the binary 2.67499999999999982236…
        amount = decimal.Decimal(repr(value) if isinstance(value, float) else value)
        if amount.is_finite():
            return amount
    raise ConversionError(f"expected a number, got {_shown(value)}")


def _plain_number(amount: decimal.Decimal) -> int | float:
    return int(amount) if amount == amount.to_integral_value() else float(amount)


# -- booleans, contacts, tables, defaults --------------------------------------


@_converter(
    "boolean",
    "boolean {true?, false?}: true or false from words "
    f"(true: {', '.join(_TRUE_WORDS)}; false: {', '.join(_FALSE_WORDS)}) or 1 and 0",
    arguments=BooleanArguments,
)
def _boolean(value: Any, args: BooleanArguments) -> bool:
    if isinstance(value, bool):
        return value
    text = _scalar_text(value) if isinstance(value, str | int) else None
    word = (text or "").strip().casefold()
    if word and word in (w.casefold() for w in args.true):
        return True
    if word and word in (w.casefold() for w in args.false):
        return False
    raise ConversionError(
        f"expected {', '.join(args.true)} (true) or {', '.join(args.false)} "
        f"(false), got {_shown(value)}"
    )


@_converter(
    "phone",
    "phone {region?, output=e164|international|national}: a valid phone number, "
    "E.164 by default (+49301234567); region for numbers without +country code",
    arguments=PhoneArguments,
    shorthand="region",
)
def _phone(value: Any, args: PhoneArguments) -> str:
    text = _scalar_text(value) if isinstance(value, str | int) else None
    where = f"in region {args.region}" if args.region else "with a +country code"
    try:
        number = phonenumbers.parse(text or "", args.region)
    except phonenumbers.NumberParseException as exc:
        raise ConversionError(
            f"expected a phone number {where}, got {_shown(value)} ({exc.args[0]})"
        ) from None
    if not phonenumbers.is_valid_number(number):
        raise ConversionError(
            f"expected a valid phone number {where}, got {_shown(value)}"
        )
    style = getattr(phonenumbers.PhoneNumberFormat, args.output.upper())
    return phonenumbers.format_number(number, style)


@_converter(
    "email",
    "email: a checked, normalised address (domain lower-cased, local part kept); "
    "syntax only, no DNS",
)
def _email(value: Any, args: None) -> str:
    text = _text_of(value).strip()
    try:
        checked = email_validator.validate_email(text, check_deliverability=False)
    except email_validator.EmailNotValidError as exc:
        raise ConversionError(
            f"expected an email address, got {_shown(value)}: {exc}"
        ) from None
    return checked.normalized


_LOOKUP_SUMMARY = (
    "{values, default?, case_insensitive=false}: translate through a table "
    "(or accept only the listed values); unknown values refused unless default"
)


@_converter(
    "lookup", f"lookup {_LOOKUP_SUMMARY}", arguments=LookupArguments, shorthand="values"
)
@_converter(
    "enum", f"enum {_LOOKUP_SUMMARY}", arguments=LookupArguments, shorthand="values"
)
def _lookup(value: Any, args: LookupArguments) -> Any:
    is_known, target = args.find(value)
    if is_known:
        return target
    if "default" in args.model_fields_set:
        return args.default

    accepted = list(args.values)
    shown = ", ".join(_shown(key) for key in accepted[:_SHOWN_CHOICES])
    more = f", … ({len(accepted)} values)" if len(accepted) > _SHOWN_CHOICES else ""
    raise ConversionError(f"expected one of {shown}{more}, got {_shown(value)}")


@_converter(
    "default",
    "default {value}: replace null or blank text by value (runs even on null)",
    arguments=DefaultArguments,
    shorthand="value",
    reads_null=True,
)
def _default(value: Any, args: DefaultArguments) -> Any:
    return args.value if value is None or _is_blank(value) else value


# -- small helpers -------------------------------------------------------------


def _text_of(value: Any) -> str:
    if not isinstance(value, str):
        raise ConversionError(
            f"expected text, got {_shown(value)}; put text before it to convert"
        )
    return value


def _scalar_text(value: Any) -> str | None:
    """A plain value as text; None for lists, mappings and other objects."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return str(int(value))  # spreadsheets hand 12345 over as 12345.0
    if isinstance(value, int | float):
        return repr(value) if math.isfinite(value) else None
    if isinstance(value, decimal.Decimal):
        return format(value, "f") if value.is_finite() else None
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    return None


def _is_blank(value: Any) -> bool:
    return isinstance(value, str) and not value.strip()


def _is_turkic(locale: str | None) -> bool:
    return locale is not None and locale.split("_")[0] in _TURKIC_LANGUAGES


def _is_boundary(text: str, index: int) -> bool:
    """Whether text may be cut before `index` without tearing a character apart."""
    before, after = text[index - 1], text[index]
    if _is_extender(after) or before == "\u200d":
        return False
    if before == "\r" and after == "\n":
        return False
    if "\ud800" <= before <= "\udbff" and "\udc00" <= after <= "\udfff":
        return False  # surrogates left unpaired, e.g. by surrogateescape
    if _is_regional(before) and _is_regional(after):
        run = len(text[:index]) - len(text[:index].rstrip(_REGIONAL_INDICATORS))
        return run % 2 == 0  # flags are pairs of regional indicators
    return True


_REGIONAL_INDICATORS = "".join(chr(code) for code in range(0x1F1E6, 0x1F200))


def _is_regional(char: str) -> bool:
    return "\U0001f1e6" <= char <= "\U0001f1ff"


def _is_extender(char: str) -> bool:
    """Whether a character belongs to the one before it."""
    return (
        unicodedata.category(char) in ("Mn", "Mc", "Me")  # accents, variation selectors
        or "\U0001f3fb" <= char <= "\U0001f3ff"  # skin tones
        or "\U000e0020" <= char <= "\U000e007f"  # tags of subdivision flags
        or char == "\u200d"  # zero-width joiner
    )


def _yaml_hint(value: Any) -> str:
    if isinstance(value, bool):
        return " (YAML reads yes, no, on, off as true or false: quote the word)"
    return ""


def _shown(value: Any) -> str:
    text = repr(value)
    if len(text) > _SHOWN_LENGTH:
        return text[: _SHOWN_LENGTH - 1] + "…"
    return text


def _brief(value: Any) -> str:
    if isinstance(value, dict):
        return f"{len(value)} values"
    if isinstance(value, list):
        return "/".join(_brief(item) for item in value)
    if isinstance(value, str) and value and value == value.strip() and "," not in value:
        return value
    return repr(value)


CATALOGUE: dict[str, str] = {name: _KINDS[name].summary for name in sorted(_KINDS)}
"""Every converter by name, with a one-line description of it and its arguments."""
