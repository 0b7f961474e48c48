"""The sql connector against the real PostgreSQL and MariaDB servers on loopback."""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest
import sqlalchemy as sa

from lobflows import errors
from lobflows.connectors import base, sql
from lobflows.runtime import Runtime
from lobflows.secrets import SecretStore
from lobflows.settings import Settings
from lobflows.triggers.poll import Poller
from tests import support

pytestmark = pytest.mark.integration

CONTEXT = base.CallContext(
    run_id="r" * 32, flow="orders", step="s", attempt=1, timeout_seconds=10
)
# The same table on both servers; only the timestamp type differs.
CUSTOMERS = """CREATE TABLE customers (
    id INTEGER PRIMARY KEY,
    email VARCHAR(100) NOT NULL UNIQUE,
    name VARCHAR(100),
    balance NUMERIC(10, 2),
    updated_at {timestamp}
)"""
TIMESTAMP = {"postgresql": "TIMESTAMP(6)", "mariadb": "DATETIME(6)"}


def mariadb_admin() -> pymysql.Connection:
    # Not reachable means the machine's MariaDB is down: that fails the
    # test rather than skipping it.
    return pymysql.connect(host="127.0.0.1", port=3306, user="root", autocommit=True)


@pytest.fixture(params=["postgresql", "mariadb"])
def database(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    """(backend, URL) of a fresh, empty database, dropped afterwards."""
    name = f"lobflows_sql_{uuid.uuid4().hex[:12]}"
    if request.param == "postgresql":
        with support.fresh_postgres_database() as url:
            yield "postgresql", url
        return
    with mariadb_admin() as admin, admin.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE `{name}`")
    try:
        yield "mariadb", f"mysql+pymysql://root@127.0.0.1:3306/{name}"
    finally:
        with mariadb_admin() as admin, admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")


def connector(url: str, **settings: Any) -> sql.SqlConnector:
    validated = sql.SqlSettings.model_validate({"url": url, **settings})
    return sql.SqlConnector("shop", validated, SecretStore({"shop-db": "hunter2-pw"}))


@pytest.fixture
async def db(database: tuple[str, str]) -> AsyncIterator[sql.SqlConnector]:
    backend, url = database
    shop = connector(url)
    ddl = CUSTOMERS.format(timestamp=TIMESTAMP[backend])
    await shop.call("execute", {"sql": ddl}, CONTEXT)
    yield shop
    await shop.close()


async def call(shop: sql.SqlConnector, action: str, **params: Any) -> Any:
    return await shop.call(action, params, CONTEXT)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


ANN = {"id": 1, "email": "ann@example.com", "name": "Ann", "balance": "10.50"}
BOB = {"id": 2, "email": "bob@example.com", "name": "Bob", "balance": "99.99"}


# ------------------------------------------------------------------ actions


async def test_sql_query_binds_named_parameters_and_returns_json_ready_rows(
    db: sql.SqlConnector,
) -> None:
    stamped = {**ANN, "updated_at": "2025-03-01 08:30:00"}
    await call(db, "insert", table="customers", rows=[stamped])
    await call(db, "insert", table="customers", rows=[BOB])

    rows = await call(
        db,
        "query",
        sql="SELECT id, balance, updated_at FROM customers WHERE email = :email",
        params={"email": "ann@example.com"},
    )

    assert rows == [
        {"id": 1, "balance": "10.50", "updated_at": "2025-03-01T08:30:00.000000"}
    ]


async def test_sql_query_takes_a_value_as_data_never_as_sql(
    db: sql.SqlConnector,
) -> None:
    await call(db, "insert", table="customers", rows=[ANN])

    rows = await call(
        db,
        "query",
        sql="SELECT id FROM customers WHERE name = :name",
        params={"name": "x' OR '1'='1"},
    )

    assert rows == []


async def test_sql_insert_counts_the_rows_written(db: sql.SqlConnector) -> None:
    written = await call(db, "insert", table="customers", rows=[ANN, BOB])
    rows = await call(db, "query", sql="SELECT name FROM customers ORDER BY id")

    assert written == {"count": 2}
    assert rows == [{"name": "Ann"}, {"name": "Bob"}]


async def test_sql_upsert_twice_updates_and_keeps_the_row_count(
    db: sql.SqlConnector,
) -> None:
    first = await call(db, "upsert", table="customers", rows=[ANN, BOB], key=["id"])
    renamed = {**ANN, "name": "Ann Smith", "balance": "11.00"}
    second = await call(db, "upsert", table="customers", rows=[renamed], key=["id"])
    rows = await call(db, "query", sql="SELECT id, name, balance FROM customers")

    assert first == {"count": 2} and second == {"count": 1}
    assert sorted(rows, key=lambda r: r["id"]) == [
        {"id": 1, "name": "Ann Smith", "balance": "11.00"},
        {"id": 2, "name": "Bob", "balance": "99.99"},
    ]


async def test_sql_upsert_accepts_a_unique_key_and_refuses_other_columns(
    db: sql.SqlConnector,
) -> None:
    await call(db, "upsert", table="customers", rows=[ANN], key=["email"])
    moved = {**ANN, "name": "Ann B."}
    await call(db, "upsert", table="customers", rows=[moved], key=["email"])

    with pytest.raises(errors.StepInputError, match="not the primary key or a unique"):
        await call(db, "upsert", table="customers", rows=[ANN], key=["name"])
    assert await call(db, "query", sql="SELECT name FROM customers") == [
        {"name": "Ann B."}
    ]


async def test_sql_execute_returns_the_rowcount(db: sql.SqlConnector) -> None:
    await call(db, "insert", table="customers", rows=[ANN, BOB])

    changed = await call(
        db,
        "execute",
        sql="UPDATE customers SET balance = 0 WHERE id >= :lowest",
        params={"lowest": 1},
    )

    assert changed == {"rowcount": 2}


# ------------------------------------------------------------------ names


async def test_sql_insert_refuses_an_unknown_column_naming_the_known_ones(
    db: sql.SqlConnector,
) -> None:
    bad = {**ANN, "nmae; DROP TABLE customers": "x"}

    with pytest.raises(errors.StepInputError) as caught:
        await call(db, "insert", table="customers", rows=[bad])

    message = str(caught.value)
    assert "nmae; DROP TABLE customers" in message
    assert "columns: id, email, name, balance, updated_at" in message


async def test_sql_insert_refuses_an_unknown_table_naming_the_known_ones(
    db: sql.SqlConnector,
) -> None:
    with pytest.raises(
        errors.StepInputError, match="no table 'clients'; tables: customers"
    ):
        await call(db, "insert", table="clients", rows=[ANN])


# ------------------------------------------------------------------ errors


async def test_sql_unique_violation_is_permanent_with_the_database_message(
    db: sql.SqlConnector,
) -> None:
    await call(db, "insert", table="customers", rows=[ANN])
    twin = {**BOB, "email": ANN["email"]}

    with pytest.raises(errors.ConnectorError) as caught:
        await call(db, "insert", table="customers", rows=[twin])

    assert not caught.value.retryable
    assert not isinstance(caught.value, errors.TransportError)
    # PostgreSQL: duplicate key value violates unique constraint …;
    # MariaDB: (1062) Duplicate entry 'ann@example.com' for key 'email'.
    assert "duplicate" in str(caught.value).lower()


async def test_sql_syntax_error_and_unknown_table_are_permanent(
    db: sql.SqlConnector,
) -> None:
    for statement in ("SELEC 1", "SELECT * FROM nowhere"):
        with pytest.raises(errors.ConnectorError) as caught:
            await call(db, "query", sql=statement)
        assert not caught.value.retryable, statement


async def test_sql_statement_over_the_timeout_is_retryable(
    database: tuple[str, str],
) -> None:
    backend, url = database
    shop = connector(url, timeout_seconds=1)
    sleep = "SELECT pg_sleep(5)" if backend == "postgresql" else "SELECT SLEEP(5)"
    try:
        with pytest.raises(errors.ConnectorError) as caught:
            await call(shop, "query", sql=sleep)
    finally:
        await shop.close()

    assert caught.value.retryable


@pytest.mark.parametrize(
    "template",
    [
        "postgresql://postgres@127.0.0.1:{port}/postgres",
        "mysql+pymysql://root@127.0.0.1:{port}/test",
    ],
)
async def test_sql_unreachable_port_is_retryable_and_hides_the_password(
    template: str,
) -> None:
    shop = connector(template.format(port=closed_port()), password_secret="shop-db")

    with pytest.raises(errors.TransportError) as caught:
        await call(shop, "query", sql="SELECT 1")

    assert caught.value.retryable
    assert "hunter2-pw" not in str(caught.value)
    assert "127.0.0.1" in str(caught.value)


def test_sql_settings_refuse_a_password_in_the_url() -> None:
    with pytest.raises(ValueError, match="password_secret"):
        sql.SqlSettings.model_validate({"url": "postgresql://u:secret@db/x"})


async def test_sql_refuses_a_metadata_address_before_connecting() -> None:
    shop = connector("postgresql://u@169.254.169.254/x")

    with pytest.raises(errors.BlockedAddressError):
        await call(shop, "query", sql="SELECT 1")


class _DriverError(Exception):
    """Stands for a driver's exception, with PostgreSQL's SQLSTATE."""

    def __init__(self, message: str, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


PG = "postgresql://postgres@127.0.0.1/x"
MARIADB = "mysql+pymysql://root@127.0.0.1/x"


@pytest.mark.parametrize(
    ("url", "foreign", "retryable"),
    [
        # serialization failure, deadlock, statement timeout (PostgreSQL)
        (PG, sa.exc.OperationalError("s", {}, _DriverError("x", "40001")), True),
        (PG, sa.exc.OperationalError("s", {}, _DriverError("x", "40P01")), True),
        (PG, sa.exc.OperationalError("s", {}, _DriverError("x", "57014")), True),
        # deadlock, lock wait timeout (MariaDB)
        (MARIADB, sa.exc.OperationalError("s", {}, Exception(1213, "Dead")), True),
        (MARIADB, sa.exc.OperationalError("s", {}, Exception(1205, "Lock")), True),
        # not null, foreign key (PostgreSQL); access denied (MariaDB)
        (PG, sa.exc.IntegrityError("s", {}, _DriverError("x", "23502")), False),
        (PG, sa.exc.IntegrityError("s", {}, _DriverError("x", "23503")), False),
        (MARIADB, sa.exc.OperationalError("s", {}, Exception(1045, "No")), False),
        # the pool ran dry
        (PG, sa.exc.TimeoutError("QueuePool limit reached"), True),
        # a missing bind parameter and the like
        (PG, sa.exc.InvalidRequestError("A value is required"), False),
    ],
)
def test_sql_maps_every_foreign_error_to_ours(
    url: str, foreign: sa.exc.SQLAlchemyError, retryable: bool
) -> None:
    shop = connector(url)

    mapped = shop._error(foreign, "query")

    assert isinstance(mapped, errors.ConnectorError)
    assert mapped.retryable is retryable


# ------------------------------------------------------------------ poll

FLOW = """flow: new-customers
card:
  trigger: poll the shop database every minute for customers changed since the watermark
  data: {entity: customer, sensitivity: internal}
  transform: none
  target: the run store
  on_failure: poll again next interval
  owner: shop@example.com
trigger:
  poll:
    every_seconds: 60
    call: shop.query
    with:
      sql: >-
        SELECT id, name, updated_at FROM customers
        WHERE updated_at > :watermark ORDER BY updated_at LIMIT 500
      params: {watermark: "{{ watermark }}"}
    items: "{{ result }}"
    id: "{{ item.id }}"
    watermark: "{{ item.updated_at }}"
    start: "1970-01-01T00:00:00"
steps:
  - id: seen
    map: {name: "{{ input.name }}"}
"""


class Clock:
    def __init__(self) -> None:
        self.current = 1_000_000.0

    def __call__(self) -> float:
        return self.current


async def test_sql_poll_starts_one_run_per_new_row_and_none_twice(
    db: sql.SqlConnector, database: tuple[str, str], tmp_path: Path
) -> None:
    _, url = database
    (tmp_path / "customers.yaml").write_text(FLOW)
    (tmp_path / "connections.yaml").write_text(
        f"connections:\n  shop: {{type: sql, url: '{url}'}}\n"
    )
    early = {**ANN, "updated_at": "2025-03-01 08:00:00"}
    later = {**BOB, "updated_at": "2025-03-01 09:00:00.250000"}
    await call(db, "insert", table="customers", rows=[early, later])
    clock = Clock()
    store = f"sqlite:///{tmp_path / 'runs.db'}"
    runtime = await Runtime.open(Settings(database_url=store), tmp_path)
    try:
        poller = Poller(runtime.engine, now=clock)
        first = await poller.tick()
        clock.current += 61
        nothing_new = await poller.tick()
        # Ann changes after the watermark: her id has had its run already.
        touched = {"name": "Ann", "updated_at": "2025-03-02 10:00:00", "id": 1}
        await call(
            db,
            "execute",
            sql="UPDATE customers SET updated_at = :updated_at WHERE id = :id",
            params=touched,
        )
        third = {"id": 3, "email": "cy@example.com", "name": "Cy"}
        third_row = {**third, "balance": "1.00", "updated_at": "2025-03-02 11:00:00"}
        await call(db, "insert", table="customers", rows=[third_row])
        clock.current += 61
        second = await poller.tick()
        runs = await runtime.store.list_runs(flow="new-customers")
    finally:
        await runtime.close()

    assert len(first) == 2 and nothing_new == [] and len(second) == 1
    assert sorted(run.input["id"] for run in runs) == [1, 2, 3]
