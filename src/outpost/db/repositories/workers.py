"""The worker fleet (`workers`): each worker process registers, beats, drains and leaves."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, insert, select, update

from outpost.db.store import Connection
from outpost.db.tables import workers


@dataclass(frozen=True, slots=True)
class WorkerRow:
    id: str
    """Unique per process start: `<host>-<pid>-<ulid>`."""
    host: str
    pid: int
    version: str
    """Outpost's version on that worker."""
    slots: int
    """Dispatches it runs at once at most."""
    busy: int
    """Dispatches it was running at its last heartbeat."""
    agents: list[str]
    """The agents it can run (their CLIs are installed and ready there)."""
    draining: bool
    """It takes no new work: it is finishing or handing back what it runs, then exits."""
    started_at: datetime
    heartbeat_at: datetime
    stopped_at: datetime | None = None
    """When it exited cleanly; None while it runs, or if it died."""


async def register(conn: Connection, row: WorkerRow) -> None:
    await conn.execute(insert(workers).values({name: getattr(row, name) for name in WorkerRow.__slots__}))


async def beat(conn: Connection, worker_id: str, busy: int, now: datetime) -> bool:
    """Record a heartbeat; False when the worker's row is gone or it was marked stopped (it was taken
    for dead: it must stop taking work)."""
    statement = (
        update(workers)
        .where(workers.c.id == worker_id, workers.c.stopped_at.is_(None))
        .values(busy=busy, heartbeat_at=now)
    )
    return bool(cast(CursorResult[Any], await conn.execute(statement)).rowcount)


async def set_draining(conn: Connection, worker_id: str) -> None:
    await conn.execute(update(workers).where(workers.c.id == worker_id).values(draining=True))


async def mark_stopped(conn: Connection, worker_ids: Sequence[str], now: datetime) -> None:
    """The workers exited, or were found dead: they hold nothing any more."""
    if worker_ids:
        statement = (
            update(workers)
            .where(workers.c.id.in_(worker_ids), workers.c.stopped_at.is_(None))
            .values(stopped_at=now, busy=0)
        )
        await conn.execute(statement)


async def list_workers(conn: Connection, *, seen_since: datetime) -> list[WorkerRow]:
    """Workers that have not stopped, or that beat since `seen_since` (recently gone ones too), oldest
    first."""
    query = (
        select(workers)
        .where((workers.c.stopped_at.is_(None)) | (workers.c.heartbeat_at >= seen_since))
        .order_by(workers.c.started_at, workers.c.id)
    )
    return [WorkerRow(**found) for found in (await conn.execute(query)).mappings()]


async def silent_since(conn: Connection, cutoff: datetime) -> list[str]:
    """Workers not stopped whose last heartbeat is older than `cutoff`: presumed dead."""
    query = select(workers.c.id).where(workers.c.stopped_at.is_(None), workers.c.heartbeat_at < cutoff)
    return [str(worker_id) for worker_id in (await conn.execute(query)).scalars()]
