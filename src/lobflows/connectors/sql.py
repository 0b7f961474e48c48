"""Relational databases (PostgreSQL, MariaDB/MySQL) through SQLAlchemy.

A connection names a database by URL; its password, if any, comes from the
secret named by ``password_secret`` and never from the URL itself::

    connections:
      shop:
        type: sql
        url: postgresql://flows@db.internal:5432/shop   # or mysql+pymysql://…
        password_secret: shop-db-password
        pool_size: 5
        timeout_seconds: 30

Actions:

- ``query`` runs one statement with named bind parameters (``:name``) and
  returns its rows as a list of mappings. Values are never formatted into
  the SQL text.
- ``execute`` runs one statement that returns no rows and gives
  ``{"rowcount": n}``.
- ``insert`` and ``upsert`` write a list of rows (mappings of column to
  value) into a table and give ``{"count": n}``, the number of rows sent.
  ``upsert`` names the ``key`` columns, which must be the primary key or a
  unique key of the table; a row whose key exists updates the other
  columns (``ON CONFLICT … DO UPDATE`` on PostgreSQL, ``ON DUPLICATE KEY
  UPDATE`` on MariaDB). Table and column names are checked against the
  table as reflected from the database, once per connection and table, so
  no name from a flow reaches the SQL text unchecked. A table changed
  while the process runs is seen after a restart.

Returned values are JSON-ready: dates, times and timestamps as ISO 8601
text (timestamps and times always with microseconds, so two of them compare
as text in time order), ``Decimal`` as text to stay exact, UUIDs and
network addresses as text, intervals as seconds, and binary columns as
base64 text.

Errors: a refused connection, a timeout, a deadlock, a serialization
failure or a lock wait is retryable; a constraint violation (unique, not
null, foreign key), a syntax error or an unknown table or column is
permanent and carries the database's message. Messages name the database
by its URL with the password hidden.

A poll trigger reads new rows with ``query``; each row starts one run, and
its ``updated_at`` becomes the watermark of the next poll::

    trigger:
      poll:
        every_seconds: 60
        call: shop.query
        with:
          sql: >-
            SELECT id, customer, total, updated_at FROM orders
            WHERE updated_at > :watermark ORDER BY updated_at LIMIT 500
          params: {watermark: "{{ watermark }}"}
        items: "{{ result }}"
        id: "{{ item.id }}"
        watermark: "{{ item.updated_at }}"
        start: "1970-01-01T00:00:00"

Rows that share the last ``updated_at`` beyond the ``LIMIT`` are missed by
``>``; writing ``>=`` polls the boundary rows again, and their ids start
nothing twice.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import decimal
import math
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

import pydantic
import sqlalchemy as sa
from sqlalchemy.dialects import mysql as mysql_dialect
from sqlalchemy.dialects import postgresql as pg_dialect

from lobflows import errors, secrets
from lobflows.connectors import _http, base

T = TypeVar("T")

# Drivers that SQLAlchemy runs synchronously; the connector runs them in a
# worker thread. The first one of each backend is used when the URL names none.
_DRIVERS = {
    "postgresql": ("psycopg", "psycopg2", "pg8000"),
    "mysql": ("pymysql", "mysqldb", "mysqlconnector"),
    "mariadb": ("pymysql", "mysqldb", "mysqlconnector", "mariadbconnector"),
}
_DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306, "mariadb": 3306}
MAX_ROWS = 10_000

# PostgreSQL SQLSTATEs worth another try: connection exceptions (08),
# insufficient resources (53), operator intervention (57: shutdown, query
# cancelled by statement_timeout), serialization failure, deadlock, lock
# not available. https://www.postgresql.org/docs/current/errcodes-appendix.html
_RETRYABLE_SQLSTATE_CLASSES = ("08", "53", "57")
_RETRYABLE_SQLSTATES = frozenset({"40001", "40P01", "55P03"})
# MariaDB/MySQL error numbers worth another try: too many connections,
# server shutdown, lock wait timeout, deadlock, connection killed,
# max_statement_time exceeded, MySQL's max_execution_time, and the
# client's cannot connect / server gone / connection lost.
_RETRYABLE_MYSQL_CODES = frozenset(
    {1040, 1053, 1205, 1213, 1927, 1969, 3024, 2002, 2003, 2006, 2013, 2055}
)
_TRANSPORT_MYSQL_CODES = frozenset({2002, 2003, 2006, 2013, 2055})


class SqlSettings(base.NetworkSettings):
    url: str = pydantic.Field(
        description="Database URL without a password, e.g. "
        "'postgresql://flows@db:5432/shop' or 'mysql+pymysql://flows@db/shop'.",
    )
    password_secret: str | None = pydantic.Field(
        default=None, description="Secret holding the database password."
    )
    pool_size: int = pydantic.Field(
        default=5, ge=1, le=100, description="Pooled connections; default 5."
    )
    timeout_seconds: float = pydantic.Field(
        default=30.0,
        gt=0,
        description="Limit for connecting and for each statement, in seconds.",
    )

    @pydantic.field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        database_url(value)
        return value


def database_url(text: str) -> sa.URL:
    """Parse a connection URL, naming a synchronous driver; refuse passwords in it."""
    try:
        url = sa.make_url(text)
    except sa.exc.ArgumentError:
        raise ValueError(f"{text!r} is not a database URL") from None
    if url.password is not None:
        raise ValueError(
            "the URL holds a password; remove it and name a secret in password_secret"
        )
    backend, _, driver = url.drivername.partition("+")
    if backend not in _DRIVERS:
        raise ValueError(f"expected a postgresql, mysql or mariadb URL (got {backend})")
    if driver and driver not in _DRIVERS[backend]:
        known = ", ".join(_DRIVERS[backend])
        raise ValueError(f"expected a driver among {known} (got {driver})")
    return url.set(drivername=f"{backend}+{driver or _DRIVERS[backend][0]}")


class _Params(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)


class QueryParams(_Params):
    """Parameters of ``query``."""

    sql: str = pydantic.Field(min_length=1, description="One statement.")
    params: dict[str, Any] = pydantic.Field(
        default_factory=dict, description="Values of the :name bind parameters."
    )
    max_rows: int = pydantic.Field(
        default=MAX_ROWS,
        ge=1,
        le=1_000_000,
        description="More rows than this fail the call; default 10000.",
    )


class ExecuteParams(_Params):
    """Parameters of ``execute``."""

    sql: str = pydantic.Field(min_length=1, description="One statement.")
    params: dict[str, Any] = pydantic.Field(
        default_factory=dict, description="Values of the :name bind parameters."
    )


class InsertParams(_Params):
    """Parameters of ``insert``."""

    table: str = pydantic.Field(min_length=1, description="'table' or 'schema.table'.")
    rows: list[dict[str, Any]] = pydantic.Field(
        min_length=1, description="Rows to write, each a mapping of column to value."
    )


class UpsertParams(InsertParams):
    """Parameters of ``upsert``."""

    key: list[str] = pydantic.Field(
        min_length=1, description="Primary key or unique key columns."
    )


class SqlConnector(base.Connector):
    """Queries and writes a PostgreSQL or MariaDB/MySQL database."""

    kind = "sql"
    settings_model = SqlSettings
    actions = {
        "query": "Run a statement with named parameters; returns its rows.",
        "execute": "Run a statement that returns no rows; returns its rowcount.",
        "insert": "Insert rows into a table; returns the count.",
        "upsert": "Insert rows, updating those whose key exists; returns the count.",
    }

    def __init__(self, name: str, settings: SqlSettings, secrets: Any) -> None:
        super().__init__(name, settings, secrets)
        self.url = database_url(settings.url)
        self.guard = _http.AddressGuard(settings.allow_networks)
        self._engine: sa.Engine | None = None
        self._tables: dict[str, sa.Table] = {}
        self._lock = threading.Lock()

    @property
    def shown_url(self) -> str:
        """The URL as errors show it, password hidden."""
        return self.url.render_as_string(hide_password=True)

    async def action_query(
        self, params: dict[str, Any], context: base.CallContext
    ) -> Any:
        p: QueryParams = base.parse_params(
            QueryParams, params, action=f"{self.name}.query"
        )

        def work(connection: sa.Connection) -> list[dict[str, Any]]:
            result = connection.execute(sa.text(p.sql), p.params)
            if not result.returns_rows:
                raise errors.StepInputError(
                    f"{self.name}.query: the statement returns no rows; use execute"
                )
            rows = result.mappings().fetchmany(p.max_rows + 1)
            if len(rows) > p.max_rows:
                raise errors.StepInputError(
                    f"{self.name}.query: more than {p.max_rows} rows; add a LIMIT "
                    "or raise max_rows"
                )
            return [{k: json_value(v) for k, v in row.items()} for row in rows]

        return await self._run(work, context, what="query")

    async def action_execute(
        self, params: dict[str, Any], context: base.CallContext
    ) -> Any:
        p: ExecuteParams = base.parse_params(
            ExecuteParams, params, action=f"{self.name}.execute"
        )

        def work(connection: sa.Connection) -> dict[str, int]:
            result = connection.execute(sa.text(p.sql), p.params)
            return {"rowcount": result.rowcount}

        return await self._run(work, context, what="execute")

    async def action_insert(
        self, params: dict[str, Any], context: base.CallContext
    ) -> Any:
        p: InsertParams = base.parse_params(
            InsertParams, params, action=f"{self.name}.insert"
        )

        def work(connection: sa.Connection) -> dict[str, int]:
            table = self._table(connection, p.table)
            _check_rows(table, p.rows)
            connection.execute(sa.insert(table), p.rows)
            return {"count": len(p.rows)}

        return await self._run(work, context, what=f"insert into {p.table}")

    async def action_upsert(
        self, params: dict[str, Any], context: base.CallContext
    ) -> Any:
        p: UpsertParams = base.parse_params(
            UpsertParams, params, action=f"{self.name}.upsert"
        )

        def work(connection: sa.Connection) -> dict[str, int]:
            table = self._table(connection, p.table)
            _check_rows(table, p.rows)
            _check_key(table, p.key, p.rows)
            statement = _upsert_statement(connection.dialect, table, p)
            connection.execute(statement, p.rows)
            return {"count": len(p.rows)}

        return await self._run(work, context, what=f"upsert into {p.table}")

    async def check(self) -> str:
        """Connect and run SELECT 1."""
        context = base.CallContext(
            run_id="check",
            flow="check",
            step="check",
            attempt=1,
            timeout_seconds=self.settings.timeout_seconds,
        )
        await self._run(lambda c: c.execute(sa.text("SELECT 1")), context, what="check")
        return f"connected to {self.url.render_as_string(hide_password=True)}"

    async def _run(
        self,
        work: Callable[[sa.Connection], T],
        context: base.CallContext,
        *,
        what: str,
    ) -> T:
        """Run `work` in one transaction on a worker thread, translating errors."""
        if self.url.host:
            port = self.url.port or _DEFAULT_PORTS[self.url.get_backend_name()]
            await self.guard.check(self.url.host, port)
        timeout = min(self.settings.timeout_seconds, context.timeout_seconds)

        def transaction() -> T:
            with self._translated(what), self._engine_now().begin() as connection:
                _limit_statements(connection, timeout)
                return work(connection)

        return await asyncio.to_thread(transaction)

    def _engine_now(self) -> sa.Engine:
        with self._lock:
            if self._engine is None:
                self._engine = self._create_engine()
            return self._engine

    def _create_engine(self) -> sa.Engine:
        s: SqlSettings = self.settings
        password = self.secrets.get(s.password_secret) if s.password_secret else None
        return sa.create_engine(
            self.url.set(password=password),
            pool_size=s.pool_size,
            max_overflow=0,
            pool_timeout=s.timeout_seconds,
            # A server restart leaves dead pooled connections; a ping
            # before use replaces them instead of failing a step.
            pool_pre_ping=True,
            connect_args=_connect_args(self.url, s.timeout_seconds),
        )

    def _table(self, connection: sa.Connection, name: str) -> sa.Table:
        """The table, reflected on first use and kept."""
        with self._lock:
            cached = self._tables.get(name)
        if cached is not None:
            return cached
        schema, _, table_name = name.rpartition(".")
        try:
            table = sa.Table(
                table_name,
                sa.MetaData(),
                autoload_with=connection,
                schema=schema or None,
            )
        except sa.exc.NoSuchTableError:
            known = sa.inspect(connection).get_table_names(schema=schema or None)
            raise errors.StepInputError(
                f"{self.name}: no table {name!r}; tables: {', '.join(sorted(known))}"
            ) from None
        with self._lock:
            self._tables[name] = table
        return table

    @contextmanager
    def _translated(self, what: str) -> Iterator[None]:
        try:
            yield
        except sa.exc.SQLAlchemyError as exc:
            raise self._error(exc, what) from exc

    def _error(self, exc: sa.exc.SQLAlchemyError, what: str) -> errors.ConnectorError:
        """Our error for one of SQLAlchemy's, with the database's message."""
        code, detail = _database_message(exc, self.url.get_backend_name())
        message = secrets.redactor.redact(
            f"{self.name}: {what} on {self.shown_url} failed: {detail}"
        )
        context = {"connection": self.name, "code": code}
        if isinstance(exc, sa.exc.TimeoutError) or _is_transport_failure(exc, code):
            return errors.TransportError(message, **context)
        retryable = _is_retryable(exc, code)
        return errors.ConnectorError(message, retryable=retryable, **context)

    async def close(self) -> None:
        if self._engine is not None:
            await asyncio.to_thread(self._engine.dispose)


def _connect_args(url: sa.URL, timeout_seconds: float) -> dict[str, Any]:
    seconds = max(2, math.ceil(timeout_seconds))
    if url.get_backend_name() == "postgresql":
        return {"connect_timeout": seconds}
    if url.get_driver_name() == "pymysql":
        # read_timeout is a backstop for a silent network; the server ends
        # slow statements itself (see _limit_statements).
        return {"connect_timeout": seconds, "read_timeout": seconds + 5}
    return {"connect_timeout": seconds}


def _limit_statements(connection: sa.Connection, timeout_seconds: float) -> None:
    """Make the server cancel statements of this call that run too long."""
    dialect = connection.dialect
    if dialect.name == "postgresql":
        # is_local=true: the setting ends with the transaction.
        milliseconds = str(max(1, int(timeout_seconds * 1000)))
        connection.execute(
            sa.text("SELECT set_config('statement_timeout', :ms, true)"),
            {"ms": milliseconds},
        )
    elif getattr(dialect, "is_mariadb", False):
        connection.execute(
            sa.text("SET SESSION max_statement_time = :seconds"),
            {"seconds": timeout_seconds},
        )
    elif dialect.name == "mysql":
        # MySQL limits only SELECT statements, and in milliseconds.
        connection.execute(
            sa.text("SET SESSION max_execution_time = :ms"),
            {"ms": max(1, int(timeout_seconds * 1000))},
        )


def _check_rows(table: sa.Table, rows: list[dict[str, Any]]) -> None:
    """Refuse unknown columns, and rows whose columns differ from the first's."""
    known = set(table.columns.keys())
    first = set(rows[0])
    for index, row in enumerate(rows):
        unknown = sorted(set(row) - known)
        if unknown:
            raise errors.StepInputError(
                f"table {table.fullname!r} has no column {', '.join(map(repr, unknown))} "
                f"(row {index}); columns: {', '.join(table.columns.keys())}"
            )
        if set(row) != first:
            raise errors.StepInputError(
                f"row {index} has columns {sorted(row)}, row 0 has {sorted(first)}; "
                "every row must name the same columns"
            )


def _check_key(table: sa.Table, key: list[str], rows: list[dict[str, Any]]) -> None:
    """Refuse a key that is not a unique key of the table or is missing from the rows."""
    wanted = set(key)
    unknown = sorted(wanted - set(table.columns.keys()))
    if unknown:
        raise errors.StepInputError(
            f"table {table.fullname!r} has no column {', '.join(map(repr, unknown))} "
            f"(key); columns: {', '.join(table.columns.keys())}"
        )
    if wanted not in _unique_keys(table):
        shown = "; ".join(", ".join(sorted(k)) for k in _unique_keys(table))
        raise errors.StepInputError(
            f"key {sorted(wanted)} is not the primary key or a unique key of "
            f"{table.fullname!r}; unique keys: {shown or 'none'}"
        )
    missing = sorted(wanted - set(rows[0]))
    if missing:
        raise errors.StepInputError(
            f"rows lack the key column {', '.join(map(repr, missing))}"
        )


def _unique_keys(table: sa.Table) -> list[set[str]]:
    keys = [{c.name for c in table.primary_key.columns}]
    keys += [
        {c.name for c in constraint.columns}
        for constraint in table.constraints
        if isinstance(constraint, sa.UniqueConstraint)
    ]
    keys += [{c.name for c in index.columns} for index in table.indexes if index.unique]
    return [k for k in keys if k]


def _upsert_statement(
    dialect: sa.Dialect, table: sa.Table, p: UpsertParams
) -> sa.Executable:
    others = [c for c in p.rows[0] if c not in p.key]
    if dialect.name == "postgresql":
        pg = pg_dialect.insert(table)
        if not others:
            return pg.on_conflict_do_nothing(index_elements=p.key)
        return pg.on_conflict_do_update(
            index_elements=p.key, set_={c: pg.excluded[c] for c in others}
        )
    if dialect.name in ("mysql", "mariadb"):
        my = mysql_dialect.insert(table)
        # ON DUPLICATE KEY UPDATE needs one assignment; a key-only row
        # assigns a key column to itself.
        updates = others or p.key[:1]
        return my.on_duplicate_key_update({c: my.inserted[c] for c in updates})
    raise errors.StepInputError(f"upsert is not supported on {dialect.name}")


def _database_message(
    exc: sa.exc.SQLAlchemyError, backend: str
) -> tuple[int | str | None, str]:
    """The database's error code and message, without the statement or its values.

    The code is PostgreSQL's SQLSTATE text, or MariaDB's error number.
    """
    if not isinstance(exc, sa.exc.DBAPIError):
        return None, str(exc).split("\n[SQL:")[0]
    original = exc.orig
    args = getattr(original, "args", ())
    if backend != "postgresql" and len(args) == 2 and isinstance(args[0], int):
        return args[0], f"({args[0]}) {args[1]}"
    sqlstate = getattr(original, "sqlstate", None)
    detail = str(original).strip() or type(original).__name__
    return (sqlstate if isinstance(sqlstate, str) else None), detail


def _is_transport_failure(exc: sa.exc.SQLAlchemyError, code: int | str | None) -> bool:
    """Could the server not be reached, or did the connection drop?"""
    if not isinstance(exc, sa.exc.DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    if isinstance(code, int):
        return code in _TRANSPORT_MYSQL_CODES
    # psycopg raises OperationalError with no SQLSTATE when it cannot
    # connect at all; class 08 is a connection exception.
    return isinstance(exc, sa.exc.OperationalError) and (
        code is None or code.startswith("08")
    )


def _is_retryable(exc: sa.exc.SQLAlchemyError, code: int | str | None) -> bool:
    if not isinstance(exc, sa.exc.DBAPIError) or code is None:
        return False
    if isinstance(code, int):
        return code in _RETRYABLE_MYSQL_CODES
    return code in _RETRYABLE_SQLSTATES or code.startswith(_RETRYABLE_SQLSTATE_CLASSES)


def json_value(value: Any) -> Any:
    """A database value as JSON can carry it (see the module docstring)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, datetime.datetime | datetime.time):
        return value.isoformat(timespec="microseconds")
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, Mapping):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_value(v) for v in value]
    # UUIDs, network addresses, enums and the like read well as text.
    return str(value)
