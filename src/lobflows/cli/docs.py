"""``lobflows docs``: the catalogue of flows, mappings and integrations, as Markdown."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lobflows import docs, errors
from lobflows.cli import common as cli


def docs_command(
    folders: Annotated[
        list[Path],
        typer.Argument(
            help="Flows folders, or folders whose subfolders hold flows/ folders "
            "(examples/ finds examples/*/flows).",
            envvar="LOBFLOWS_FLOWS",
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            envvar="LOBFLOWS_DOCS_OUT",
            help="Folder the pages are written to; created when missing.",
        ),
    ],
) -> None:
    """Write the catalogue: flow and mapping pages, an index, the integration map.

    Pages are Markdown that GitHub renders (diagrams in Mermaid); the
    integration map is also written as integration-map.svg.
    """
    try:
        catalogue = _catalogue(folders)
        pages = _write(catalogue, out)
    except typer.Exit:
        raise
    except Exception as exc:
        if cli.options.verbose:
            cli.err_console.print_exception()
        cli.fail(
            f"unexpected {type(exc).__name__}: {exc}",
            cli.EXIT_INTERNAL,
            "run again with --verbose to see the traceback",
        )
    cli.console.print(f"wrote {len(pages)} pages to {out}", highlight=False)


def _catalogue(folders: list[Path]) -> docs.Catalogue:
    """Every flows folder loaded; all their problems printed before failing."""
    problems: list[errors.Problem] = []
    loaded = [_load(given, path, problems) for given, path in _flows_folders(folders)]
    if problems:
        cli.fail(
            f"{len(problems)} problem(s) in the flows; no pages written",
            cli.EXIT_PROBLEMS,
            "fix the files named above; lobflows validate FOLDER checks one folder",
        )
    return docs.assemble(folder for folder in loaded if folder is not None)


def _write(catalogue: docs.Catalogue, out: Path) -> list[Path]:
    try:
        return docs.write_site(catalogue, out)
    except OSError as exc:
        cli.fail(
            f"cannot write the catalogue to {out}: {exc.strerror or exc}",
            cli.EXIT_USAGE,
            "choose a folder you may write to with --out",
        )
    raise AssertionError("unreachable")


def _flows_folders(folders: list[Path]) -> list[tuple[Path, Path]]:
    """Each flows folder with the folder given for it; the first of repeats kept."""
    found: dict[Path, tuple[Path, Path]] = {}
    for given in folders:
        if not given.is_dir():
            what = "is not a folder" if given.exists() else "does not exist"
            cli.fail(
                f"{given} {what}",
                cli.EXIT_USAGE,
                "give folders of flow files, e.g. lobflows docs examples/ --out site",
            )
        try:
            paths = docs.find_flow_folders(given)
        except errors.DefinitionError as exc:
            cli.fail(str(exc), cli.EXIT_PROBLEMS)
        for path in paths:
            found.setdefault(path.resolve(), (given, path))
    return list(found.values())


def _load(
    given: Path, path: Path, problems: list[errors.Problem]
) -> docs.Folder | None:
    """One folder loaded, with a progress line; None when it has problems."""
    try:
        folder = docs.load_folder(path, given=given)
    except errors.FlowFileError as exc:
        shown = docs.catalogue.shown_path(path, given)
        cli.err_console.print(
            f"{shown}: {len(exc.problems)} problem(s)", highlight=False, markup=False
        )
        for problem in exc.problems:
            cli.err_console.print(
                str(problem), highlight=False, soft_wrap=True, markup=False
            )
        problems.extend(exc.problems)
        return None
    flows = docs.markdown.plural(len(folder.project.flows), "flow")
    named = docs.markdown.plural(len(folder.project.mappings), "mapping")
    cli.console.print(
        f"{folder.shown}: {flows}, {named}", highlight=False, markup=False
    )
    return folder
