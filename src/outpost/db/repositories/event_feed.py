"""The tenant-wide event feed: every event of a tenant's dispatches, in one order a reader can resume.

A position is (`feed_txn`, `dispatch_id`, `seq`): the transaction that wrote the event first, then the
dispatch and its sequence number (one transaction may write events of several dispatches, for example a
worker claiming many). A reader that has passed a position must never later find a row before it:

- SQLite has one writer at a time, and each transaction that writes events takes the next value of the
  `event_feed_clock` row (see `events._feed_txn`), so values grow in commit order.
- PostgreSQL commits concurrent transactions in any order of their ids. A reader therefore takes only
  rows of transactions below its snapshot's xmin (every transaction below it has ended, so no row can
  appear there later) and leaves newer ones for its next read (`FeedPage.withheld`). A transaction that
  stays open holds the feed back (never loses it) for as long as it is open.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import BigInteger, ColumnElement, Text, cast, func, select, tuple_

from outpost.db.repositories.events import EventRow
from outpost.db.store import Connection, Dialect
from outpost.db.tables import dispatch_events, dispatches, event_feed_clock


@dataclass(frozen=True, slots=True)
class FeedPosition:
    """A place in the feed: just after the event (`txn`, `dispatch_id`, `seq`), or, without a
    `dispatch_id`, just after every event of transaction `txn`."""

    txn: int
    dispatch_id: str | None = None
    seq: int = 0


@dataclass(frozen=True, slots=True)
class FeedBounds:
    """Where the feed stands for a reader now."""

    start: FeedPosition
    """Everything up to here is complete: a reader starting here sees only later events."""
    next_txn: int
    """No event can be at or past this transaction yet: a position there comes from the future."""


@dataclass(frozen=True, slots=True)
class FeedEvent:
    position: FeedPosition
    event: EventRow


@dataclass(frozen=True, slots=True)
class FeedPage:
    events: list[FeedEvent]
    withheld: bool
    """Newer events are committed but wait for an older transaction to end (PostgreSQL): read again soon."""


def _pg_snapshot_field(name: str) -> ColumnElement[int]:
    snapshot_field = getattr(func, name)(func.pg_current_snapshot())
    return cast(cast(snapshot_field, Text), BigInteger)


_PG_XMIN = _pg_snapshot_field("pg_snapshot_xmin")
_PG_XMAX = _pg_snapshot_field("pg_snapshot_xmax")
_EVENT_COLUMNS = [dispatch_events.c[name] for name in EventRow.__slots__]


async def feed_bounds(conn: Connection, dialect: Dialect) -> FeedBounds:
    """The feed's current start and end, as this reader's snapshot sees them."""
    if dialect == "postgresql":
        xmin, xmax = tuple((await conn.execute(select(_PG_XMIN, _PG_XMAX))).one())
        return FeedBounds(FeedPosition(int(xmin) - 1), int(xmax))
    clock = select(event_feed_clock.c.last_txn).where(event_feed_clock.c.id == 1)
    last = int((await conn.execute(clock)).scalar_one())
    return FeedBounds(FeedPosition(last), last + 1)


async def read_feed(
    conn: Connection,
    dialect: Dialect,
    tenant_id: str,
    after: FeedPosition,
    dispatch_ids: Sequence[str],
    limit: int,
) -> FeedPage:
    """Up to `limit` events of the tenant's dispatches (of `dispatch_ids` only, when given) after `after`,
    in feed order, stopping before the first one a reader may not take yet."""
    e = dispatch_events.c
    horizon = [_PG_XMIN.label("horizon")] if dialect == "postgresql" else []
    query = (
        select(*_EVENT_COLUMNS, e.feed_txn, *horizon)
        .join(dispatches, dispatches.c.id == e.dispatch_id)
        .where(dispatches.c.tenant_id == tenant_id, _after(after))
        .order_by(e.feed_txn, e.dispatch_id, e.seq)
        .limit(limit)
    )
    if dispatch_ids:
        query = query.where(e.dispatch_id.in_(list(dispatch_ids)))
    taken: list[FeedEvent] = []
    for found in (await conn.execute(query)).mappings():
        if horizon and found["feed_txn"] >= found["horizon"]:
            return FeedPage(taken, withheld=True)
        event = EventRow(**{name: found[name] for name in EventRow.__slots__})
        taken.append(FeedEvent(FeedPosition(found["feed_txn"], event.dispatch_id, event.seq), event))
    return FeedPage(taken, withheld=False)


def _after(position: FeedPosition) -> ColumnElement[bool]:
    e = dispatch_events.c
    if position.dispatch_id is None:
        return e.feed_txn > position.txn
    return tuple_(e.feed_txn, e.dispatch_id, e.seq) > tuple_(position.txn, position.dispatch_id, position.seq)
