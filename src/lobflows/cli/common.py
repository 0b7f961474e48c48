"""What every ``lobflows`` command shares: consoles, exit codes, settings,
running a command's coroutine and opening the run store."""

from __future__ import annotations

import asyncio
import getpass
import os
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from lobflows import errors
from lobflows.settings import Settings

T = TypeVar("T")

EXIT_PROBLEMS = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_CONFIGURATION = 4
EXIT_INTERNAL = 70

# Piped into a file or another command, tables keep whole run ids on one
# line instead of wrapping at 80 columns; COLUMNS still wins when set.
PIPED_WIDTH = 200


def _width(stream: Any) -> int | None:
    return None if stream.isatty() or "COLUMNS" in os.environ else PIPED_WIDTH


console = Console(width=_width(sys.stdout))
err_console = Console(stderr=True, width=_width(sys.stderr))


class _Options:
    settings: Settings = Settings()
    verbose: bool = False


options = _Options()


def fail(message: str, code: int, hint: str | None = None) -> None:
    err_console.print(
        f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True
    )
    if hint:
        err_console.print(f"[dim]hint: {escape(hint)}[/]", highlight=False)
    raise typer.Exit(code)


def cli_actor() -> str:
    """The audit log's name for whoever runs the command: ``cli:<os user>``."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return f"cli:uid-{os.getuid()}"


def run_async(
    coroutine: Coroutine[Any, Any, T], *, definition_exit: int = EXIT_PROBLEMS
) -> T:
    """Run a command's coroutine; errors become one line and a named exit code.

    `definition_exit` is the code for problems in flow or settings files, for
    commands whose 1 means something else (``lobflows health``: something is down).
    """
    try:
        return _event_loop_runner()(coroutine)
    except typer.Exit:
        raise
    except errors.FlowFileError as exc:
        for problem in exc.problems:
            err_console.print(
                str(problem), highlight=False, soft_wrap=True, markup=False
            )
        fail(f"{len(exc.problems)} problem(s) in {exc.path}", definition_exit)
    except errors.RunNotFoundError as exc:
        fail(str(exc), EXIT_NOT_FOUND)
    except errors.LobflowsError as exc:
        fail(str(exc), EXIT_CONFIGURATION)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    except Exception as exc:
        if options.verbose:
            err_console.print_exception()
        fail(
            f"unexpected {type(exc).__name__}: {exc}",
            EXIT_INTERNAL,
            "run again with --verbose to see the traceback",
        )
    raise AssertionError("unreachable")


def _event_loop_runner() -> Callable[[Coroutine[Any, Any, T]], T]:
    """uvloop where it is installed (it comes with uvicorn[standard]), else asyncio."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return uvloop.run


async def with_store(
    action: Callable[[Any], Awaitable[T]], *, create: bool = False
) -> T:
    """Run `action` on the run store. A SQLite store that does not exist is
    refused unless `create`, so a mistyped LOBFLOWS_DB reads as an error
    instead of as an empty store."""
    from lobflows.runtime import open_store

    if not create:
        require_store(options.settings)
    store = await open_store(options.settings)
    try:
        return await action(store)
    finally:
        await store.close()


def require_store(settings: Settings) -> None:
    """Refuse a SQLite run store that does not exist yet instead of creating it:
    a reading command pointed at a mistyped path must not make an empty store."""
    from pathlib import Path

    import sqlalchemy as sa

    from lobflows.store import engines

    url = settings.database_url
    if not engines.is_sqlite(url):
        return
    try:
        database = sa.engine.make_url(url).database
    except sa.exc.ArgumentError:
        return  # opening the store names what is wrong with the URL
    if not database or database == ":memory:":
        return
    path = Path(database).expanduser()
    if not path.is_file():
        raise errors.ConfigurationError(
            f"no run store at {path}; check LOBFLOWS_DB, or make the store "
            "with `lobflows serve` or the first `lobflows users add`"
        )
