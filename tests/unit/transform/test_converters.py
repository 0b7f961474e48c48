from __future__ import annotations

import datetime as dt
import socket
from pathlib import Path
from typing import Any

import pytest

from lobflows import errors
from lobflows.transform import converters


def convert(value: Any, *chain: str | dict[str, Any]) -> Any:
    return converters.apply_chain(value, converters.parse_chain(list(chain)))


def refusal(value: Any, *chain: str | dict[str, Any]) -> str:
    with pytest.raises(converters.ConversionError) as caught:
        convert(value, *chain)
    return str(caught.value)


def load_error(*chain: Any) -> str:
    with pytest.raises(ValueError) as caught:
        converters.parse_chain(list(chain))
    return str(caught.value)


# -- parse_chain, apply_chain and null -----------------------------------------


def test_parse_chain_accepts_names_argument_mappings_and_scalar_shorthands():
    chain = converters.parse_chain(
        ["trim", {"truncate": 40}, {"date": {"format": "%d/%m/%Y"}}, {"split": ";"}]
    )

    assert [converter.name for converter in chain] == [
        "trim",
        "truncate",
        "date",
        "split",
    ]
    assert chain[0].args is None
    assert chain[1].args == converters.TruncateArguments(length=40)
    assert chain[3].args == converters.SplitArguments(separator=";")


def test_parse_chain_returns_nothing_for_no_converters():
    assert converters.parse_chain(None) == []
    assert converters.parse_chain([]) == []


def test_parse_chain_lists_known_converters_when_a_name_is_unknown():
    message = load_error("trim", "dat")

    assert "converter 2" in message
    assert "unknown converter 'dat'" in message
    assert "did you mean date?" in message
    for name in converters.CATALOGUE:
        assert name in message


@pytest.mark.parametrize(
    ("chain", "expected"),
    [
        # a string where a number is needed
        ({"truncate": "forty"}, "length: input should be a valid integer"),
        # a misspelt argument, with the accepted ones
        ({"date": {"fromat": "%d"}}, "fromat: unknown argument (accepted: format"),
        # a required argument left out
        ({"money": {"locale": "de_DE"}}, "currency: required"),
        # strptime cannot read this directive
        ({"date": "%Q"}, "'Q' is a bad directive"),
        ({"datetime": {"timezone": "Europe/Berln"}}, "unknown IANA time zone"),
        ({"number": "xx_YY"}, "unknown locale 'xx_YY'"),
        ({"money": "EURO"}, "unknown currency 'EURO'"),
        ({"phone": "XX"}, "unknown phone region 'XX'"),
        ({"fold": "x"}, "unknown converter 'fold'"),
        # two keys in one item
        ({"trim": None, "upper": None}, "expected a name or a one-key mapping"),
        # arguments on a converter that takes none
        ({"trim": 1}, "takes no arguments, got 1"),
        # no shorthand where two arguments are needed
        ({"replace": "x"}, "expected a mapping of old, new"),
        # YAML reads an unquoted yes as true
        ({"boolean": {"true": [True]}}, "quote the word"),
        ({"enum": [True, "maybe"]}, "keys must be text or whole numbers"),
        ({"boolean": {"true": ["ja"], "false": ["JA"]}}, "both true and false: ja"),
        ({"format_number": {"locale": "de", "format": "abc"}}, "no digit placeholder"),
    ],
)
def test_parse_chain_refuses_bad_arguments_in_one_line(chain: Any, expected: str):
    message = load_error(chain)

    assert expected in message
    assert "\n" not in message


def test_parse_chain_refuses_a_format_without_offset_when_no_timezone_is_given():
    message = load_error({"datetime": {"format": "%d.%m.%Y %H:%M"}})

    assert "timezone is required" in message


def test_parse_chain_refuses_something_other_than_a_list():
    with pytest.raises(ValueError, match="must be a list"):
        converters.parse_chain("trim")  # type: ignore[arg-type]


def test_apply_chain_runs_converters_in_order():
    assert convert("  Zoë  ", "trim", "upper") == "ZOË"
    assert convert("a, b ,, c", "split", {"join": "|"}) == "a|b|c"


def test_apply_chain_skips_the_rest_once_a_value_is_null():
    assert convert("   ", "trim", "blank_as_null", "upper", "number") is None


def test_apply_chain_applies_default_to_null_and_goes_on():
    # blank text turns null, default replaces it, and upper runs on that
    assert convert("   ", "blank_as_null", "trim", {"default": "n/a"}, "upper") == "N/A"
    assert convert(None, {"default": 0}, {"round": 0}) == 0


def test_default_keeps_a_present_value_and_fills_blank_text():
    assert convert("x", {"default": "y"}) == "x"
    assert convert("  ", {"default": "y"}) == "y"
    assert convert(0, {"default": 5}) == 0  # zero is a value, not a gap


def test_converter_refuses_empty_text_with_a_hint_where_null_was_meant():
    message = refusal("", "number")

    assert message.startswith("expected a number like 1234.56")
    assert "got ''" in message
    assert "blank_as_null" in message


def test_conversion_error_is_a_step_input_error_naming_the_converter():
    with pytest.raises(errors.StepInputError) as caught:
        convert("soon", "date")

    assert isinstance(caught.value, converters.ConversionError)
    assert caught.value.converter == "date"
    assert "field" not in str(caught.value)


def test_describe_lists_only_the_arguments_given():
    chain = converters.parse_chain(
        [
            "trim",
            {"datetime": {"format": "%d/%m/%Y %H:%M", "timezone": "Europe/Berlin"}},
            {"join": ", "},
            {"enum": ["a", "b"]},
            "lower",
        ]
    )

    assert [converter.describe() for converter in chain] == [
        "trim",
        "datetime (format %d/%m/%Y %H:%M, timezone Europe/Berlin)",
        "join (separator ', ')",
        "enum (values a/b)",
        "lower",
    ]


def test_catalogue_describes_every_converter_in_one_line():
    assert set(converters.CATALOGUE) >= {
        "trim",
        "date",
        "datetime",
        "money",
        "phone",
        "email",
        "enum",
        "lookup",
        "default",
    }
    for name, line in converters.CATALOGUE.items():
        assert line.startswith(name)
        assert "\n" not in line


# -- text ----------------------------------------------------------------------


def test_text_converters_refuse_values_that_are_not_text():
    message = refusal(12, "trim")

    assert message == "expected text, got 12; put text before it to convert"


def test_trim_keeps_empty_text_empty_and_blank_as_null_makes_it_null():
    assert convert("", "trim") == ""
    assert convert(" \t\n", "blank_as_null") is None
    assert convert(" x ", "blank_as_null") == " x "
    assert convert(0, "blank_as_null") == 0


def test_lower_without_locale_follows_python_rules_for_dotted_i():
    # Python lowers İ to i plus a combining dot above (U+0307)
    assert convert("İSTANBUL", "lower") == "i\u0307stanbul"


def test_lower_and_upper_in_turkish_pair_dotted_and_dotless_i():
    assert convert("İSTANBUL IRMAK", {"lower": "tr"}) == "istanbul ırmak"
    assert convert("istanbul ılık", {"upper": {"locale": "tr"}}) == "İSTANBUL ILIK"
    assert convert("istanbul ılık", "upper") == "ISTANBUL ILIK"


def test_title_and_casefold_follow_python_rules():
    assert convert("zoë o'neil", "title") == "Zoë O'Neil"
    assert convert("Straße", "casefold") == "strasse"


def test_split_trims_parts_and_drops_empty_ones():
    assert convert(" a, b ,,c, ", "split") == ["a", "b", "c"]
    assert convert("a;b", {"split": ";"}) == ["a", "b"]
    assert convert("", "split") == []


def test_join_writes_plain_values_and_leaves_out_null_items():
    assert convert(["a", 1, None, True, 2.0], "join") == "a, 1, true, 2"
    assert "expected a list" in refusal("a", "join")


@pytest.mark.parametrize(
    ("text", "slug"),
    [
        ("Zoë Ñúñez", "zoe-nunez"),
        ("  Øresund & Łódź  ", "oresund-lodz"),
        ("Straße 12", "strasse-12"),
        ("Ærø—Über!!", "aero-uber"),
        # what is not Latin separates words instead of gluing them
        ("Tokyo東京Osaka 👍", "tokyo-osaka"),
    ],
)
def test_slug_folds_accents_to_ascii(text: str, slug: str):
    assert convert(text, "slug") == slug


def test_slug_refuses_text_with_nothing_left():
    assert "Latin letters or digits" in refusal("日本", "slug")


@pytest.mark.parametrize(
    ("text", "length", "expected"),
    [
        ("Zoë Ñúñez", 3, "Zoë"),
        # thumbs up + skin tone is one character on screen
        ("ok👍🏽", 3, "ok"),
        ("ok👍🏽", 4, "ok👍🏽"),
        # e + combining acute accent stays whole
        ("cafe\u0301", 4, "caf"),
        # a flag is a pair of regional indicators
        ("🇩🇪🇫🇷", 3, "🇩🇪"),
        # a family joined with zero-width joiners
        ("a👩\u200d👧", 2, "a"),
        ("short", 40, "short"),
    ],
)
def test_truncate_never_splits_a_character_on_screen(
    text: str, length: int, expected: str
):
    assert convert(text, {"truncate": length}) == expected


def test_replace_replaces_every_occurrence():
    assert convert("a-b-c", {"replace": {"old": "-", "new": "/"}}) == "a/b/c"
    assert convert("a-b", {"replace": {"old": "-"}}) == "ab"


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (12, "12"),
        (12.0, "12"),  # spreadsheets read whole numbers as floats
        (1.5, "1.5"),
        (True, "true"),
        (dt.date(2026, 12, 31), "2026-12-31"),
        ("x", "x"),
    ],
)
def test_text_writes_plain_values(value: Any, text: str):
    assert convert(value, "text") == text


def test_text_refuses_lists():
    assert "expected a plain value" in refusal([1], "text")


# -- dates and times -----------------------------------------------------------


def test_date_reads_the_declared_format_and_writes_iso():
    assert convert("31/12/2026", {"date": {"format": "%d/%m/%Y"}}) == "2026-12-31"


def test_date_refuses_month_first_text_under_a_day_first_format():
    message = refusal("12/31/2026", {"date": {"format": "%d/%m/%Y"}})

    assert message == (
        "expected a date like 31/12/2026 (format %d/%m/%Y), got '12/31/2026'"
    )


def test_date_reads_iso_by_default_and_writes_an_output_format():
    assert convert("2026-12-31", {"date": {"output": "%d.%m.%Y"}}) == "31.12.2026"
    assert "like 2026-12-31 (ISO 8601)" in refusal("31.12.2026", "date")


def test_date_refuses_a_timestamp_whose_day_depends_on_the_zone():
    assert "expected a date like" in refusal("2026-12-31T23:30:00Z", "date")


def test_datetime_converts_an_offset_to_utc_by_default():
    value = "2026-07-01T12:00:00+02:00"

    assert convert(value, "datetime") == "2026-07-01T10:00:00+00:00"


def test_datetime_reads_local_time_in_the_given_zone():
    chain = {"datetime": {"format": "%d.%m.%Y %H:%M", "timezone": "Europe/Berlin"}}

    assert convert("01.07.2026 12:00", chain) == "2026-07-01T10:00:00+00:00"


def test_datetime_writes_in_the_output_zone_and_format():
    chain = {
        "datetime": {
            "output_timezone": "America/New_York",
            "output": "%Y-%m-%d %H:%M %Z",
        }
    }

    assert convert("2026-07-01T12:00:00Z", chain) == "2026-07-01 08:00 EDT"


def test_datetime_refuses_a_naive_time_without_a_timezone():
    message = refusal("2026-07-01T12:00:00", "datetime")

    assert "without one" in message
    assert "give a timezone" in message


def test_datetime_refuses_a_time_in_the_spring_forward_gap():
    chain = {"datetime": {"timezone": "Europe/Berlin"}}

    message = refusal("2026-03-29T02:30", chain)

    assert message == (
        "expected a time that exists in Europe/Berlin, got 2026-03-29T02:30:00: "
        "the clocks there jump from 02:00 to 03:00 on 2026-03-29"
    )


@pytest.mark.parametrize(
    ("fold", "expected"),
    [
        ("earlier", "2026-10-25T00:30:00+00:00"),  # still summer time, +02:00
        ("later", "2026-10-25T01:30:00+00:00"),  # winter time again, +01:00
    ],
)
def test_datetime_picks_the_fold_of_a_time_that_happens_twice(fold: str, expected: str):
    chain = {"datetime": {"timezone": "Europe/Berlin", "fold": fold}}

    assert convert("2026-10-25T02:30", chain) == expected


def test_datetime_takes_the_earlier_of_an_ambiguous_time_by_default():
    chain = {"datetime": {"timezone": "Europe/Berlin"}}

    assert convert("2026-10-25T02:30", chain) == "2026-10-25T00:30:00+00:00"


def test_datetime_refuses_an_ambiguous_time_when_fold_is_error():
    chain = {"datetime": {"timezone": "Europe/Berlin", "fold": "error"}}

    message = refusal("2026-10-25T02:30", chain)

    assert "happens twice (at +02:00, then at +01:00)" in message
    assert "set fold to earlier or later" in message


def test_datetime_leaves_an_unambiguous_time_alone_when_fold_is_error():
    chain = {"datetime": {"timezone": "Europe/Berlin", "fold": "error"}}

    assert convert("2026-10-25T04:30", chain) == "2026-10-25T03:30:00+00:00"


def test_epoch_reads_milliseconds_exactly():
    chain = {"epoch": "milliseconds"}

    assert convert(1767225600123, chain) == "2026-01-01T00:00:00.123000+00:00"
    assert convert("1767225600000", chain) == "2026-01-01T00:00:00+00:00"


def test_epoch_reads_seconds_by_default_and_hints_at_milliseconds():
    assert convert(1767225600, "epoch") == "2026-01-01T00:00:00+00:00"
    assert "is it in milliseconds?" in refusal(1767225600123, "epoch")


def test_epoch_refuses_a_boolean():
    assert "expected a number, got True" in refusal(True, "epoch")


def test_to_epoch_counts_whole_units_since_1970():
    value = "2026-01-01T01:00:00.123+01:00"

    assert convert(value, {"to_epoch": "milliseconds"}) == 1767225600123
    assert convert(value, "to_epoch") == 1767225600


def test_to_epoch_refuses_a_naive_time_without_a_timezone():
    assert "give a timezone" in refusal("2026-01-01T00:00:00", "to_epoch")
    chain = {"to_epoch": {"timezone": "Europe/Berlin"}}
    assert convert("2026-01-01T01:00:00", chain) == 1767225600


# -- numbers -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "locale", "number"),
    [
        ("1.234,56", "de_DE", 1234.56),
        ("1,234.56", "en_US", 1234.56),
        ("1234,5", "de_DE", 1234.5),
        ("-1.000", "de_DE", -1000),
        # people type a plain space where French groups with a narrow one
        ("1 234,56", "fr_FR", 1234.56),
    ],
)
def test_number_reads_text_written_for_a_locale(text: str, locale: str, number: Any):
    result = convert(text, {"number": locale})

    assert result == number
    assert type(result) is type(number)


@pytest.mark.parametrize(
    ("text", "locale"),
    [
        ("1,234.56", "de_DE"),  # would be misread as 1.23456
        ("1.234,56", "en_US"),
        ("1.23", "de_DE"),  # a group of two digits
    ],
)
def test_number_refuses_text_written_for_another_locale(text: str, locale: str):
    message = refusal(text, {"number": locale})

    assert f"(locale {locale}), got {text!r}" in message


def test_number_without_locale_reads_plain_numbers_only():
    assert convert("1234.50", "number") == 1234.5
    assert convert("12.00", "number") == 12
    assert convert(3, "number") == 3
    assert "give a locale" in refusal("1,234.56", "number")
    assert "expected a number like" in refusal("1_000", "number")
    assert "expected a number like" in refusal("NaN", "number")
    assert "expected a number, got True" in refusal(True, "number")


def test_integer_refuses_fractions():
    assert convert("1.000", {"integer": "de_DE"}) == 1000
    assert convert(12.0, "integer") == 12
    assert refusal("12.5", "integer") == "expected a whole number, got '12.5'"


@pytest.mark.parametrize(
    ("value", "chain", "amount"),
    [
        # JPY has no minor unit; half up makes .5 a whole yen more
        (1234.5, {"money": "JPY"}, "1235"),
        (1233.5, {"money": "JPY"}, "1234"),
        ("1234.567", {"money": "EUR"}, "1234.57"),
        (10.5, {"money": "EUR"}, "10.50"),
        # the float 2.675 is read as written, not as 2.67499999…
        (2.675, {"money": "EUR"}, "2.68"),
        ("1.234,565", {"money": {"currency": "EUR", "locale": "de_DE"}}, "1234.57"),
        # banker's rounding on request
        (2.665, {"money": {"currency": "EUR", "rounding": "half_even"}}, "2.66"),
        (-0.001, {"money": "EUR"}, "0.00"),  # no negative zero
        ("-5.005", {"money": "usd"}, "-5.01"),
    ],
)
def test_money_rounds_half_up_to_the_currency_minor_unit(
    value: Any, chain: dict[str, Any], amount: str
):
    assert convert(value, chain) == amount


def test_money_refuses_amounts_too_long_to_round_exactly():
    assert "at most 28 digits" in refusal("1e30", {"money": "EUR"})
    assert "at most 28 digits" in refusal(1e300, {"round": 2})


def test_format_number_writes_for_a_locale():
    assert convert(1234.5, {"format_number": "de_DE"}) == "1.234,5"
    chain = {"format_number": {"locale": "de_DE", "format": "#,##0.00"}}
    assert convert("1234.5", chain) == "1.234,50"


@pytest.mark.parametrize(
    ("value", "chain", "expected"),
    [
        (2.5, "round", 3),  # half up, not Python's half even
        (2.675, {"round": 2}, 2.68),
        (1250, {"round": -2}, 1300),
        (-2.5, "round", -3),
    ],
)
def test_round_rounds_half_up(value: Any, chain: Any, expected: Any):
    result = convert(value, chain)

    assert result == expected
    assert type(result) is type(expected)


def test_round_and_abs_refuse_text():
    assert "expected a number, got '2.5'" in refusal("2.5", "round")
    assert convert(-2.5, "abs") == 2.5
    assert "expected a number" in refusal("-1", "abs")


# -- booleans ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Y", True),
        ("on", True),
        (" TRUE ", True),
        ("0", False),
        ("no", False),
        (1, True),
        (0, False),
        (False, False),
    ],
)
def test_boolean_reads_common_english_spellings(value: Any, expected: bool):
    assert convert(value, "boolean") is expected


@pytest.mark.parametrize("value", ["nope", "", 2, "ja"])
def test_boolean_refuses_unknown_spellings_listing_the_accepted(value: Any):
    message = refusal(value, "boolean")

    assert "expected true, yes, y, on, 1, t (true) or false, no" in message


def test_boolean_takes_its_own_word_lists():
    chain = {"boolean": {"true": ["ja", "oui"], "false": ["nein", "non"]}}

    assert convert("JA", chain) is True
    assert convert("non", chain) is False
    assert "expected ja, oui (true) or nein, non (false)" in refusal("yes", chain)


# -- phone and email -----------------------------------------------------------


def test_phone_writes_e164_from_a_national_number():
    assert convert("030 1234567", {"phone": "DE"}) == "+49301234567"
    assert convert("+49 (0)30 1234567", "phone") == "+49301234567"


def test_phone_writes_other_styles_on_request():
    chain = {"phone": {"region": "DE", "output": "international"}}

    assert convert("030 1234567", chain) == "+49 30 1234567"


def test_phone_refuses_invalid_numbers():
    message = refusal("030 12", {"phone": "DE"})

    assert message == "expected a valid phone number in region DE, got '030 12'"


def test_phone_refuses_a_national_number_without_a_region():
    message = refusal("030 1234567", "phone")

    assert "with a +country code" in message


def test_email_lowercases_the_domain_and_keeps_the_local_part():
    # email-validator lower-cases the domain only: some servers tell Ada
    # from ada in the local part.
    assert convert(" Ada@Example.COM ", "email") == "Ada@example.com"
    assert convert("Zoë@Bücher.DE", "email") == "Zoë@bücher.de"


def test_email_checks_syntax_without_touching_the_network(
    monkeypatch: pytest.MonkeyPatch,
):
    def no_network(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the email converter opened a connection")

    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)

    assert convert("ada@no-such-domain.example.org", "email") == (
        "ada@no-such-domain.example.org"
    )


@pytest.mark.parametrize("value", ["ada@@example.com", "ada", "ada@example"])
def test_email_refuses_invalid_addresses_with_the_reason(value: str):
    message = refusal(value, "email")

    assert message.startswith(f"expected an email address, got {value!r}: ")
    assert len(message) > len(f"expected an email address, got {value!r}: ")


# -- lookup, enum --------------------------------------------------------------


def test_lookup_translates_values():
    chain = {"lookup": {"values": {"A": "active", "I": "inactive", 1: "one"}}}

    assert convert("A", chain) == "active"
    assert convert(" I ", chain) == "inactive"
    assert convert(1, chain) == "one"
    assert convert("1", chain) == "one"


def test_enum_refuses_an_unknown_value_listing_a_few_accepted():
    chain = {"enum": ["red", "green", "blue", "cyan", "magenta", "yellow"]}

    message = refusal("purple", chain)

    assert message == (
        "expected one of 'red', 'green', 'blue', 'cyan', 'magenta', … (6 values), "
        "got 'purple'"
    )


def test_enum_is_case_sensitive_unless_told_and_then_returns_the_listed_spelling():
    assert "got 'RED'" in refusal("RED", {"enum": ["red", "green"]})
    chain = {"enum": {"values": ["Red", "Green"], "case_insensitive": True}}
    assert convert("rED", chain) == "Red"


def test_lookup_uses_the_default_for_unknown_values_even_a_null_default():
    assert convert("x", {"lookup": {"values": {"a": 1}, "default": 0}}) == 0
    assert convert("x", {"lookup": {"values": {"a": 1}, "default": None}}) is None


def test_lookup_refuses_keys_that_read_the_same():
    chain = {"lookup": {"values": {"a": 1, "A": 2}, "case_insensitive": True}}

    assert "'A' and another key read the same" in load_error(chain)


def test_every_converter_is_documented():
    page = (Path(__file__).resolve().parents[3] / "docs" / "mappings.md").read_text()
    missing = [
        name
        for name in converters.CATALOGUE
        if f"- `{name}`" not in page and f"- `{name} {{" not in page
    ]
    assert missing == []
