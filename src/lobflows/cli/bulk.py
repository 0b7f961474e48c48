"""``lobflows map``: run a named mapping over a file of records."""

from __future__ import annotations

import codecs
import contextlib
import enum
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from lobflows import errors
from lobflows.cli import common as cli
from lobflows.spec import loader, mappings
from lobflows.transform import bulk
from lobflows.transform import mapper as mapper_module

MAPPING_SUFFIXES = (".yaml", ".yml")
DELIMITER_NAMES = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";"}


class InputFormat(enum.StrEnum):
    csv = "csv"
    tsv = "tsv"
    xlsx = "xlsx"
    jsonl = "jsonl"


def map_command(
    mapping: Annotated[
        str,
        typer.Argument(
            metavar="MAPPING",
            help="A mapping file, or the name of a mapping in FLOWS/mappings.",
        ),
    ],
    input_file: Annotated[
        Path,
        typer.Argument(
            metavar="INPUT", help="Records: .csv, .tsv, .xlsx, .jsonl or .ndjson."
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out", "-o", help="Where the mapped records go: .jsonl, .csv or .tsv."
        ),
    ],
    rejects: Annotated[
        Path | None,
        typer.Option(
            "--rejects",
            help="JSON Lines of rejected records (row, field, reason); "
            "written even when empty.",
            show_default="OUT's name + .rejects.jsonl",
        ),
    ] = None,
    input_format: Annotated[
        InputFormat | None,
        typer.Option("--format", help="Format of INPUT, when its suffix does not say."),
    ] = None,
    encoding: Annotated[
        str | None,
        typer.Option(
            help="Encoding of INPUT; for CSV detected when absent "
            "(UTF-8 with or without BOM, else Windows-1252, else Latin-1)."
        ),
    ] = None,
    delimiter: Annotated[
        str | None,
        typer.Option(
            help="CSV delimiter: one character, or tab; sniffed when absent "
            "among , ; tab and |."
        ),
    ] = None,
    sheet: Annotated[
        str | None,
        typer.Option(help="Worksheet of an XLSX file.", show_default="the first"),
    ] = None,
    flows_dir: Annotated[
        Path,
        typer.Option(
            "--flows",
            envvar="LOBFLOWS_FLOWS",
            help="Folder whose mappings/ holds MAPPING when it is a name.",
        ),
    ] = Path("."),
) -> None:
    """Map a CSV, XLSX or JSON Lines file record by record into JSON Lines or CSV.

    Each rejected record is listed in the rejects file with its row number
    (the header is row 1), the field and the reason. The output and rejects
    files appear only once the whole input is read. In a CSV row shorter
    than the header the missing cells are absent, so the field's on_missing
    applies, while an empty cell is empty text. Exit code 0 when every record
    was mapped or dropped by the filter, 1 when some were rejected.
    """
    chosen_delimiter = _delimiter(delimiter)
    if encoding is not None:
        _check_encoding(encoding)
    rejects = rejects or out.with_name(_stem(out) + ".rejects.jsonl")
    _check_paths(input_file, out, rejects)

    try:
        mapper = _mapper(mapping, flows_dir)
        records = bulk.read_records(
            input_file,
            format=input_format.value if input_format else None,
            encoding=encoding,
            delimiter=chosen_delimiter,
            sheet=sheet,
        )
        with _progress_bar(input_file.name) as progress:
            summary = bulk.map_file(mapper, records, out, rejects, progress=progress)
        _report(summary, out, rejects)
    except typer.Exit:
        raise
    except errors.FlowFileError as exc:
        _fail_definition(exc)
    except bulk.RecordFileError as exc:
        cli.fail(str(exc), cli.EXIT_USAGE)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    except Exception as exc:
        # As cli.run_async does for async commands: one line, unless verbose.
        if cli.options.verbose:
            cli.err_console.print_exception()
        cli.fail(
            f"unexpected {type(exc).__name__}: {exc}",
            cli.EXIT_INTERNAL,
            "run again with --verbose to see the traceback",
        )


def _report(summary: bulk.Summary, out: Path, rejects: Path) -> None:
    rate = summary.read / summary.seconds if summary.seconds else 0.0
    dropped = f", {summary.dropped:,} dropped by the filter" if summary.dropped else ""
    cli.console.print(
        f"Read {summary.read:,} records in {summary.seconds:.1f} s "
        f"({rate:,.0f}/s): {summary.written:,} written to {escape(str(out))}, "
        f"{summary.rejected:,} rejected{dropped}.",
        highlight=False,
        soft_wrap=True,
    )
    if summary.rejected:
        cli.err_console.print(
            f"{summary.rejected:,} record(s) rejected; their rows and reasons "
            f"are in {escape(str(rejects))}",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(cli.EXIT_PROBLEMS)


def _mapper(mapping: str, flows_dir: Path) -> mapper_module.Mapper:
    """The mapping named, from its file or from FLOWS/mappings, with its `each` ones."""
    path = Path(mapping)
    if path.suffix not in MAPPING_SUFFIXES and not path.is_file():
        registry = loader.load_mappings(flows_dir)
        if mapping not in registry:
            known = ", ".join(sorted(registry)) or "none"
            cli.fail(
                f"no mapping named {mapping!r} in {flows_dir / 'mappings'}",
                cli.EXIT_NOT_FOUND,
                f"mappings there: {known}; or give the path of a mapping file",
            )
        return mapper_module.Mapper(registry[mapping], registry)

    if not path.is_file():
        cli.fail(f"no mapping file {path}", cli.EXIT_NOT_FOUND)
    loaded = loader.load_mapping_file(path)
    registry = {loaded.name: loaded}
    nested = mappings.nested_names(loaded.spec)
    if nested:
        # A mapping file in FLOWS/mappings finds its siblings there.
        folder = path.parent.parent if path.parent.name == "mappings" else flows_dir
        registry = {**loader.load_mappings(folder), loaded.name: loaded}
        missing = sorted(set(nested) - set(registry))
        if missing:
            cli.fail(
                f"{path}: each: no mapping named {', '.join(map(repr, missing))} "
                f"in {folder / 'mappings'}",
                cli.EXIT_PROBLEMS,
                "give --flows the folder whose mappings/ holds them",
            )
    return mapper_module.Mapper(loaded, registry)


def _fail_definition(exc: errors.FlowFileError) -> None:
    for problem in exc.problems:
        cli.err_console.print(
            str(problem), highlight=False, soft_wrap=True, markup=False
        )
    cli.fail(f"{len(exc.problems)} problem(s) in {exc.path}", cli.EXIT_PROBLEMS)


def _delimiter(given: str | None) -> str | None:
    if given is None:
        return None
    chosen = DELIMITER_NAMES.get(given.lower(), given)
    if len(chosen) != 1 or chosen in '"\r\n':
        cli.fail(
            f"--delimiter {given!r}: expected one character, or tab",
            cli.EXIT_USAGE,
        )
    return chosen


def _check_encoding(name: str) -> None:
    try:
        codecs.lookup(name)
    except LookupError:
        cli.fail(
            f"--encoding {name!r}: unknown encoding",
            cli.EXIT_USAGE,
            "e.g. utf-8, utf-8-sig, cp1252, latin-1",
        )


def _check_paths(input_file: Path, out: Path, rejects: Path) -> None:
    if not input_file.is_file():
        what = "is a folder" if input_file.is_dir() else "no such file"
        cli.fail(f"{input_file}: {what}", cli.EXIT_NOT_FOUND)
    for given in (out, rejects):
        if given.is_dir():
            cli.fail(f"{given} is a folder; give a file", cli.EXIT_USAGE)
    if out.resolve() == input_file.resolve():
        cli.fail("--out names the input file; give another file", cli.EXIT_USAGE)
    if rejects.resolve() in (out.resolve(), input_file.resolve()):
        cli.fail(
            "--rejects names the input or output file; give another file",
            cli.EXIT_USAGE,
        )


def _stem(path: Path) -> str:
    return path.name[: -len(path.suffix)] if path.suffix else path.name


class _RateColumn(ProgressColumn):
    """Records per second, as Rich estimates it over the last seconds."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(
            f"{speed:,.0f} rows/s" if speed else "", style="progress.data.speed"
        )


@contextlib.contextmanager
def _progress_bar(name: str) -> Iterator[bulk.Progress | None]:
    """A live bar on a terminal; nothing when stderr is piped or a file."""
    if not cli.err_console.is_terminal:
        yield None
        return
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,} rows"),
        _RateColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=cli.err_console, transient=True) as bar:
        task = bar.add_task(escape(name), total=None)
        yield lambda rows: bar.update(task, completed=rows)
