"""Dispatch events: the durable, per-dispatch numbered record of everything that happened."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, delete, insert, select, tuple_, update

from outpost.db.store import Connection
from outpost.db.tables import dispatch_events, dispatches
from outpost.domain.dispatch import TERMINAL_STATUSES


@dataclass(frozen=True, slots=True)
class EventRow:
    dispatch_id: str
    seq: int
    created_at: datetime
    kind: str
    data: dict[str, Any]


async def reserve_seqs(conn: Connection, dispatch_id: str, count: int) -> int | None:
    """Reserve `count` sequence numbers for events of a dispatch that has not ended yet.

    Returns the last reserved number (the first is `last - count + 1`), or None when the dispatch has
    reached a terminal state: its terminal event stays the last one.
    """
    statement = (
        update(dispatches)
        .where(dispatches.c.id == dispatch_id, dispatches.c.status.not_in(list(TERMINAL_STATUSES)))
        .values(event_seq=dispatches.c.event_seq + count)
        .returning(dispatches.c.event_seq)
    )
    last = (await conn.execute(statement)).scalar_one_or_none()
    return int(last) if last is not None else None


async def insert_events(conn: Connection, rows: Sequence[EventRow]) -> None:
    if rows:
        await conn.execute(insert(dispatch_events), [_event_values(row) for row in rows])


async def list_events(conn: Connection, dispatch_id: str, after_seq: int, limit: int) -> list[EventRow]:
    query = (
        select(dispatch_events)
        .where(dispatch_events.c.dispatch_id == dispatch_id, dispatch_events.c.seq > after_seq)
        .order_by(dispatch_events.c.seq)
        .limit(limit)
    )
    return [EventRow(**found) for found in (await conn.execute(query)).mappings()]


async def delete_events_of_finished(conn: Connection, finished_before: datetime, limit: int) -> int:
    """Delete at most `limit` events of dispatches that ended (terminal, `finished_at`) before
    `finished_before`; how many it deleted. The dispatch rows stay. Batched so that no transaction holds
    the write lock for long: call it again until it deletes fewer than `limit`."""
    doomed = (
        select(dispatch_events.c.dispatch_id, dispatch_events.c.seq)
        .join(dispatches, dispatches.c.id == dispatch_events.c.dispatch_id)
        .where(dispatches.c.status.in_(list(TERMINAL_STATUSES)), dispatches.c.finished_at < finished_before)
        .limit(limit)
    )
    key = tuple_(dispatch_events.c.dispatch_id, dispatch_events.c.seq)
    result = cast(CursorResult[Any], await conn.execute(delete(dispatch_events).where(key.in_(doomed))))
    return int(result.rowcount or 0)


def _event_values(row: EventRow) -> dict[str, object]:
    return {name: getattr(row, name) for name in EventRow.__slots__}
