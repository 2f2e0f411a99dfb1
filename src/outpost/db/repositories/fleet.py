"""The dispatch figures of the fleet's health report: what waits or runs now, and what finished lately."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select

from outpost.db.store import Connection
from outpost.db.tables import dispatches
from outpost.domain.dispatch import ACTIVE_STATUSES, DispatchStatus

_UNFINISHED = [DispatchStatus.QUEUED.value, *(status.value for status in ACTIVE_STATUSES)]


@dataclass(frozen=True, slots=True)
class UnfinishedCount:
    """Dispatches of one agent in one unfinished status, held back by admission or not."""

    agent: str
    status: str
    held: bool
    count: int
    oldest_created_at: datetime


@dataclass(frozen=True, slots=True)
class FinishedRun:
    id: str
    agent: str
    status: str
    failure_reason: str | None
    started_at: datetime | None
    """None for a dispatch that never started (cancelled while queued)."""
    finished_at: datetime


async def unfinished_counts(conn: Connection) -> list[UnfinishedCount]:
    """Queued, provisioning and running dispatches by agent, status and whether admission holds them
    (a `queue_reason`: tenant cap or provider quota)."""
    held = dispatches.c.queue_reason.is_not(None).label("held")
    how_many = func.count().label("how_many")
    oldest = func.min(dispatches.c.created_at).label("oldest")
    query = (
        select(dispatches.c.agent, dispatches.c.status, held, how_many, oldest)
        .where(dispatches.c.status.in_(_UNFINISHED))
        .group_by(dispatches.c.agent, dispatches.c.status, held)
    )
    return [
        UnfinishedCount(found.agent, found.status, bool(found.held), int(found.how_many), found.oldest)
        for found in await conn.execute(query)
    ]


async def finished_since(conn: Connection, since: datetime) -> list[FinishedRun]:
    """Every dispatch that finished at or after `since` (the index on `finished_at` bounds the scan)."""
    columns = [dispatches.c[name] for name in FinishedRun.__slots__]
    query = select(*columns).where(dispatches.c.finished_at >= since)
    return [FinishedRun(**found) for found in (await conn.execute(query)).mappings()]
