"""Dispatch events: the durable, per-dispatch numbered record of everything that happened."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    CursorResult,
    Insert,
    Integer,
    Text,
    bindparam,
    delete,
    func,
    insert,
    literal_column,
    select,
    tuple_,
    update,
)
from sqlalchemy import Connection as SyncConnection
from sqlalchemy import cast as sql_cast

from outpost.db.store import Connection
from outpost.db.tables import dispatch_events, dispatches, event_feed_clock
from outpost.domain.dispatch import TERMINAL_STATUSES


@dataclass(frozen=True, slots=True)
class EventRow:
    dispatch_id: str
    seq: int
    created_at: datetime
    kind: str
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ReservedSeqs:
    last: int
    """The last reserved number; the first is `last - count + 1`."""
    tenant_id: str
    """The dispatch's tenant (readers of its events are woken by tenant and dispatch)."""


# The statements of the hot paths (every batch of output written, every wake-up of a stream's reader) are
# built once: building and keying a statement per call cost more than running it. The terminal statuses
# are constants written into the SQL, not an expanding IN list re-rendered on each execution.
_NOT_ENDED = dispatches.c.status.not_in(
    [literal_column(f"'{status}'") for status in sorted(TERMINAL_STATUSES)]
)
_RESERVE_SEQS = (
    update(dispatches)
    .where(dispatches.c.id == bindparam("reserve_dispatch_id"), _NOT_ENDED)
    .values(event_seq=dispatches.c.event_seq + bindparam("reserve_count", type_=BigInteger))
    .returning(dispatches.c.event_seq, dispatches.c.tenant_id)
)
_EVENT_COLUMNS = [dispatch_events.c[name] for name in EventRow.__slots__]
_LIST_EVENTS = (
    select(*_EVENT_COLUMNS)
    .where(
        dispatch_events.c.dispatch_id == bindparam("list_dispatch_id"),
        dispatch_events.c.seq > bindparam("list_after_seq", type_=BigInteger),
    )
    .order_by(dispatch_events.c.seq)
    .limit(bindparam("list_limit", type_=Integer))
)


async def reserve_seqs(conn: Connection, dispatch_id: str, count: int) -> ReservedSeqs | None:
    """Reserve `count` sequence numbers for events of a dispatch that has not ended yet.

    None when the dispatch has reached a terminal state: its terminal event stays the last one.
    """
    parameters = {"reserve_dispatch_id": dispatch_id, "reserve_count": count}
    found = (await conn.execute(_RESERVE_SEQS, parameters)).first()
    return ReservedSeqs(int(found.event_seq), found.tenant_id) if found is not None else None


async def insert_events(conn: Connection, rows: Sequence[EventRow]) -> None:
    """Insert events, stamped with the writing transaction's place in the tenant-wide event feed."""
    if rows:
        statement, feed_txn = await _feed_insert(conn)
        await conn.execute(statement, [_event_values(row, feed_txn) for row in rows])


async def list_events(conn: Connection, dispatch_id: str, after_seq: int, limit: int) -> list[EventRow]:
    parameters = {"list_dispatch_id": dispatch_id, "list_after_seq": after_seq, "list_limit": limit}
    return [EventRow(**found) for found in (await conn.execute(_LIST_EVENTS, parameters)).mappings()]


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


def _event_values(row: EventRow, feed_txn: int | None = None) -> dict[str, object]:
    values: dict[str, object] = {name: getattr(row, name) for name in EventRow.__slots__}
    if feed_txn is not None:
        values["feed_txn"] = feed_txn
    return values


_PG_TRANSACTION_ID = sql_cast(sql_cast(func.pg_current_xact_id(), Text), BigInteger)
_INSERT_STAMPED_BY_POSTGRESQL = insert(dispatch_events).values(feed_txn=_PG_TRANSACTION_ID)
_INSERT = insert(dispatch_events)
_NEXT_CLOCK_VALUE = (
    update(event_feed_clock)
    .where(event_feed_clock.c.id == 1)
    .values(last_txn=event_feed_clock.c.last_txn + 1)
    .returning(event_feed_clock.c.last_txn)
)


async def _feed_insert(conn: Connection) -> tuple[Insert, int | None]:
    """How to stamp events with the feed position of the transaction `conn` writes in (dialect-specific,
    see event_feed.py): the insert statement, and the value to give each row, if any.

    PostgreSQL: the transaction's own id, taken by the statement. SQLite: the next value of the clock
    row; SQLite has one writer at a time, so values grow in commit order, and they never go back even
    when old events are deleted.
    """
    if await conn.run_sync(_dialect_name) == "postgresql":
        return _INSERT_STAMPED_BY_POSTGRESQL, None
    return _INSERT, int((await conn.execute(_NEXT_CLOCK_VALUE)).scalar_one())


def _dialect_name(connection: SyncConnection) -> str:
    return connection.dialect.name
