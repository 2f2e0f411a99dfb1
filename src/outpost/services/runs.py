"""Dispatch use cases for workers: claim queued work, record a run's progress and output, settle it."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from outpost.agents.events import Usage
from outpost.db.repositories import claims as claim_repo
from outpost.db.repositories import dispatches as repo
from outpost.db.repositories import events as event_repo
from outpost.db.repositories import tenants as tenant_repo
from outpost.db.repositories.dispatches import DispatchRow
from outpost.db.repositories.events import EventRow
from outpost.db.store import Store
from outpost.db.types import utc_now
from outpost.domain.dispatch import ACTIVE_STATUSES, DispatchStatus, FailureReason
from outpost.events.base import EventBus, EventNotice
from outpost.ledger.settlement import Ledger, Settlement
from outpost.services.admission import Admission
from outpost.services.lifecycle import event_notice, transition

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a run ended, as the worker saw it."""

    status: DispatchStatus
    exit_code: int | None = None
    result: str | None = None
    reason: FailureReason | None = None
    detail: str | None = None
    usage: Usage | None = None
    """Tokens the gateway metered (None: the run called no model)."""
    cost_micro_usd: int = 0
    cli_cost_micro_usd: int | None = None


@dataclass(frozen=True, slots=True)
class NewEvent:
    kind: str
    data: dict[str, object]


class RunService:
    def __init__(
        self, store: Store, max_attempts: int, bus: EventBus, ledger: Ledger, admission: Admission
    ) -> None:
        self._store = store
        self._max_attempts = max_attempts
        self._bus = bus
        self._ledger = ledger
        self._admission = admission

    async def claim(self, limit: int) -> list[DispatchRow]:
        """Move up to `limit` of the oldest queued dispatches that may run now to `provisioning`, starting
        a new attempt; the others that may not (tenant cap, provider quota) stay queued with the reason
        (see `Admission`)."""
        # A read first: on SQLite it is far cheaper than taking the write lock to find nothing.
        async with self._store.read() as conn:
            if not await claim_repo.any_due(conn, utc_now()):
                return []
        async with self._store.write() as conn:
            admitted = await self._admission.claim(conn, self._store.dialect, limit)
        self._bus.publish(event_notice(row) for row in [*admitted.claimed, *admitted.held])
        return admitted.claimed

    async def mark_running(self, row: DispatchRow, base_commit: str | None = None) -> DispatchRow | None:
        """`provisioning` → `running`, with the commit its workspace started from; None when the
        dispatch changed meanwhile (it was cancelled)."""
        async with self._store.write() as conn:
            running = await transition(
                conn, row, DispatchStatus.RUNNING, started_at=utc_now(), base_commit=base_commit
            )
        if running is not None:
            self._bus.publish([event_notice(running)])
        return running

    async def tenant_egress_allow(self, tenant_id: str) -> tuple[str, ...]:
        """The hosts a tenant's runs may reach besides the server's and the dispatch's own. Read as each
        run starts, so that an admin's change applies to dispatches already queued."""
        async with self._store.read() as conn:
            tenant = await tenant_repo.get_tenant(conn, tenant_id)
        return tuple((tenant.egress_allow if tenant else None) or ())

    async def record(self, dispatch_id: str, events: Sequence[NewEvent]) -> bool:
        """Append events; False (and nothing written) once the dispatch has ended."""
        if not events:
            return True
        async with self._store.write() as conn:
            reserved = await event_repo.reserve_seqs(conn, dispatch_id, len(events))
            if reserved is None:
                return False
            now = utc_now()
            first = reserved.last - len(events) + 1
            rows = [EventRow(dispatch_id, first + i, now, e.kind, e.data) for i, e in enumerate(events)]
            await event_repo.insert_events(conn, rows)
        self._bus.publish([EventNotice(reserved.tenant_id, dispatch_id, reserved.last)])
        return True

    async def finish(
        self, dispatch_id: str, outcome: Outcome, attempt: int | None = None
    ) -> DispatchRow | None:
        """Record the terminal state and settle the dispatch's cost, unless it already has one (a cancel
        won the race) or, given the `attempt` that produced the outcome, the dispatch has gone on to
        another attempt since (its worker was taken for lost: a late result must not overwrite the newer
        attempt's)."""
        settled: Settlement | None = None
        async with self._store.write() as conn:
            current = await repo.get_dispatch(conn, dispatch_id)
            if current is None or DispatchStatus(current.status).is_terminal:
                return current
            if attempt is not None and (
                current.attempt != attempt or current.status == DispatchStatus.QUEUED
            ):
                log.warning(
                    "dispatch %s: the result of attempt %d came too late, ignored", dispatch_id, attempt
                )
                return current
            # Inside one write transaction nobody else can change the row, so this cannot lose a race.
            finished = await transition(
                conn, current, outcome.status, reason=outcome.reason, detail=outcome.detail,
                exit_code=outcome.exit_code, result=outcome.result, **_usage_values(outcome),
            )  # fmt: skip
            if finished is not None:
                settled = await self._ledger.settle(conn, finished)
        if settled is not None:
            self._ledger.published([settled])
            self._bus.publish([event_notice(settled.dispatch)])
            return settled.dispatch
        return finished

    async def reconcile_lost(self) -> tuple[int, int]:
        """After a crash: queue again, or fail with `worker_lost`, every dispatch a worker held.

        Call only when no worker of this store can still be running (the embedded server holds the data
        dir lock). Returns (queued again, failed).
        """
        queued_again = failed = 0
        moved: list[DispatchRow | None] = []
        settled: list[Settlement] = []
        async with self._store.write() as conn:
            for row in await repo.list_by_status(conn, ACTIVE_STATUSES):
                if row.attempt < self._max_attempts:
                    note = f"worker lost during attempt {row.attempt}; queued again"
                    moved.append(await transition(conn, row, DispatchStatus.QUEUED, note=note))
                    queued_again += 1
                else:
                    detail = f"the worker was lost during attempt {row.attempt} of {self._max_attempts}"
                    lost = await transition(
                        conn, row, DispatchStatus.FAILED, reason=FailureReason.WORKER_LOST, detail=detail
                    )  # fmt: skip
                    moved.append(lost)
                    if lost is not None:
                        settled.append(await self._ledger.settle(conn, lost))
                    failed += 1
        self._ledger.published(settled)
        self._bus.publish(event_notice(row) for row in moved if row is not None)
        return queued_again, failed


def _usage_values(outcome: Outcome) -> dict[str, Any]:
    """The CLI's own cost report (a cross-check). Tokens and cost are the settlement's, from the
    metered events: the meter's totals in `outcome` are its running view of the same calls."""
    if outcome.usage is None and not outcome.cli_cost_micro_usd:
        return {}
    return {"cli_cost_micro_usd": outcome.cli_cost_micro_usd}
