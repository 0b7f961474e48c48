"""Files of records in and out: CSV, TSV, XLSX and JSON Lines, in constant memory.

`read_records` streams a file as ``(row, record)`` pairs, numbering rows the
way a person counts them in a spreadsheet or an editor; `map_file` runs a
`Mapper` over them into an output file and a file of rejected records.
Nothing is half-written: each output goes to a temporary file beside its
target and is renamed into place only when the whole input has been read.

How the readers treat what they find:

- CSV and TSV: the first row names the fields; its cells are trimmed. A blank
  or repeated name is refused, except blank names at the end of the row
  (spreadsheets often export a trailing delimiter). A short row gives
  *absent* keys for its missing cells, not empty strings, so a mapping's
  ``on_missing`` applies to them; an empty cell is an empty string. A row with
  more non-empty cells than the header is rejected; extra empty cells are
  ignored. Rows with no text at all are skipped but still counted.
- XLSX: the first worksheet, or the one named; the same header rules; every
  column of the header is a key, an empty cell is ``None``. Dates and times
  come as ISO 8601 text; a date-time at midnight comes as a date.
- JSON Lines: one object per line; blank lines are skipped; a line that is
  not a JSON object becomes a rejected record, and reading goes on.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import datetime as dt
import io
import os
import secrets
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

import orjson

from lobflows import errors
from lobflows.transform import mapper as mapper_module

Record = dict[str, Any]
Progress = Callable[[int], None]

INPUT_FORMATS = ("csv", "tsv", "xlsx", "jsonl")
OUTPUT_FORMATS = ("jsonl", "csv", "tsv")
SUFFIXES = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".xlsx": "xlsx",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}
DELIMITERS = ",;\t|"
# How much of a CSV file encoding detection and delimiter sniffing look at.
SAMPLE_BYTES = 65_536
SNIFF_LINES = 20
# Records between two calls of the progress callback.
PROGRESS_EVERY = 1024


RecordFileError = errors.RecordFileError


@dataclass(frozen=True)
class Unreadable:
    """A row that could not be made into a record; mapping rejects it."""

    reason: str
    field: str = "(record)"


@dataclass(frozen=True)
class Summary:
    """What mapping a file gave."""

    read: int  # rows read, unreadable ones included (blank rows are not)
    written: int  # records written to the output
    rejected: int  # records written to the rejects file
    dropped: int  # records the mapping's filter left out
    seconds: float  # wall time, reading to renaming


# -- reading -----------------------------------------------------------------


def input_format(path: Path, given: str | None = None) -> str:
    """The format of an input file: the one given, else from its suffix."""
    return _format(path, given, INPUT_FORMATS, "input")


def read_records(
    path: Path,
    *,
    format: str | None = None,
    encoding: str | None = None,
    delimiter: str | None = None,
    sheet: str | None = None,
) -> Iterator[tuple[int, Record | Unreadable]]:
    """Stream ``(row number, record)`` pairs; a row that is no record is `Unreadable`.

    Rows count from 1 as a spreadsheet does, header included, so the first
    record of a CSV or XLSX file is row 2; in JSON Lines the row is the line.
    Raises RecordFileError, while iterating, when the file cannot be read.
    """
    kind = input_format(path, format)
    if kind == "xlsx":
        return _read_xlsx(path, sheet)
    if kind == "jsonl":
        return _read_jsonl(path, encoding)
    if kind == "tsv" and delimiter is None:
        delimiter = "\t"
    return _read_csv(path, encoding, delimiter)


def detect_encoding(sample: bytes) -> str:
    """The encoding of CSV bytes: BOM, else strict UTF-8, else Windows-1252, else Latin-1.

    Windows-1252 comes before Latin-1 because they differ only in 0x80–0x9F,
    which Latin-1 spends on control characters no text file contains, while
    Windows-1252 has €, „, “, ” and the like there.
    """
    if sample.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    for candidate in ("utf-8", "cp1252"):
        # Incremental, so a character cut at the end of the sample is no error.
        decoder = codecs.getincrementaldecoder(candidate)("strict")
        try:
            decoder.decode(sample, final=False)
        except UnicodeDecodeError:
            continue
        return candidate
    return "latin-1"


def sniff_delimiter(text: str) -> str:
    """The delimiter of the first lines of a CSV file among , ; tab and |."""
    lines = text.splitlines()[:SNIFF_LINES]
    try:
        return csv.Sniffer().sniff("\n".join(lines), delimiters=DELIMITERS).delimiter
    except csv.Error:
        # One column, or too few lines to tell: the header decides.
        header = lines[0] if lines else ""
        counts = {d: header.count(d) for d in DELIMITERS}
        best = max(counts, key=lambda d: counts[d])
        return best if counts[best] else ","


def _read_csv(
    path: Path, encoding: str | None, delimiter: str | None
) -> Iterator[tuple[int, Record | Unreadable]]:
    with _open_input(path) as raw:
        sample = raw.read(SAMPLE_BYTES)
        raw.seek(0)
        chosen = encoding or detect_encoding(sample)
        text = io.TextIOWrapper(raw, encoding=chosen, errors="strict", newline="")
        if delimiter is None:
            delimiter = sniff_delimiter(sample.decode(chosen, errors="replace"))
        rows = csv.reader(text, delimiter=delimiter)
        row = 0  # the last row read, for errors while reading the next
        try:
            header = _header(path, next(rows, []))
            width, row = len(header), 1
            for row, cells in enumerate(rows, start=2):
                if not any(cells):
                    continue
                if len(cells) > width and any(cells[width:]):
                    yield row, Unreadable(_too_long(len(cells), width), "(row)")
                    continue
                yield row, dict(zip(header, cells, strict=False))
        except UnicodeDecodeError:
            # The decoder reads ahead in blocks: the bad byte is near this row.
            message = f"is not {chosen} text (at this row or a little after)"
            raise RecordFileError(
                path, message + "; give the file's encoding", row=row + 1
            ) from None
        except csv.Error as exc:
            raise RecordFileError(
                path, f"not readable as CSV: {exc}", row=row + 1
            ) from None


def _too_long(cells: int, width: int) -> str:
    return f"has {cells} cells with text past the header's {width} columns"


def _header(path: Path, cells: Iterable[Any]) -> list[str]:
    """Field names from a header row: trimmed, none blank, none repeated."""
    names = ["" if cell is None else str(cell).strip() for cell in cells]
    while names and not names[-1]:
        names.pop()
    if not names:
        raise RecordFileError(path, "the first row, the header, is empty", row=1)
    seen: dict[str, int] = {}
    for index, name in enumerate(names):
        column = column_name(index)
        if not name:
            raise RecordFileError(
                path, f"column {column} has no name in the header", row=1
            )
        if name in seen:
            first = column_name(seen[name])
            raise RecordFileError(
                path,
                f"column {column} is named {name!r} like column {first}; "
                "field names must be unique",
                row=1,
            )
        seen[name] = index
    return names


def column_name(index: int) -> str:
    """A column as a spreadsheet names it, with its position: ``C (3rd)``."""
    letters, number = "", index + 1
    while number:
        number, rest = divmod(number - 1, 26)
        letters = chr(ord("A") + rest) + letters
    return f"{letters} (#{index + 1})"


def _read_xlsx(
    path: Path, sheet: str | None
) -> Iterator[tuple[int, Record | Unreadable]]:
    from openpyxl import load_workbook  # only XLSX needs it

    try:
        workbook = load_workbook(path, read_only=True, data_only=True)
    except FileNotFoundError:
        raise RecordFileError(path, "no such file") from None
    except Exception as exc:  # zipfile, XML and openpyxl errors alike
        raise RecordFileError(path, f"not readable as XLSX: {exc}") from None
    try:
        if sheet is not None and sheet not in workbook.sheetnames:
            known = ", ".join(repr(name) for name in workbook.sheetnames)
            raise RecordFileError(path, f"no sheet named {sheet!r}; sheets: {known}")
        worksheet = workbook[sheet] if sheet is not None else workbook.worksheets[0]
        # Some writers store wrong sheet dimensions; read what is there instead.
        worksheet.reset_dimensions()
        rows = worksheet.iter_rows(values_only=True)
        header = _header(path, next(rows, ()))
        yield from _xlsx_records(header, rows)
    finally:
        workbook.close()


def _xlsx_records(
    header: list[str], rows: Iterator[tuple[Any, ...]]
) -> Iterator[tuple[int, Record | Unreadable]]:
    width = len(header)
    for row, cells in enumerate(rows, start=2):
        if not any(cell is not None and cell != "" for cell in cells):
            continue
        if any(cell is not None for cell in cells[width:]):
            yield row, Unreadable(_too_long(len(cells), width), "(row)")
            continue
        values = [_cell_value(cell) for cell in cells[:width]]
        values.extend([None] * (width - len(values)))
        yield row, dict(zip(header, values, strict=True))


def _cell_value(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        if value.time() == dt.time(0) and value.tzinfo is None:
            return value.date().isoformat()
        return value.isoformat()
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return str(value)
    return value


def _read_jsonl(
    path: Path, encoding: str | None
) -> Iterator[tuple[int, Record | Unreadable]]:
    with _open_input(path) as raw:
        for row, line in enumerate(raw, start=1):
            if row == 1:
                line = line.removeprefix(codecs.BOM_UTF8)
            if not line.strip():
                continue
            yield row, _json_record(line, encoding)


def _json_record(line: bytes, encoding: str | None) -> Record | Unreadable:
    try:
        value = orjson.loads(line if encoding is None else line.decode(encoding))
    except (orjson.JSONDecodeError, UnicodeDecodeError) as exc:
        return Unreadable(f"not valid JSON: {exc}")
    if not isinstance(value, dict):
        return Unreadable(f"expected a JSON object, got {type(value).__name__}")
    return value


@contextlib.contextmanager
def _open_input(path: Path) -> Iterator[IO[bytes]]:
    try:
        file = path.open("rb")
    except FileNotFoundError:
        raise RecordFileError(path, "no such file") from None
    except OSError as exc:
        raise RecordFileError(path, f"cannot open: {exc.strerror}") from None
    with file:
        try:
            yield file
        except OSError as exc:
            raise RecordFileError(path, f"cannot read: {exc.strerror}") from None


# -- writing -----------------------------------------------------------------


def output_format(path: Path, given: str | None = None) -> str:
    """The format of an output file: the one given, else from its suffix."""
    return _format(path, given, OUTPUT_FORMATS, "output")


def _format(path: Path, given: str | None, known: tuple[str, ...], what: str) -> str:
    chosen = given or SUFFIXES.get(path.suffix.lower())
    if chosen is None or chosen not in known:
        expected = ", ".join(known)
        found = f"format {given!r}" if given else f"suffix {path.suffix or '(none)'!r}"
        raise RecordFileError(path, f"{what} {found} is not one of {expected}")
    return chosen


class AtomicFile:
    """A file written beside its target under a hidden name, renamed into place on commit."""

    def __init__(self, target: Path) -> None:
        self.target = target
        self.temporary = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
        try:
            # os.open with 0o666, so the file gets the umask's usual mode.
            descriptor = os.open(
                self.temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666
            )
        except OSError as exc:
            raise RecordFileError(target, f"cannot write: {exc.strerror}") from None
        self.file: IO[bytes] = os.fdopen(descriptor, "wb", buffering=1 << 20)

    def commit(self) -> None:
        """Flush to disk and rename over the target."""
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            os.replace(self.temporary, self.target)
        except OSError as exc:
            self.discard()
            raise RecordFileError(
                self.target, f"cannot write: {exc.strerror}"
            ) from None

    def discard(self) -> None:
        """Close and remove the temporary file; the target stays as it was."""
        self.file.close()
        with contextlib.suppress(FileNotFoundError):
            self.temporary.unlink()


def _json_default(value: Any) -> Any:
    # Decimal as text keeps every digit (money); anything else by its str.
    return str(value)


class JsonLinesWriter:
    """Records as JSON Lines, one object per line (UTF-8)."""

    def __init__(self, file: IO[bytes]) -> None:
        self._write = file.write

    def write(self, record: Record) -> None:
        self._write(
            orjson.dumps(
                record, default=_json_default, option=orjson.OPT_APPEND_NEWLINE
            )
        )

    def close(self) -> None:
        """Nothing to let go of: the file's owner closes it."""


class CsvWriter:
    """Records as CSV (UTF-8), one column per field; nested values as JSON text."""

    def __init__(
        self, file: IO[bytes], columns: list[str], delimiter: str = ","
    ) -> None:
        self._text = io.TextIOWrapper(
            file, encoding="utf-8", newline="", write_through=True
        )
        self._columns = columns
        self._attached = True
        self._writer = csv.writer(self._text, delimiter=delimiter)
        self._writer.writerow(columns)

    def write(self, record: Record) -> None:
        self._writer.writerow([_csv_cell(record.get(name)) for name in self._columns])

    def close(self) -> None:
        """Hand the binary file back, so that its owner may close it."""
        if self._attached:
            self._attached = False
            self._text.detach()


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float | Decimal):
        return value
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    return orjson.dumps(value, default=_json_default).decode()


# -- mapping a file ----------------------------------------------------------


def map_file(
    mapper: mapper_module.Mapper,
    source: Path | Iterable[tuple[int, Record | Unreadable]],
    out: Path,
    rejects: Path,
    *,
    out_format: str | None = None,
    progress: Progress | None = None,
) -> Summary:
    """Map every record of `source` (a file, or `read_records` pairs) into `out`.

    Rejected records go to `rejects` as JSON Lines of ``{row, field, reason}``.
    Both files appear only once the input has been read to its end; on any
    error neither is touched. Raises RecordFileError.
    """
    started = time.perf_counter()
    kind = output_format(out, out_format)
    records = read_records(source) if isinstance(source, Path) else source
    output = AtomicFile(out)
    try:
        refused = AtomicFile(rejects)
    except RecordFileError:
        output.discard()
        raise
    try:
        writer = _writer(kind, output.file, list(mapper.fields))
        try:
            counts = _map_all(
                mapper, records, writer, JsonLinesWriter(refused.file), progress
            )
        finally:
            writer.close()
    except BaseException:
        output.discard()
        refused.discard()
        raise
    output.commit()
    refused.commit()
    return Summary(
        read=counts.read,
        written=counts.written,
        rejected=counts.rejected,
        dropped=counts.dropped,
        seconds=time.perf_counter() - started,
    )


@dataclass
class _Counts:
    read: int = 0
    written: int = 0
    rejected: int = 0
    dropped: int = 0


def _writer(
    kind: str, file: IO[bytes], columns: list[str]
) -> JsonLinesWriter | CsvWriter:
    if kind == "jsonl":
        return JsonLinesWriter(file)
    return CsvWriter(file, columns, "\t" if kind == "tsv" else ",")


def _map_all(
    mapper: mapper_module.Mapper,
    records: Iterable[tuple[int, Record | Unreadable]],
    writer: JsonLinesWriter | CsvWriter,
    rejects: JsonLinesWriter,
    progress: Progress | None,
) -> _Counts:
    # The hot loop: names bound once, counters kept in locals.
    keeps, map_record, write = mapper.keeps, mapper.map, writer.write
    rejected_error = mapper_module.RecordRejected
    read = written = dropped = rejected = 0
    for row, record in records:
        read += 1
        if progress is not None and not read % PROGRESS_EVERY:
            progress(read)
        if isinstance(record, Unreadable):
            rejects.write({"row": row, "field": record.field, "reason": record.reason})
            rejected += 1
            continue
        try:
            if not keeps(record):
                dropped += 1
                continue
            output, _trace = map_record(record)
        except rejected_error as exc:
            rejects.write({"row": row, "field": exc.field, "reason": exc.reason})
            rejected += 1
            continue
        write(output)
        written += 1
    if progress is not None:
        progress(read)
    return _Counts(read=read, written=written, rejected=rejected, dropped=dropped)
