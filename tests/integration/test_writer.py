"""The group writer: many writes per commit, failures isolated, order kept."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import sqlalchemy as sa

from lobflows.store import engines
from lobflows.store.writer import GroupWriter

pytestmark = pytest.mark.integration


@pytest.fixture
def writer(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'w.db'}"
    engine = engines.create_write_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")
    group = GroupWriter(engine)
    reader = sa.create_engine(url)
    yield group, reader
    group.close()
    reader.dispose()


def insert(k: int, v: str):
    return lambda conn: (
        conn.exec_driver_sql("INSERT INTO t (k, v) VALUES (?, ?)", (k, v)).rowcount
    )


async def test_concurrent_writes_all_commit_and_return_their_results(writer):
    group, reader = writer

    results = await asyncio.gather(*(group.submit(insert(k, "x")) for k in range(200)))

    assert results == [1] * 200
    with reader.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM t").scalar() == 200


async def test_a_failing_write_fails_alone(writer):
    group, reader = writer
    await group.submit(insert(1, "first"))

    outcomes = await asyncio.gather(
        group.submit(insert(2, "a")),
        group.submit(insert(1, "duplicate")),
        group.submit(insert(3, "b")),
        return_exceptions=True,
    )

    assert outcomes[0] == 1 and outcomes[2] == 1
    assert isinstance(outcomes[1], sa.exc.IntegrityError)
    with reader.connect() as conn:
        assert conn.exec_driver_sql("SELECT k, v FROM t ORDER BY k").all() == [
            (1, "first"),
            (2, "a"),
            (3, "b"),
        ]


async def test_an_awaited_write_implies_every_earlier_queued_write_is_committed(writer):
    group, reader = writer

    for k in range(50):
        group.submit_nowait(insert(k, "queued"))
    await group.submit(lambda conn: None)

    with reader.connect() as conn:
        assert (
            conn.exec_driver_sql("SELECT count(*) FROM t WHERE v = 'queued'").scalar()
            == 50
        )
