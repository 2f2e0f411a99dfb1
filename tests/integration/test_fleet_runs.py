"""The procrastinate queue backend's bookkeeping on real PostgreSQL, without worker processes: each queued
dispatch has one job, written in the transaction that queues it; claims by id follow the admission rules;
what a dead or stopping worker held goes back to the queue (or fails `worker_lost`) with a new job."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import text

from outpost.agents.catalog import default_catalog
from outpost.db.job_queue_schema import check_job_queue_schema, installed_version
from outpost.db.migrate import upgrade_to_head
from outpost.db.repositories import dispatches as dispatch_repo
from outpost.db.repositories import events as event_repo
from outpost.db.repositories import queue_jobs
from outpost.db.repositories import workers as worker_repo
from outpost.db.repositories.dispatches import DispatchRow
from outpost.db.store import Store
from outpost.db.types import utc_now
from outpost.domain.dispatch import DispatchStatus
from outpost.domain.ids import new_ulid
from outpost.events.inprocess import InProcessBus
from outpost.ledger.metrics import LedgerMetrics
from outpost.ledger.prices import build_price_table
from outpost.ledger.settings import LedgerSettings
from outpost.ledger.settlement import Ledger
from outpost.services.admission import Admission
from outpost.services.fleet_runs import FleetRuns
from outpost.services.lifecycle import transition
from tests.integration.queue_rows import new_tenant, queued_row

pytestmark = pytest.mark.postgres
RECHECK_S = 7.0


@dataclass
class Fleet:
    """A migrated store with procrastinate's schema, and the fleet workers' use cases on it."""

    store: Store
    runs: FleetRuns

    async def tenant(self, cap: int | None = None) -> str:
        return await new_tenant(self.store, cap)

    async def submit(self, tenant_id: str) -> str:
        """A queued dispatch and its job, written together as the API's submit writes them."""
        dispatch_id = new_ulid()
        async with self.store.write() as conn:
            await dispatch_repo.insert_dispatch(conn, queued_row(dispatch_id, tenant_id))
            await queue_jobs.defer(conn, dispatch_id)
        return dispatch_id

    async def worker(self, *, silent_for_s: float = 0) -> str:
        """A registered worker whose last heartbeat was `silent_for_s` ago."""
        worker_id = f"host-1-{new_ulid()}"
        beat = utc_now() - timedelta(seconds=silent_for_s)
        row = worker_repo.WorkerRow(
            id=worker_id, host="host", pid=1, version="test", slots=1, busy=0, agents=["shell"],
            draining=False, started_at=beat, heartbeat_at=beat,
        )  # fmt: skip
        async with self.store.write() as conn:
            await worker_repo.register(conn, row)
        return worker_id

    async def dispatch(self, dispatch_id: str) -> DispatchRow:
        async with self.store.read() as conn:
            row = await dispatch_repo.get_dispatch(conn, dispatch_id)
        assert row is not None
        return row

    async def jobs(self, dispatch_id: str) -> list[dict[str, Any]]:
        query = text(
            "SELECT id, status::text AS status, queue_name, args, scheduled_at FROM procrastinate_jobs "
            "WHERE queueing_lock = :id ORDER BY id"
        )
        async with self.store.read() as conn:
            return [dict(row) for row in (await conn.execute(query, {"id": dispatch_id})).mappings()]

    async def take_job(self, dispatch_id: str, procrastinate_worker: int | None = None) -> None:
        """Mark the dispatch's waiting job taken (`doing`), as a procrastinate worker's fetch does."""
        statement = text(
            "UPDATE procrastinate_jobs SET status = 'doing', worker_id = :worker "
            "WHERE queueing_lock = :id AND status = 'todo'"
        )
        async with self.store.write() as conn:
            await conn.execute(statement, {"id": dispatch_id, "worker": procrastinate_worker})

    async def notes(self, dispatch_id: str) -> list[str]:
        async with self.store.read() as conn:
            rows = await event_repo.list_events(conn, dispatch_id, 0, 100)
        return [str(row.data["note"]) for row in rows if row.kind == "status" and "note" in row.data]


@asynccontextmanager
async def open_fleet(database_url: str) -> AsyncIterator[Fleet]:
    store = Store(database_url)
    await upgrade_to_head(store, job_queue=True)
    ledger = Ledger(build_price_table(default_catalog(), LedgerSettings()), LedgerMetrics())
    runs = FleetRuns(store, Admission(default_catalog()), 2, InProcessBus(), ledger, RECHECK_S)
    try:
        yield Fleet(store, runs)
    finally:
        await store.dispose()


@pytest.fixture
async def fleet(pg_database: str) -> AsyncIterator[Fleet]:
    async with open_fleet(pg_database) as opened:
        yield opened


async def test_the_schema_is_applied_once_and_names_the_procrastinate_that_wrote_it(fleet: Fleet) -> None:
    await upgrade_to_head(fleet.store, job_queue=True)  # again: nothing to do, nothing fails
    async with fleet.store.read() as conn:
        await check_job_queue_schema(conn)
        comment = (
            await conn.execute(text("SELECT obj_description('procrastinate_jobs'::regclass)"))
        ).scalar()
    assert comment == f"procrastinate schema {installed_version()}, applied by Outpost"


async def test_a_dispatch_and_its_job_commit_or_roll_back_together(fleet: Fleet) -> None:
    tenant = await fleet.tenant()
    dispatch_id = await fleet.submit(tenant)
    [job] = await fleet.jobs(dispatch_id)
    assert (job["status"], job["queue_name"], job["args"]) == (
        "todo",
        "agent.shell",
        {"dispatch_id": dispatch_id},
    )
    assert not await fleet.runs.repair_jobs(30)  # it has its job: nothing to repair
    rolled_back = new_ulid()

    async def submit_failing_after_its_job() -> None:
        async with fleet.store.write() as conn:
            await dispatch_repo.insert_dispatch(conn, queued_row(rolled_back, tenant))
            assert await queue_jobs.defer(conn, rolled_back)
            raise RuntimeError("the submit failed after its job was written")

    with pytest.raises(RuntimeError):
        await submit_failing_after_its_job()
    assert await fleet.jobs(rolled_back) == []


async def test_a_claim_names_its_worker_and_a_dispatch_held_by_its_tenant_cap_gets_a_later_job(
    fleet: Fleet,
) -> None:
    tenant = await fleet.tenant(cap=1)
    first, second = await fleet.submit(tenant), await fleet.submit(tenant)
    worker = await fleet.worker()
    await fleet.take_job(first)
    claimed = await fleet.runs.claim(first, worker)
    assert claimed is not None
    assert (claimed.status, claimed.attempt, claimed.worker_id) == ("provisioning", 1, worker)
    await fleet.take_job(second)
    before = utc_now()
    assert await fleet.runs.claim(second, worker) is None
    held = await fleet.dispatch(second)
    assert (held.status, held.worker_id) == ("queued", None)
    assert held.queue_reason is not None
    assert "max_concurrent_dispatches (1)" in held.queue_reason
    taken, waiting = await fleet.jobs(second)
    assert (taken["status"], waiting["status"]) == ("doing", "todo")
    assert waiting["scheduled_at"] >= before + timedelta(seconds=RECHECK_S - 1)
    assert await fleet.runs.claim(first, worker) is None  # no longer queued: nothing to wait for
    assert len(await fleet.jobs(first)) == 1


async def test_what_a_silent_worker_held_is_queued_again_then_fails_worker_lost_after_its_attempts(
    fleet: Fleet,
) -> None:
    dispatch_id = await fleet.submit(await fleet.tenant())
    for attempt, lost in [(1, "queued"), (2, "failed")]:
        silent = await fleet.worker(silent_for_s=60)
        await fleet.take_job(dispatch_id)
        claimed = await fleet.runs.claim(dispatch_id, silent)
        assert claimed is not None
        assert claimed.attempt == attempt
        assert await fleet.runs.reap_lost(stale_s=30) == ((1, 0) if lost == "queued" else (0, 1))
        row = await fleet.dispatch(dispatch_id)
        assert (row.status, row.worker_id) == (lost, None if lost == "queued" else silent)
        statuses = [job["status"] for job in await fleet.jobs(dispatch_id)]
        assert "doing" not in statuses  # the dead worker's job does not linger
        assert statuses[-1] == ("todo" if lost == "queued" else "failed")
    assert row.failure_reason == "worker_lost"
    assert "worker lost during attempt 1; queued again" in await fleet.notes(dispatch_id)
    async with fleet.store.read() as conn:
        gone = await worker_repo.list_workers(conn, seen_since=utc_now() - timedelta(hours=1))
    assert all(found.stopped_at is not None for found in gone)


async def test_a_live_worker_keeps_its_dispatch_and_a_stopping_one_hands_it_back_once(fleet: Fleet) -> None:
    dispatch_id = await fleet.submit(await fleet.tenant())
    live = await fleet.worker()
    await fleet.take_job(dispatch_id)
    claimed = await fleet.runs.claim(dispatch_id, live)
    assert claimed is not None
    assert await fleet.runs.reap_lost(stale_s=30) == (0, 0)
    assert await fleet.runs.hand_back(claimed, live)
    row = await fleet.dispatch(dispatch_id)
    assert (row.status, row.attempt, row.worker_id) == ("queued", 1, None)
    assert "its worker stopped during attempt 1; queued again" in await fleet.notes(dispatch_id)
    assert [job["status"] for job in await fleet.jobs(dispatch_id)] == ["doing", "todo"]
    other = await fleet.worker()
    assert await fleet.runs.claim(dispatch_id, other) is not None
    assert not await fleet.runs.hand_back(claimed, live)  # a late hand-back of attempt 1 changes nothing
    assert (await fleet.dispatch(dispatch_id)).worker_id == other


async def test_a_queued_dispatch_whose_job_is_gone_or_stuck_on_a_dead_worker_gets_a_new_one(
    fleet: Fleet,
) -> None:
    tenant = await fleet.tenant()
    lost_job, stuck_job = await fleet.submit(tenant), await fleet.submit(tenant)
    cancelled, in_progress = await fleet.submit(tenant), await fleet.submit(tenant)
    async with fleet.store.write() as conn:
        await conn.execute(text("DELETE FROM procrastinate_jobs WHERE queueing_lock = :id"), {"id": lost_job})
        dead = (
            await conn.execute(
                text(
                    "INSERT INTO procrastinate_workers (last_heartbeat) VALUES (now() - interval '1 hour') "
                    "RETURNING id"
                )
            )
        ).scalar_one()
    for dispatch_id in (stuck_job, cancelled, in_progress):
        await fleet.take_job(dispatch_id, procrastinate_worker=dead)
    async with fleet.store.write() as conn:
        assert await transition(conn, await fleet.dispatch(cancelled), DispatchStatus.CANCELLED)
    assert await fleet.runs.claim(in_progress, await fleet.worker()) is not None
    assert await fleet.runs.repair_jobs(stale_s=30) == 2
    assert [job["status"] for job in await fleet.jobs(lost_job)] == ["todo"]
    assert [job["status"] for job in await fleet.jobs(stuck_job)] == ["failed", "todo"]
    assert [job["status"] for job in await fleet.jobs(cancelled)] == ["failed"]
    assert [job["status"] for job in await fleet.jobs(in_progress)] == ["doing"]  # the reaper's, if lost
    assert await fleet.runs.repair_jobs(stale_s=30) == 0
