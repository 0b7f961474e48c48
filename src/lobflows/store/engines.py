"""Database engines of the run store: URLs, drivers and SQLite's pragmas.

Reads go through an async engine (aiosqlite or psycopg); writes go through a
synchronous engine owned by the group writer's thread.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from lobflows import errors

SUPPORTED_SCHEMES = (
    "sqlite:///",
    "sqlite+aiosqlite:///",
    "postgresql://",
    "postgres://",
    "postgresql+psycopg://",
)


def check_url(url: str) -> None:
    """Refuse URLs of databases the run store does not support, and SQLite files in missing folders."""
    if not url.startswith(SUPPORTED_SCHEMES):
        raise errors.ConfigurationError(
            f"run store URL {display_url(url)!r} is not supported: use sqlite:///path/to/file.db or postgresql://user@host/dbname"
        )
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return
    if not parsed.database or parsed.database == ":memory:":
        raise errors.ConfigurationError(
            f"run store URL {display_url(url)!r} names no file: use "
            "sqlite:///path/to/file.db (runs must outlive the process)"
        )
    # Checked up front: a failed SQLite open leaves the driver's thread behind.
    folder = Path(parsed.database).expanduser().resolve().parent
    if not folder.is_dir():
        raise errors.ConfigurationError(
            f"cannot open the run store {display_url(url)}: folder {folder} does not exist"
        )


def display_url(url: str) -> str:
    """The URL with its password masked."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return url.split("@")[-1]


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def _driver_url(url: str, *, asynchronous: bool) -> str:
    if is_sqlite(url):
        rest = url.split(":", 1)[1]
        return ("sqlite+aiosqlite:" if asynchronous else "sqlite:") + rest
    rest = url.split("://", 1)[1]
    return "postgresql+psycopg://" + rest


def _json_text(value: Any) -> str:
    return orjson.dumps(value, default=str).decode()


def _json_value(stored: Any) -> Any:
    # SQLite gives a JSON column numeric affinity: a bare number stored as
    # text ("7") comes back as a number, already decoded.
    if isinstance(stored, int | float):
        return stored
    return orjson.loads(stored)


# orjson instead of the stdlib for JSON columns: the writer thread serializes
# every step's input and output, and holds the GIL while it does.
JSON_OPTIONS: dict[str, Any] = {
    "json_serializer": _json_text,
    "json_deserializer": _json_value,
}


def create_read_engine(url: str) -> AsyncEngine:
    if not is_sqlite(url):
        return create_async_engine(
            _driver_url(url, asynchronous=True),
            pool_size=5,
            max_overflow=10,
            pool_recycle=300,
            **JSON_OPTIONS,
        )
    create_private_file(url)
    # Reads open no transaction on SQLite, so there is nothing to reset.
    engine = create_async_engine(
        _driver_url(url, asynchronous=True),
        pool_size=2,
        max_overflow=2,
        pool_reset_on_return=None,
        **JSON_OPTIONS,
    )
    event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def create_write_engine(url: str) -> sa.Engine:
    if not is_sqlite(url):
        return sa.create_engine(
            _driver_url(url, asynchronous=False),
            pool_size=1,
            max_overflow=0,
            pool_recycle=300,
            **JSON_OPTIONS,
        )
    create_private_file(url)
    engine = sa.create_engine(
        _driver_url(url, asynchronous=False),
        pool_size=1,
        max_overflow=0,
        **JSON_OPTIONS,
    )
    event.listen(engine, "connect", _sqlite_writer_connection)
    event.listen(engine, "begin", _sqlite_begin_immediate)
    return engine


def create_private_file(url: str) -> None:
    """Create a missing SQLite file readable by its owner only: it holds run
    data and the vault's ciphertext. SQLite gives the -wal and -shm files it
    makes later the same mode. An existing file is left as it is."""
    database = sa.engine.make_url(url).database
    if not database or database == ":memory:":
        return
    try:
        fd = os.open(Path(database).expanduser(), os.O_CREAT | os.O_EXCL, 0o600)
    except OSError:
        # It exists, or cannot be made here: SQLite opens it or says why.
        return
    os.close(fd)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # auto_vacuum only takes effect on a database that has no tables yet,
    # which is the case when the store creates the file.
    cursor.execute("PRAGMA auto_vacuum=INCREMENTAL")
    cursor.execute("PRAGMA journal_mode=WAL")
    # FULL: an acknowledged trigger survives a power cut (fsync per commit).
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_writer_connection(dbapi_connection: Any, record: Any) -> None:
    # The sqlite3 module's own transaction handling is switched off so that
    # the BEGIN below is the only one: see SQLAlchemy's pysqlite notes on
    # serializable isolation.
    dbapi_connection.isolation_level = None
    _sqlite_pragmas(dbapi_connection, record)


def _sqlite_begin_immediate(conn: sa.Connection) -> None:
    # Take the write lock when the batch starts, not at its first write, so
    # another process's writer waits (busy_timeout) instead of deadlocking.
    conn.exec_driver_sql("BEGIN IMMEDIATE")
