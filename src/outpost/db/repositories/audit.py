"""The audit log's rows and its head. Rows are only added, and deleted only by retention, oldest first.

Verification reads rows raw (a textual query: no type conversion per row), in the column order of
`outpost.audit.chain.RAW_COLUMNS`, so that a million rows stream in seconds. SQLite gives back times and
details as the chain's text already; PostgreSQL is asked for text too (`raw_select`), which spares
building a datetime and a dict per row only to encode them again (see `outpost.audit.chain`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, TypeVar, cast

from sqlalchemy import Connection as SyncConnection
from sqlalchemy import CursorResult, Select, TextClause, delete, func, insert, inspect, select, text, update

from outpost.audit.chain import RAW_COLUMNS, AuditHead, AuditRecord
from outpost.audit.verify import PRUNED, Checkpoint, checkpoint_of
from outpost.db.store import Connection
from outpost.db.tables import audit_head, audit_log

T = TypeVar("T")
HEAD_ID = 1
STREAM_BATCH = 20_000
"""Rows fetched at a time while streaming (a server-side cursor on PostgreSQL)."""
_PG_TEXT = {
    "created_at": "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')",
    "detail": "detail::text",
}
_HEAD = select(audit_head.c.seq, audit_head.c.hash, audit_head.c.mac).where(audit_head.c.id == HEAD_ID)
_PRUNED_ROWS = text("SELECT seq, detail FROM audit_log WHERE action = :action ORDER BY seq")


async def lock_head(conn: Connection) -> AuditHead:
    """The chain's last link, locked until the transaction ends: on PostgreSQL with FOR UPDATE; on SQLite
    the write transaction already holds the database's only write lock."""
    return await _head(conn, _HEAD.with_for_update())


async def read_head(conn: Connection) -> AuditHead:
    return await _head(conn, _HEAD)


async def set_head_mac(conn: Connection, mac: str) -> None:
    """Seal the head as it stands (the caller holds its lock)."""
    await conn.execute(update(audit_head).where(audit_head.c.id == HEAD_ID).values(mac=mac))


async def append_records(conn: Connection, records: Sequence[AuditRecord], head_mac: str | None) -> None:
    """Insert rows and move the head to the last of them (the caller holds the head's lock), sealed with
    `head_mac`; None leaves the head's mac as it was (see `AuditLog.append`)."""
    values = [{name: getattr(record, name) for name in AuditRecord.__slots__} for record in records]
    await conn.execute(insert(audit_log), values)
    last = records[-1]
    moved = {"seq": last.seq, "hash": last.hash} | ({"mac": head_mac} if head_mac is not None else {})
    await conn.execute(update(audit_head).where(audit_head.c.id == HEAD_ID).values(**moved))


async def list_page(conn: Connection, *, tenant_id: str | None, after: int, limit: int) -> list[AuditRecord]:
    """Rows after seq `after`, oldest first; only `tenant_id`'s when given."""
    query = select(audit_log).where(audit_log.c.seq > after).order_by(audit_log.c.seq).limit(limit)
    if tenant_id is not None:
        query = query.where(audit_log.c.tenant_id == tenant_id)
    return [AuditRecord(**found) for found in (await conn.execute(query)).mappings()]


def raw_select(dialect: str, condition: str) -> TextClause:
    """A query for raw rows (see the module docstring) that meet `condition`, in seq order."""
    columns = [_PG_TEXT.get(name, name) if dialect == "postgresql" else name for name in RAW_COLUMNS]
    return text(f"SELECT {', '.join(columns)} FROM audit_log WHERE {condition} ORDER BY seq")  # noqa: S608 - constants only


async def raw_row(conn: Connection, seq: int) -> Sequence[Any] | None:
    """One row, raw (see the module docstring); None when there is none at `seq`."""
    query = raw_select(await _dialect(conn), "seq = :seq")
    found = (await conn.execute(query, {"seq": seq})).first()
    return tuple(found) if found is not None else None


async def first_seq(conn: Connection) -> int | None:
    found = (await conn.execute(select(func.min(audit_log.c.seq)))).scalar_one()
    return None if found is None else int(found)


async def checkpoints(conn: Connection) -> list[Checkpoint]:
    """The cuts recorded by retention (`audit.pruned` rows); malformed records are left out."""
    rows = (await conn.execute(_PRUNED_ROWS, {"action": PRUNED})).mappings()
    found = [checkpoint_of(int(row["seq"]), _parsed(row["detail"])) for row in rows]
    return [point for point in found if point is not None]


def _parsed(detail: object) -> object:
    """A raw detail as JSON values: SQLite gives text, PostgreSQL parsed values."""
    if not isinstance(detail, str):
        return detail
    try:
        return json.loads(detail)
    except ValueError:  # an edited row, which the walk names
        return None


async def stream(conn: Connection, consume: Callable[[Iterable[Sequence[Any]]], T]) -> T:
    """`consume(rows)` over every row, raw and in seq order, fetched in batches."""

    def run(sync_conn: SyncConnection) -> T:
        query = raw_select(sync_conn.dialect.name, "TRUE")
        rows = sync_conn.execution_options(yield_per=STREAM_BATCH).execute(query)
        try:
            return consume(rows)
        finally:
            rows.close()  # `consume` may stop early (a broken chain): the server-side cursor goes now

    return await conn.run_sync(run)


async def begin_snapshot(conn: Connection) -> None:
    """Make the rest of this read transaction see one snapshot: SQLite's read transactions already do;
    PostgreSQL's default isolation gives each statement its own. Must be the transaction's first
    statement."""
    if await _dialect(conn) == "postgresql":
        await conn.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"))


async def last_seq_before(conn: Connection, cutoff: datetime) -> int | None:
    """The highest seq among rows written before `cutoff`; None when there is none."""
    query = select(func.max(audit_log.c.seq)).where(audit_log.c.created_at < cutoff)
    found = (await conn.execute(query)).scalar_one()
    return None if found is None else int(found)


async def row_hash(conn: Connection, seq: int) -> str | None:
    found = (await conn.execute(select(audit_log.c.hash).where(audit_log.c.seq == seq))).scalar_one_or_none()
    return None if found is None else str(found)


async def delete_range(conn: Connection, first: int, last: int) -> int:
    """Delete the rows from seq `first` to `last`, both included; returns how many there were."""
    statement = delete(audit_log).where(audit_log.c.seq >= first, audit_log.c.seq <= last)
    result = cast(CursorResult[Any], await conn.execute(statement))
    return int(result.rowcount)


async def has_audit_log(conn: Connection) -> bool:
    """Whether the database has the audit log's tables (an offline command must not create them)."""
    return bool(await conn.run_sync(lambda sync_conn: inspect(sync_conn).has_table("audit_head")))


async def _head(conn: Connection, query: Select[tuple[int, str, str | None]]) -> AuditHead:
    head = (await conn.execute(query)).mappings().one()
    mac = head["mac"]
    return AuditHead(int(head["seq"]), str(head["hash"]), None if mac is None else str(mac))


async def _dialect(conn: Connection) -> str:
    return await conn.run_sync(lambda sync_conn: str(sync_conn.dialect.name))
