"""A freed slot under a tenant's cap (a dispatch ended, the cap was raised) brings the tenant's held
dispatches forward at once, even when it races a claim of the same tenant (the procrastinate queue)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy import text, update

from outpost.db.repositories import claims as claim_repo
from outpost.db.tables import tenants
from outpost.db.types import utc_now
from tests.integration.test_fleet_runs import RECHECK_S, Fleet, open_fleet

pytestmark = pytest.mark.postgres
_RESCHEDULE = text(
    "UPDATE procrastinate_jobs SET scheduled_at = :later WHERE queueing_lock = :id AND status = 'todo'"
)


@pytest.fixture
async def fleet(pg_database: str) -> AsyncIterator[Fleet]:
    async with open_fleet(pg_database) as opened:
        yield opened


async def _held(fleet: Fleet, cap: int, held: int) -> tuple[str, str, list[str]]:
    """A tenant at its cap: `cap` dispatches claimed, then `held` more whose claims held them back
    (each with a job for after the recheck). The tenant, the worker, and the held dispatches."""
    tenant = await fleet.tenant(cap=cap)
    worker = await fleet.worker()
    for _ in range(cap):
        running = await fleet.submit(tenant)
        await fleet.take_job(running)
        assert await fleet.runs.claim(running, worker) is not None
    waiting = [await fleet.submit(tenant) for _ in range(held)]
    for dispatch_id in waiting:
        await fleet.take_job(dispatch_id)
        assert await fleet.runs.claim(dispatch_id, worker) is None
    return tenant, worker, waiting


async def _waiting_job(fleet: Fleet, dispatch_id: str) -> dict[str, object]:
    [job] = [job for job in await fleet.jobs(dispatch_id) if job["status"] == "todo"]
    return job


async def test_a_release_makes_the_oldest_held_jobs_due_keeping_their_ids(fleet: Fleet) -> None:
    tenant, _, waiting = await _held(fleet, cap=1, held=3)
    before = {dispatch_id: await _waiting_job(fleet, dispatch_id) for dispatch_id in waiting}
    released_at = utc_now()
    await fleet.runs.release_held(tenant, 2)
    after = {dispatch_id: await _waiting_job(fleet, dispatch_id) for dispatch_id in waiting}
    for dispatch_id in waiting[:2]:
        assert after[dispatch_id]["id"] == before[dispatch_id]["id"]
        assert after[dispatch_id]["scheduled_at"] <= released_at + timedelta(seconds=1)  # type: ignore[operator]
    assert after[waiting[2]] == before[waiting[2]]  # beyond the count: still at its recheck
    await fleet.runs.release_held(tenant, None)
    last = await _waiting_job(fleet, waiting[2])
    assert last["scheduled_at"] <= utc_now()  # type: ignore[operator]


async def test_a_release_leaves_a_dispatch_waiting_for_its_quota_and_other_tenants_alone(
    fleet: Fleet,
) -> None:
    tenant, _, [quota_held] = await _held(fleet, cap=1, held=1)
    _, _, [other] = await _held(fleet, cap=1, held=1)
    later = utc_now() + timedelta(minutes=5)
    async with fleet.store.write() as conn:
        await claim_repo.set_not_before(conn, quota_held, later)
    before = (await _waiting_job(fleet, quota_held), await _waiting_job(fleet, other))
    await fleet.runs.release_held(tenant, None)
    assert (await _waiting_job(fleet, quota_held), await _waiting_job(fleet, other)) == before


async def test_a_release_waits_for_a_claim_under_way_and_brings_forward_what_it_held(fleet: Fleet) -> None:
    """The race: a claim counted the tenant before its slot was freed, and holds its dispatch back with a
    job for the recheck. The release takes the tenant's claim lock after that claim, so it sees that job."""
    tenant, _, [waiting] = await _held(fleet, cap=1, held=1)
    async with fleet.store.write() as claim:
        assert await claim_repo.try_lock_tenant(claim, "postgresql", tenant)
        release = asyncio.create_task(fleet.runs.release_held(tenant, 1))
        await asyncio.sleep(0.3)
        assert not release.done()  # waiting for the claim's lock
        # What the claim decides on its stale count: the dispatch waits for the recheck.
        later = utc_now() + timedelta(seconds=RECHECK_S)
        await claim.execute(_RESCHEDULE, {"later": later, "id": waiting})
    await release
    assert (await _waiting_job(fleet, waiting))["scheduled_at"] <= utc_now()  # type: ignore[operator]


async def test_a_claim_locked_out_by_a_release_is_tried_again_at_once_not_at_the_recheck(
    fleet: Fleet,
) -> None:
    tenant, worker, [waiting] = await _held(fleet, cap=1, held=1)
    async with fleet.store.write() as conn:
        await conn.execute(update(tenants).where(tenants.c.id == tenant).values(max_concurrent_dispatches=2))
    await fleet.take_job(waiting)
    async with fleet.store.write() as release:
        await claim_repo.lock_tenant(release, "postgresql", tenant)
        before = utc_now()
        assert await fleet.runs.claim(waiting, worker) is None  # locked out
    job = await _waiting_job(fleet, waiting)
    assert job["scheduled_at"] < before + timedelta(seconds=1)  # type: ignore[operator]
    await fleet.take_job(waiting)
    claimed = await fleet.runs.claim(waiting, worker)
    assert claimed is not None  # the raised cap is read under the lock
