"""Files of records, read and written for real: encodings, delimiters, XLSX, rejects."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import orjson
import pytest
import typer
from openpyxl import Workbook
from typer.testing import CliRunner

from lobflows.cli import bulk as bulk_cli
from lobflows.spec import loader
from lobflows.transform import bulk, mapper

pytestmark = pytest.mark.integration

CONTACTS = """\
mapping: contacts
source: rows of a CRM export
target: contact records
fields:
  name:
    from: Name
    convert: [trim, title]
    required: true
  email:
    from: E-Mail
    convert: [trim, email]
    required: true
  city:
    from: City
    convert: [trim]
"""


def records(path: Path, **options) -> list[tuple[int, object]]:
    return list(bulk.read_records(path, **options))


def read_jsonl(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


@pytest.fixture
def contacts(tmp_path: Path) -> mapper.Mapper:
    folder = tmp_path / "mappings"
    folder.mkdir()
    (folder / "contacts.yaml").write_text(CONTACTS)
    registry = loader.load_mappings(tmp_path)
    return mapper.Mapper(registry["contacts"], registry)


# -- CSV -----------------------------------------------------------------------


def test_read_records_drops_a_utf8_bom_from_the_first_header(tmp_path: Path):
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbfName,City\nRen\xc3\xa9e,K\xc3\xb6ln\n")

    assert records(path) == [(2, {"Name": "Renée", "City": "Köln"})]


def test_read_records_reads_utf16_with_a_bom_as_excel_unicode_text(tmp_path: Path):
    path = tmp_path / "unicode.txt"
    path.write_bytes("Name\tCity\r\nRenée\tKöln\r\n".encode("utf-16"))

    assert records(path, format="tsv") == [(2, {"Name": "Renée", "City": "Köln"})]


def test_read_records_reads_windows_1252_when_the_file_is_not_utf8(tmp_path: Path):
    path = tmp_path / "excel.csv"
    path.write_bytes("Name;Price\nRené;12 €\n".encode("cp1252"))

    assert records(path) == [(2, {"Name": "René", "Price": "12 €"})]


def test_read_records_falls_back_to_latin1_when_not_windows_1252(tmp_path: Path):
    # 0x81 is undefined in Windows-1252; Latin-1 maps every byte.
    path = tmp_path / "latin1.csv"
    path.write_bytes("Name,Note\nJosé,a\x81b\n".encode("latin-1"))

    assert records(path) == [(2, {"Name": "José", "Note": "a\x81b"})]


def test_read_records_uses_the_encoding_given_over_detection(tmp_path: Path):
    path = tmp_path / "greek.csv"
    path.write_bytes("Name\nΑθήνα\n".encode("cp1253"))

    assert records(path, encoding="cp1253") == [(2, {"Name": "Αθήνα"})]


def test_read_records_sniffs_a_semicolon_delimiter(tmp_path: Path):
    path = tmp_path / "semicolon.csv"
    path.write_text("name;amount;city\nAda;1.234,56;Berlin\nBob;7,00;Bonn\n")

    assert records(path) == [
        (2, {"name": "Ada", "amount": "1.234,56", "city": "Berlin"}),
        (3, {"name": "Bob", "amount": "7,00", "city": "Bonn"}),
    ]


def test_read_records_takes_the_delimiter_given(tmp_path: Path):
    path = tmp_path / "pipes.csv"
    path.write_text("a|b\n1|2,5\n")

    assert records(path, delimiter="|") == [(2, {"a": "1", "b": "2,5"})]


def test_read_records_reads_tsv_by_its_suffix(tmp_path: Path):
    path = tmp_path / "table.tsv"
    path.write_text("a\tb\n1;2\t3,4\n")

    assert records(path) == [(2, {"a": "1;2", "b": "3,4"})]


def test_read_records_counts_rows_not_lines_when_a_field_holds_a_newline(
    tmp_path: Path,
):
    path = tmp_path / "notes.csv"
    path.write_text('id,note\n1,"first line\nsecond line"\n2,plain\n')

    assert records(path) == [
        (2, {"id": "1", "note": "first line\nsecond line"}),
        (3, {"id": "2", "note": "plain"}),
    ]


def test_read_records_refuses_a_repeated_header_naming_both_columns(tmp_path: Path):
    path = tmp_path / "twice.csv"
    path.write_text("id,email,name,email\n1,a@x.org,A,b@x.org\n")

    with pytest.raises(bulk.RecordFileError) as raised:
        records(path)

    assert raised.value.row == 1
    assert "column D (#4) is named 'email' like column B (#2)" in str(raised.value)


def test_read_records_refuses_a_blank_header_cell(tmp_path: Path):
    path = tmp_path / "blank.csv"
    path.write_text("id,,name\n1,2,3\n")

    with pytest.raises(bulk.RecordFileError, match=r"column B \(#2\) has no name"):
        records(path)


def test_read_records_leaves_the_missing_cells_of_a_short_row_absent(tmp_path: Path):
    path = tmp_path / "short.csv"
    path.write_text("id,name,city\n1,Ada\n2,,Bonn\n")

    assert records(path) == [
        (2, {"id": "1", "name": "Ada"}),
        (3, {"id": "2", "name": "", "city": "Bonn"}),
    ]


def test_read_records_rejects_a_long_row_with_its_row_number(tmp_path: Path):
    path = tmp_path / "long.csv"
    path.write_text("id,name\n1,Ada,extra\n2,Bob,\n")

    found = records(path)

    assert found[0][0] == 2
    assert isinstance(found[0][1], bulk.Unreadable)
    assert "3 cells" in found[0][1].reason
    # An empty cell past the header is a trailing delimiter, not data.
    assert found[1] == (3, {"id": "2", "name": "Bob"})


def test_read_records_skips_empty_rows_but_counts_them(tmp_path: Path):
    path = tmp_path / "gaps.csv"
    path.write_text("id,name\n1,Ada\n\n,\n4,Dan\n")

    assert records(path) == [
        (2, {"id": "1", "name": "Ada"}),
        (5, {"id": "4", "name": "Dan"}),
    ]


def test_read_records_names_the_row_where_the_encoding_given_fails(tmp_path: Path):
    path = tmp_path / "mixed.csv"
    path.write_bytes(b"id\n1\n2\n\xff\n")

    with pytest.raises(bulk.RecordFileError, match="is not utf-8 text"):
        records(path, encoding="utf-8")


def test_read_records_refuses_an_unknown_suffix(tmp_path: Path):
    with pytest.raises(bulk.RecordFileError, match="suffix '.txt'"):
        bulk.read_records(tmp_path / "data.txt")


# -- XLSX ----------------------------------------------------------------------


def write_workbook(path: Path) -> None:
    workbook = Workbook()
    first = workbook.active
    first.title = "People"
    first.append(["Name", "Born", "Seen", "Count", "Note"])
    first.append(
        ["Ada", dt.date(1815, 12, 10), dt.datetime(2026, 3, 29, 14, 30), 3, None]
    )
    first.append([None, None, None, None, None])
    first.append(["Bob", dt.date(2001, 2, 3), None, 2.5, "x"])
    second = workbook.create_sheet("Other")
    second.append(["Key"])
    second.append(["k1"])
    workbook.save(path)


def test_read_records_reads_the_first_sheet_of_a_workbook_with_iso_dates(
    tmp_path: Path,
):
    path = tmp_path / "people.xlsx"
    write_workbook(path)

    assert records(path) == [
        (
            2,
            {
                "Name": "Ada",
                "Born": "1815-12-10",
                "Seen": "2026-03-29T14:30:00",
                "Count": 3,
                "Note": None,
            },
        ),
        (
            4,
            {
                "Name": "Bob",
                "Born": "2001-02-03",
                "Seen": None,
                "Count": 2.5,
                "Note": "x",
            },
        ),
    ]


def test_read_records_reads_the_sheet_named(tmp_path: Path):
    path = tmp_path / "people.xlsx"
    write_workbook(path)

    assert records(path, sheet="Other") == [(2, {"Key": "k1"})]
    with pytest.raises(
        bulk.RecordFileError, match="no sheet named 'Nope'; sheets: 'People', 'Other'"
    ):
        records(path, sheet="Nope")


def test_read_records_refuses_a_file_that_is_no_workbook(tmp_path: Path):
    path = tmp_path / "fake.xlsx"
    path.write_text("Name\nAda\n")

    with pytest.raises(bulk.RecordFileError, match="not readable as XLSX"):
        records(path)


# -- JSON Lines ------------------------------------------------------------------


def test_read_records_turns_a_bad_json_line_into_an_unreadable_record(tmp_path: Path):
    path = tmp_path / "events.jsonl"
    path.write_text('{"id": 1}\n\n{"id": 2,\n[1, 2]\n{"id": 5}\n')

    found = records(path)

    assert [row for row, _ in found] == [1, 3, 4, 5]
    assert found[0][1] == {"id": 1}
    assert isinstance(found[1][1], bulk.Unreadable)
    assert found[1][1].reason.startswith("not valid JSON")
    assert found[2][1] == bulk.Unreadable("expected a JSON object, got list")
    assert found[3][1] == {"id": 5}


# -- writers and map_file ----------------------------------------------------------


def test_map_file_writes_mapped_records_and_rejects_with_row_numbers(
    tmp_path: Path, contacts: mapper.Mapper
):
    # Given a CSV with one good row, one without name, one with a bad email
    source = tmp_path / "crm.csv"
    source.write_text(
        "Name;E-Mail;City\n"
        "  ada lovelace ; ADA@Example.COM ; London \n"
        ";nobody@example.com;Paris\n"
        "Bob;not-an-email;Bonn\n"
        "carl;carl@example.org\n"
    )
    out, rejects = tmp_path / "out.jsonl", tmp_path / "rejects.jsonl"

    # When it is mapped
    summary = bulk.map_file(contacts, source, out, rejects)

    # Then good records are written, the others rejected with their rows
    assert (summary.read, summary.written, summary.rejected, summary.dropped) == (
        4,
        2,
        2,
        0,
    )
    assert read_jsonl(out) == [
        {"name": "Ada Lovelace", "email": "ADA@example.com", "city": "London"},
        {"name": "Carl", "email": "carl@example.org"},
    ]
    rejected = read_jsonl(rejects)
    assert [(r["row"], r["field"]) for r in rejected] == [(3, "name"), (4, "email")]
    assert "requires a value" in rejected[0]["reason"]
    assert "not-an-email" in rejected[1]["reason"]


def test_map_file_rejects_unreadable_json_lines_and_goes_on(
    tmp_path: Path, contacts: mapper.Mapper
):
    source = tmp_path / "in.jsonl"
    source.write_text('{"Name": "ada", "E-Mail": "a@example.com"}\nnot json\n')
    out, rejects = tmp_path / "out.csv", tmp_path / "rejects.jsonl"

    summary = bulk.map_file(contacts, source, out, rejects)

    assert summary.written == 1 and summary.rejected == 1
    assert out.read_bytes() == b"name,email,city\r\nAda,a@example.com,\r\n"
    [reject] = read_jsonl(rejects)
    assert (reject["row"], reject["field"]) == (2, "(record)")


def test_map_file_writes_nothing_when_the_input_cannot_be_read(
    tmp_path: Path, contacts: mapper.Mapper
):
    source = tmp_path / "twice.csv"
    source.write_text("Name,Name\nAda,Ada\n")
    out, rejects = tmp_path / "out.jsonl", tmp_path / "rejects.jsonl"

    with pytest.raises(bulk.RecordFileError):
        bulk.map_file(contacts, source, out, rejects)

    assert sorted(p.name for p in tmp_path.iterdir()) == ["mappings", "twice.csv"]


def test_map_file_keeps_the_old_output_when_reading_fails_midway(
    tmp_path: Path, contacts: mapper.Mapper
):
    source = tmp_path / "broken.csv"
    source.write_bytes(b"Name,E-Mail\n" + b"ada,a@example.com\n" * 5000 + b"\xff\n")
    out, rejects = tmp_path / "out.jsonl", tmp_path / "rejects.jsonl"
    out.write_text("old\n")

    with pytest.raises(bulk.RecordFileError):
        bulk.map_file(
            contacts, bulk.read_records(source, encoding="utf-8"), out, rejects
        )

    assert out.read_text() == "old\n"
    assert not rejects.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_map_file_counts_records_the_filter_drops(tmp_path: Path):
    (tmp_path / "mappings").mkdir()
    (tmp_path / "mappings" / "active.yaml").write_text(
        "mapping: active\nsource: s\ntarget: t\n"
        "filter: \"{{ record.active == 'yes' }}\"\n"
        "fields:\n  id: {from: id, convert: [integer]}\n"
    )
    registry = loader.load_mappings(tmp_path)
    active = mapper.Mapper(registry["active"], registry)
    source = tmp_path / "in.csv"
    source.write_text("id,active\n1,yes\n2,no\n3,yes\n")
    seen: list[int] = []

    summary = bulk.map_file(
        active, source, tmp_path / "o.jsonl", tmp_path / "r.jsonl", progress=seen.append
    )

    assert (summary.written, summary.dropped) == (2, 1)
    assert read_jsonl(tmp_path / "o.jsonl") == [{"id": 1}, {"id": 3}]
    assert seen == [3]


# -- the command ---------------------------------------------------------------


@pytest.fixture
def command() -> typer.Typer:
    app = typer.Typer()
    app.command("map")(bulk_cli.map_command)
    app.command("other")(lambda: None)  # so that "map" stays a sub-command
    return app


def test_map_command_maps_by_name_and_says_how_many(
    tmp_path: Path, contacts: mapper.Mapper, command: typer.Typer
):
    source = tmp_path / "in.csv"
    source.write_text("Name,E-Mail\nada,a@example.com\n")
    out = tmp_path / "out.jsonl"

    result = CliRunner().invoke(
        command,
        ["map", "contacts", str(source), "--out", str(out), "--flows", str(tmp_path)],
    )

    assert result.exit_code == 0, result.output
    assert "1 written" in result.output and "0 rejected" in result.output
    assert read_jsonl(out) == [{"name": "Ada", "email": "a@example.com"}]
    assert (tmp_path / "out.rejects.jsonl").read_bytes() == b""


def test_map_command_exits_1_and_says_so_when_records_are_rejected(
    tmp_path: Path, contacts: mapper.Mapper, command: typer.Typer
):
    source = tmp_path / "in.csv"
    source.write_text("Name,E-Mail\nada,a@example.com\nbob,bad\n")
    mapping = tmp_path / "mappings" / "contacts.yaml"

    result = CliRunner().invoke(
        command,
        [
            "map",
            str(mapping),
            str(source),
            "-o",
            str(tmp_path / "o.jsonl"),
            "--rejects",
            str(tmp_path / "r.jsonl"),
        ],
    )

    assert result.exit_code == 1
    assert "1 record(s) rejected" in result.output
    assert read_jsonl(tmp_path / "r.jsonl")[0]["row"] == 3


@pytest.mark.parametrize(
    ("arguments", "code", "message"),
    [
        # input missing
        (["contacts", "{tmp}/nope.csv"], 3, "no such file"),
        # mapping name unknown
        (["nope", "{tmp}/in.csv"], 3, "no mapping named 'nope'"),
        # header refused
        (["contacts", "{tmp}/twice.csv"], 2, "column B (#2) is named 'Name'"),
        # a bad delimiter
        (
            ["contacts", "{tmp}/in.csv", "--delimiter", ";;"],
            2,
            "expected one character",
        ),
    ],
)
def test_map_command_explains_what_it_cannot_do_without_a_traceback(
    tmp_path: Path,
    contacts: mapper.Mapper,
    command: typer.Typer,
    arguments,
    code,
    message,
):
    (tmp_path / "in.csv").write_text("Name,E-Mail\nada,a@example.com\n")
    (tmp_path / "twice.csv").write_text("Name,Name\nada,ada\n")
    given = [a.replace("{tmp}", str(tmp_path)) for a in arguments]

    result = CliRunner().invoke(
        command,
        ["map", *given, "-o", str(tmp_path / "o.jsonl"), "--flows", str(tmp_path)],
    )

    assert result.exit_code == code, result.output
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output
    assert not (tmp_path / "o.jsonl").exists()
