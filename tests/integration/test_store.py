"""The run store on SQLite and PostgreSQL: dedupe, claiming, journaling, budgets, pruning."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from lobflows import errors
from lobflows.store import RunStore, retention, tables
from lobflows.store.records import CUT_MARKER

pytestmark = pytest.mark.integration


async def new_flow(store: RunStore, *, retention_days: float = 30) -> int:
    version_id, _ = await store.register_flow_version(
        flow="orders",
        digest=f"d{retention_days}",
        definition={"flow": "orders", "retention_days": retention_days},
    )
    return version_id


async def park(store: RunStore, run_id: str, *, step: str = "push", input=None) -> int:
    """Dead-letter a run at a step, as a permanent failure would."""
    return await store.record_dead_letter(
        run_id=run_id,
        flow="orders",
        step=step,
        attempt=1,
        input=input,
        error="417 refused",
        retryable=False,
        started_at=time.time(),
    )


async def test_register_flow_version_numbers_distinct_contents(store: RunStore):
    first = await store.register_flow_version(
        flow="orders", digest="aaa", definition={"v": 1}
    )
    again = await store.register_flow_version(
        flow="orders", digest="aaa", definition={"v": 1}
    )
    changed = await store.register_flow_version(
        flow="orders", digest="bbb", definition={"v": 2}
    )

    assert first == again and first[1] == 1
    assert changed[1] == 2
    assert await store.flow_definition(first[0]) == {"v": 1}


async def test_create_run_with_a_seen_dedupe_key_returns_the_original(store: RunStore):
    version = await new_flow(store)

    run, created = await store.create_run(
        flow="orders",
        flow_version_id=version,
        input={"n": 1},
        trigger="webhook",
        dedupe_key="order-1",
    )
    again, created_again = await store.create_run(
        flow="orders",
        flow_version_id=version,
        input={"n": 2},
        trigger="webhook",
        dedupe_key="order-1",
    )

    assert created and not created_again
    assert again.id == run.id and again.input == {"n": 1}
    assert await store.count_runs() == 1


async def test_claim_runs_never_hands_one_run_to_two_workers(store: RunStore):
    version = await new_flow(store)
    for n in range(40):
        await store.create_run(
            flow="orders", flow_version_id=version, input={"n": n}, trigger="manual"
        )

    claims = await asyncio.gather(
        *(store.claim_runs(owner=f"w{i}", limit=7, lease_seconds=30) for i in range(8))
    )

    claimed = [run.id for batch in claims for run in batch]
    assert len(claimed) == len(set(claimed)) == 40


async def test_claim_runs_takes_over_a_run_whose_lease_ran_out(store: RunStore):
    version = await new_flow(store)
    run, _ = await store.create_run(
        flow="orders",
        flow_version_id=version,
        input={},
        trigger="manual",
        lease_owner="dead-worker",
        lease_seconds=0.2,
    )

    assert await store.claim_runs(owner="alive", limit=5, lease_seconds=30) == []
    await asyncio.sleep(0.3)
    [taken] = await store.claim_runs(owner="alive", limit=5, lease_seconds=30)

    assert taken.id == run.id and taken.status == "running"


async def test_record_retry_requeues_the_run_for_later(store: RunStore):
    version = await new_flow(store)
    run, _ = await store.create_run(
        flow="orders",
        flow_version_id=version,
        input={},
        trigger="manual",
        lease_owner="w1",
    )
    later = time.time() + 60

    await store.record_retry(
        run_id=run.id,
        step="push",
        attempt=1,
        input={"a": 1},
        error="503",
        started_at=time.time(),
        next_attempt_at=later,
    )

    stored = await store.get_run(run.id)
    assert (stored.status, stored.current_step, stored.current_attempts) == (
        "queued",
        "push",
        1,
    )
    assert stored.due_at == pytest.approx(later)
    assert await store.claim_runs(owner="w2", limit=5, lease_seconds=30) == []


async def test_step_data_over_the_budget_is_cut_with_a_visible_marker(store_url: str):
    store = RunStore(store_url, step_data_budget_bytes=1024)
    await store.migrate()
    try:
        version = await new_flow(store)
        run, _ = await store.create_run(
            flow="orders", flow_version_id=version, input={}, trigger="manual"
        )
        await store.record_success(
            run_id=run.id,
            step="big",
            attempt=1,
            input={"small": 1},
            output={"blob": "x" * 5000},
            started_at=time.time(),
        )

        [attempt] = await store.attempts(run.id)
    finally:
        await store.close()
    assert attempt.input == {"small": 1}
    assert attempt.output[CUT_MARKER] is True
    assert attempt.output["bytes"] > 5000
    assert attempt.output["preview"].startswith('{"blob":"xxx')


async def test_dead_letter_replay_queues_the_run_with_the_corrected_input(
    store: RunStore,
):
    version = await new_flow(store)
    run, _ = await store.create_run(
        flow="orders", flow_version_id=version, input={}, trigger="manual"
    )
    letter = await park(store, run.id, input={"qty": -1})

    await store.replay_dead_letter(letter, corrected_input={"qty": 1})

    replayed = await store.get_run(run.id)
    assert replayed.status == "queued" and replayed.overrides == {"push": {"qty": 1}}
    assert (await store.dead_letter(letter)).status == "replayed"
    with pytest.raises(errors.StoreError, match="is replayed, not open"):
        await store.replay_dead_letter(letter)


async def test_prune_deletes_finished_runs_past_retention_but_keeps_open_dead_letters(
    store: RunStore,
):
    version = await new_flow(store, retention_days=1)
    finished = []
    for n in range(12):
        run, _ = await store.create_run(
            flow="orders", flow_version_id=version, input={"n": n}, trigger="manual"
        )
        await store.record_success(
            run_id=run.id,
            step="a",
            attempt=1,
            input=None,
            output={"n": n},
            started_at=time.time(),
        )
        await store.finish_run(run.id)
        finished.append(run.id)
    parked, _ = await store.create_run(
        flow="orders", flow_version_id=version, input={}, trigger="manual"
    )
    await park(store, parked.id, step="a")
    fresh, _ = await store.create_run(
        flow="orders", flow_version_id=version, input={}, trigger="manual"
    )

    removed = await retention.prune(store, batch_size=5, now=time.time() + 2 * 86_400)

    assert removed == 12
    remaining = {run.id for run in await store.list_runs(limit=100)}
    assert remaining == {parked.id, fresh.id}
    assert await store.attempts(finished[0]) == []


async def test_prune_deletes_replay_jobs_finished_past_the_default_retention(
    store: RunStore,
):
    for job_id in ("old", "recent", "unfinished"):
        await store.create_replay_job(
            job_id, actor="olga", letter_ids=[1], owner="p", lease_seconds=30
        )
    for job_id in ("old", "recent"):
        await store.record_replay_result(
            job_id, {"letter": 1, "run_id": "r"}, owner="p", lease_seconds=30
        )
    month = retention.DEFAULT_RETENTION_DAYS * retention.SECONDS_PER_DAY
    j = tables.replay_jobs
    await store._write(
        lambda conn: conn.execute(
            j.update()
            .where(j.c.id == "old")
            .values(finished_at=time.time() - month - 60)
        )
    )

    await retention.prune(store)

    kept = {job.id for job in await store.recent_replay_jobs(10)}
    assert kept == {"recent", "unfinished"}


async def test_prune_shrinks_the_sqlite_file(tmp_path: Path):
    path = tmp_path / "runs.db"
    store = RunStore(f"sqlite:///{path}")
    await store.migrate()
    try:
        version = await new_flow(store, retention_days=1)
        for n in range(300):
            run, _ = await store.create_run(
                flow="orders",
                flow_version_id=version,
                input={"pad": "p" * 2000, "n": n},
                trigger="manual",
            )
            await store.record_success(
                run_id=run.id,
                step="a",
                attempt=1,
                input={"pad": "q" * 2000},
                output={"pad": "r" * 2000},
                started_at=time.time(),
            )
            await store.finish_run(run.id)
        async with store.engine.connect() as conn:
            await conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        size_before = os.path.getsize(path)

        removed = await retention.prune(store, now=time.time() + 2 * 86_400)
        async with store.engine.connect() as conn:
            await conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        size_after = os.path.getsize(path)
    finally:
        await store.close()

    assert removed == 300
    assert size_after < size_before / 4, (size_before, size_after)


async def test_a_dead_letter_is_replayed_once_even_when_asked_at_once(store: RunStore):
    version = await new_flow(store)
    run, _ = await store.create_run(
        flow="orders", flow_version_id=version, input={}, trigger="manual"
    )
    letter = await park(store, run.id)

    outcomes = await asyncio.gather(
        *(store.replay_dead_letter(letter) for _ in range(6)), return_exceptions=True
    )

    assert sum(1 for o in outcomes if o == run.id) == 1
    assert all(isinstance(o, errors.StoreError) for o in outcomes if o != run.id)


@pytest.mark.parametrize("value", [7, 2.5, "7", True, None, [1, "a"], {"n": 1}])
async def test_run_input_of_any_json_type_reads_back_the_same(store: RunStore, value):
    # SQLite hands bare numbers in JSON columns back already decoded
    version = await new_flow(store)
    run, _ = await store.create_run(
        flow="orders", flow_version_id=version, input=value, trigger="manual"
    )

    assert (await store.get_run(run.id)).input == value
