"""What the claim asks of the store besides the queued rows: tenants' caps and running counts, a lock per
tenant, and queued dispatches held back with a reason."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import BindParameter, ColumnElement, CursorResult, bindparam, func, or_, select, text, update

from outpost.db.repositories.dispatches import DispatchRow
from outpost.db.store import Connection, Dialect
from outpost.db.tables import dispatches, tenants
from outpost.domain.dispatch import ACTIVE_STATUSES, DispatchStatus

_QUEUED = dispatches.c.status == DispatchStatus.QUEUED
# Namespaces the claim's advisory locks, so that no other user of pg_advisory_* locks can collide with them.
_LOCK_NAMESPACE = "outpost.claim.tenant:"


def due(now: datetime | BindParameter[datetime]) -> ColumnElement[bool]:
    """A queued dispatch's condition for being looked at: nothing asked it to wait past `now`."""
    return or_(dispatches.c.not_before.is_(None), dispatches.c.not_before <= now)


# Built once: every worker poll runs it, mostly to find nothing.
_ANY_DUE = (
    select(dispatches.c.id)
    .where(_QUEUED, due(bindparam("due_at", type_=dispatches.c.not_before.type)))
    .limit(1)
)


async def any_due(conn: Connection, now: datetime) -> bool:
    """Whether some queued dispatch may be looked at now (the claim's cheap first question)."""
    return (await conn.execute(_ANY_DUE, {"due_at": now})).first() is not None


async def tenant_cap(conn: Connection, tenant_id: str) -> int | None:
    """The tenant's `max_concurrent_dispatches`; None: no cap (or no such tenant)."""
    query = select(tenants.c.max_concurrent_dispatches).where(tenants.c.id == tenant_id)
    found = (await conn.execute(query)).scalar_one_or_none()
    return int(found) if found is not None else None


async def count_active(conn: Connection, tenant_id: str) -> int:
    """How many of the tenant's dispatches a worker holds (provisioning or running)."""
    query = select(func.count()).where(
        dispatches.c.tenant_id == tenant_id, dispatches.c.status.in_(sorted(ACTIVE_STATUSES))
    )
    return int((await conn.execute(query)).scalar_one())


async def try_lock_tenant(conn: Connection, dialect: Dialect, tenant_id: str) -> bool:
    """Take the tenant's claim lock until the transaction ends; False when another claimer holds it.

    PostgreSQL: a transaction-scoped advisory lock, taken without waiting (claimers never wait on each
    other, so they cannot deadlock). Its holder is the only one counting and claiming the tenant's
    dispatches until it commits, and a claimer that takes it next counts after that commit. SQLite: every
    write transaction already excludes all others, so there is nothing to take.
    """
    if dialect != "postgresql":
        return True
    statement = text("SELECT pg_try_advisory_xact_lock(hashtextextended(:key, 0))")
    return bool((await conn.execute(statement, {"key": _LOCK_NAMESPACE + tenant_id})).scalar_one())


async def lock_tenant(conn: Connection, dialect: Dialect, tenant_id: str) -> None:
    """Take the tenant's claim lock until the transaction ends, waiting for a claimer that holds it: what
    that claimer decided (a dispatch held back, its job for later) is committed and visible to the next
    statement. A claimer that tries meanwhile is locked out and tries again soon. SQLite: nothing to
    take (see `try_lock_tenant`)."""
    if dialect != "postgresql":
        return
    statement = text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))")
    await conn.execute(statement, {"key": _LOCK_NAMESPACE + tenant_id})


async def set_not_before(conn: Connection, dispatch_id: str, not_before: datetime | None) -> None:
    """Only the time: no version change and no event (the reason, which people see, is unchanged)."""
    await conn.execute(update(dispatches).where(dispatches.c.id == dispatch_id).values(not_before=not_before))


async def hold_tenant_queued(
    conn: Connection, dialect: Dialect, tenant_id: str, reason: str, now: datetime, limit: int
) -> list[DispatchRow]:
    """Give up to `limit` of the tenant's due queued dispatches `reason`, where it is not theirs yet.

    Each changed row gets a new version and one reserved event sequence number, for the status event
    the caller writes. On PostgreSQL rows another transaction holds are left for a later claim.
    """
    not_told = dispatches.c.queue_reason.is_distinct_from(reason)
    targets = (
        select(dispatches.c.id)
        .where(dispatches.c.tenant_id == tenant_id, _QUEUED, due(now), not_told)
        .order_by(dispatches.c.id)
        .limit(limit)
    )
    if dialect == "postgresql":
        targets = targets.with_for_update(skip_locked=True)
    statement = (
        update(dispatches)
        .where(dispatches.c.id.in_(targets.scalar_subquery()))
        .values(
            version=dispatches.c.version + 1,
            event_seq=dispatches.c.event_seq + 1,
            queue_reason=reason,
            not_before=None,
        )
        .returning(*dispatches.c)
    )
    return [DispatchRow(**found) for found in (await conn.execute(statement)).mappings()]


async def release_waits(conn: Connection, now: datetime) -> int:
    """Make every queued dispatch told to wait past `now` due again (a quota ended early); the next
    claim looks at each afresh. How many there were."""
    statement = update(dispatches).where(_QUEUED, dispatches.c.not_before > now).values(not_before=None)
    return int(cast(CursorResult[Any], await conn.execute(statement)).rowcount or 0)
