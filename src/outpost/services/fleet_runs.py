"""Dispatch use cases of fleet workers (the procrastinate queue backend): claim the dispatch a job is for,
hand back what a stopping worker still runs, and take back what workers taken for dead held.

Every change of a dispatch that leaves it queued writes its next job in the same transaction
(`queue_jobs.defer`): a queued dispatch always has a job waiting for it, or a worker claiming it.
`repair_jobs` repairs the rare dispatch that lost its job anyway.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from outpost.db.repositories import claims as claim_repo
from outpost.db.repositories import dispatches as repo
from outpost.db.repositories import fleet_claims, queue_jobs
from outpost.db.repositories import workers as worker_repo
from outpost.db.repositories.dispatches import DispatchRow
from outpost.db.store import Connection, Store
from outpost.db.types import utc_now
from outpost.domain.dispatch import DispatchStatus, FailureReason
from outpost.events.base import EventBus
from outpost.ledger.settlement import Ledger, Settlement
from outpost.services.admission import Admission
from outpost.services.lifecycle import event_notice, transition

log = logging.getLogger(__name__)

REAP_BATCH = 100
"""Dispatches of lost workers taken back per sweep at most (the next sweep takes the rest)."""
ORPHAN_BATCH = 100
"""Queued dispatches without a job given one per sweep at most."""
CONTENDED_RETRY = timedelta(milliseconds=100)
"""When a dispatch whose claim found its tenant's claim lock taken is looked at again."""


class FleetRuns:
    def __init__(
        self,
        store: Store,
        admission: Admission,
        max_attempts: int,
        bus: EventBus,
        ledger: Ledger,
        recheck_s: float,
    ) -> None:
        """`recheck_s`: how soon a dispatch held back without a time to wait for (its tenant at its cap,
        or another worker counting the tenant) is looked at again."""
        self._store = store
        self._admission = admission
        self._max_attempts = max_attempts
        self._bus = bus
        self._ledger = ledger
        self._recheck = timedelta(seconds=recheck_s)

    async def claim(self, dispatch_id: str, worker_id: str) -> DispatchRow | None:
        """Claim the dispatch for `worker_id` (`provisioning`, a new attempt) when it may run now. None
        when it is no longer queued, or must wait: then, in the same transaction that records why, a job
        is written for when it may run (its quota's end, or a short recheck for a tenant cap)."""
        async with self._store.write() as conn:
            admitted = await self._admission.claim_one(conn, self._store.dialect, dispatch_id, worker_id)
            if not admitted.claimed:
                await self._defer_if_queued(conn, dispatch_id, soon=admitted.contended)
        self._bus.publish(event_notice(row) for row in [*admitted.claimed, *admitted.held])
        return admitted.claimed[0] if admitted.claimed else None

    async def hand_back(self, row: DispatchRow, worker_id: str) -> bool:
        """Queue again a dispatch this worker claimed (`row`) and stops running unfinished (it is
        stopping), with a job for the next worker. Nothing happens when the dispatch has moved on since
        (it ended, or was taken back from this worker). True when it was queued again."""
        async with self._store.write() as conn:
            current = await repo.get_dispatch(conn, row.id)
            if current is None or not _still_held(current, row, worker_id):
                return False
            note = f"its worker stopped during attempt {current.attempt}; queued again"
            queued = await transition(conn, current, DispatchStatus.QUEUED, note=note, worker_id=None)
            if queued is not None:
                await queue_jobs.defer(conn, row.id)
        if queued is not None:
            self._bus.publish([event_notice(queued)])
        return queued is not None

    async def reap_lost(self, stale_s: float) -> tuple[int, int]:
        """Take workers silent for `stale_s` for dead (mark them stopped), then queue again, or fail with
        `worker_lost` once it has had its attempts, every dispatch a stopped or silent worker still
        holds: one transaction each, which also fails the dead worker's procrastinate job. Safe in
        several workers at once (each change is versioned). Returns (queued again, failed)."""
        now = utc_now()
        silent_before = now - timedelta(seconds=stale_s)
        async with self._store.write() as conn:
            dead = await worker_repo.silent_since(conn, silent_before)
            await worker_repo.mark_stopped(conn, dead, now)
            held = await fleet_claims.held_by_gone_workers(conn, silent_before, REAP_BATCH)
        if dead:
            log.warning("workers taken for dead after %.1f s without a heartbeat: %s", stale_s, dead)
        queued_again = failed = 0
        for row in held:
            moved = await self._take_back(row)
            if moved is not None:
                queued_again += moved.status == DispatchStatus.QUEUED
                failed += moved.status == DispatchStatus.FAILED
        return queued_again, failed

    async def repair_jobs(self, stale_s: float) -> int:
        """Fail the jobs workers silent for `stale_s` left running for dispatches not in progress, then
        give a job to each queued dispatch that has none. One sweep at a time across the fleet. How
        many dispatches got a job."""
        async with self._store.write() as conn:
            if not await queue_jobs.try_lock_sweep(conn):
                return 0
            await queue_jobs.fail_abandoned(conn, stale_s)
            orphans = await queue_jobs.orphaned(conn, ORPHAN_BATCH)
            for dispatch_id in orphans:
                await queue_jobs.defer(conn, dispatch_id)
        if orphans:
            log.warning("queued dispatches without a job were given one: %s", orphans)
        return len(orphans)

    async def release_held(self, tenant_id: str, count: int | None) -> None:
        """The tenant may run `count` (None: any number) more dispatches at once (one of its dispatches
        ended, or its cap was raised): that many of its oldest dispatches held back by its cap may be
        claimed at once (see `queue_jobs.bring_forward`). Never raises."""
        try:
            async with self._store.write() as conn:
                # After any claim of the tenant under way: a dispatch it holds back on what it counted
                # before the change has its later job committed by then, and is brought forward too.
                await claim_repo.lock_tenant(conn, self._store.dialect, tenant_id)
                await queue_jobs.bring_forward(conn, tenant_id, count)
        except Exception:
            log.exception("held dispatches of tenant %s wait for their recheck", tenant_id)

    async def defer_again(self, dispatch_id: str) -> None:
        """Write a new job, to be taken at once, for a queued dispatch whose job this worker will not run
        (it is stopping)."""
        async with self._store.write() as conn:
            current = await repo.get_dispatch(conn, dispatch_id)
            if current is not None and current.status == DispatchStatus.QUEUED:
                await queue_jobs.defer(conn, dispatch_id)

    async def ended_among(self, dispatch_ids: set[str]) -> set[str]:
        """Those of the dispatches that have ended (a cancel recorded by the API without this worker)."""
        async with self._store.read() as conn:
            return await fleet_claims.ended_among(conn, dispatch_ids)

    async def _defer_if_queued(self, conn: Connection, dispatch_id: str, *, soon: bool) -> None:
        """Its next job: at its quota's end, else after the recheck, or `soon` when the claim was locked
        out by another claim or a release of the tenant (which may have just made room)."""
        current = await repo.get_dispatch(conn, dispatch_id)
        if current is None or current.status != DispatchStatus.QUEUED:
            return  # cancelled, or claimed through another job: nothing to wait for
        now = utc_now()
        waits_until = current.not_before if current.not_before and current.not_before > now else None
        retry = CONTENDED_RETRY if soon else self._recheck
        await queue_jobs.defer(conn, dispatch_id, waits_until or now + retry)

    async def _take_back(self, row: DispatchRow) -> DispatchRow | None:
        """Queue again, or fail, a dispatch its worker lost; None when it moved on meanwhile."""
        settled: Settlement | None = None
        async with self._store.write() as conn:
            if row.attempt < self._max_attempts:
                note = f"worker lost during attempt {row.attempt}; queued again"
                moved = await transition(conn, row, DispatchStatus.QUEUED, note=note, worker_id=None)
            else:
                detail = f"the worker was lost during attempt {row.attempt} of {self._max_attempts}"
                moved = await transition(
                    conn, row, DispatchStatus.FAILED, reason=FailureReason.WORKER_LOST, detail=detail
                )  # fmt: skip
                settled = await self._ledger.settle(conn, moved) if moved is not None else None
            if moved is not None:
                await queue_jobs.fail_running(conn, row.id)
                if moved.status == DispatchStatus.QUEUED:
                    await queue_jobs.defer(conn, row.id)
        if settled is not None:
            self._ledger.published([settled])
            moved = settled.dispatch
        if moved is not None:
            self._bus.publish([event_notice(moved)])
        return moved


def _still_held(current: DispatchRow, claimed: DispatchRow, worker_id: str) -> bool:
    """Whether the dispatch is still in the attempt `claimed` started, on this worker."""
    return (
        DispatchStatus(current.status).is_active
        and current.attempt == claimed.attempt
        and current.worker_id == worker_id
    )
