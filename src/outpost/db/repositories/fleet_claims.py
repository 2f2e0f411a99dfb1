"""What fleet workers ask of the dispatches besides the claim's own queries: one queued dispatch locked
for a claim by id, the dispatches that workers taken for dead still hold, and which runs have ended."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import or_, select

from outpost.db.repositories.claims import due
from outpost.db.repositories.dispatches import DispatchRow
from outpost.db.store import Connection, Dialect
from outpost.db.tables import dispatches, tenants, workers
from outpost.domain.dispatch import ACTIVE_STATUSES, TERMINAL_STATUSES, DispatchStatus


@dataclass(frozen=True, slots=True)
class LockedQueued:
    row: DispatchRow
    tenant_cap: int | None
    """Its tenant's `max_concurrent_dispatches` as read with it (None: no cap), so that a claim of a
    tenant without a cap makes no second round trip."""


async def lock_queued(
    conn: Connection, dialect: Dialect, dispatch_id: str, due_at: datetime
) -> LockedQueued | None:
    """The dispatch if it is queued and due at `due_at`, locked for claiming until the transaction ends;
    None otherwise (claimed, cancelled, or told to wait).

    PostgreSQL: `FOR UPDATE` of the dispatch (not of its tenant), which waits for a transaction changing
    the row (a cancel) and then reads it as that left it. SQLite: the caller's write transaction
    excludes every other writer.
    """
    cap = tenants.c.max_concurrent_dispatches.label("tenant_cap")
    query = (
        select(dispatches, cap)
        .join(tenants, tenants.c.id == dispatches.c.tenant_id, isouter=True)
        .where(dispatches.c.id == dispatch_id, dispatches.c.status == DispatchStatus.QUEUED, due(due_at))
    )
    if dialect == "postgresql":
        query = query.with_for_update(of=dispatches)
    found = (await conn.execute(query)).mappings().first()
    if found is None:
        return None
    values = dict(found)
    tenant_cap = values.pop("tenant_cap")
    return LockedQueued(DispatchRow(**values), None if tenant_cap is None else int(tenant_cap))


async def held_by_gone_workers(conn: Connection, silent_before: datetime, limit: int) -> list[DispatchRow]:
    """Dispatches in progress (provisioning, running) whose worker has stopped, or has not beaten since
    `silent_before`: nobody will finish them. Oldest first."""
    gone = or_(workers.c.stopped_at.is_not(None), workers.c.heartbeat_at < silent_before)
    query = (
        select(dispatches)
        .join(workers, workers.c.id == dispatches.c.worker_id)
        .where(dispatches.c.status.in_(sorted(ACTIVE_STATUSES)), gone)
        .order_by(dispatches.c.id)
        .limit(limit)
    )
    return [DispatchRow(**found) for found in (await conn.execute(query)).mappings()]


async def ended_among(conn: Connection, dispatch_ids: Collection[str]) -> set[str]:
    """Those of `dispatch_ids` that have ended (succeeded, failed, timed out, cancelled)."""
    if not dispatch_ids:
        return set()
    query = select(dispatches.c.id).where(
        dispatches.c.id.in_(sorted(dispatch_ids)), dispatches.c.status.in_(sorted(TERMINAL_STATUSES))
    )
    return {str(found) for found in (await conn.execute(query)).scalars()}
