"""Ledger rows: add them, read what a dispatch metered, what a tenant holds, and usage totals by group."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import ColumnElement, case, func, insert, select, update

from outpost.db.store import Connection, Dialect
from outpost.db.tables import artifacts, dispatch_events, dispatches, ledger_entries, tenants, workspaces

GroupBy = Literal["agent", "model", "day", "tenant"]
METERED_KINDS = ("usage", "compute")
"""The dispatch events a settlement reads: the gateway's metered calls and the sandbox's compute."""
COST_KINDS = ("tokens", "compute", "storage")
QUANTITIES = (
    "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens",
    "cpu_usec", "memory_byte_s", "storage_byte_s",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    id: str
    tenant_id: str
    dispatch_id: str | None
    kind: str
    """`tokens` (one per provider and model), `compute` (one per dispatch) or `storage`."""
    agent: str | None
    provider: str | None
    model: str | None
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    cpu_usec: int
    memory_byte_s: int
    storage_byte_s: int
    cost_micro_usd: int
    prices: str
    period_start: datetime | None
    occurred_at: datetime


@dataclass(frozen=True, slots=True)
class MeteredEvent:
    kind: str
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class UsageTotals:
    """One group's sums. `key` is the group's value (None: rows without one, e.g. storage by agent)."""

    key: str | None
    name: str | None
    quantities: dict[str, int]
    cost_micro_usd: dict[str, int]
    """By ledger kind: tokens, compute, storage."""


async def insert_entries(conn: Connection, entries: Sequence[LedgerEntry]) -> None:
    if entries:
        await conn.execute(
            insert(ledger_entries),
            [{name: getattr(entry, name) for name in LedgerEntry.__slots__} for entry in entries],
        )


async def metered_events(conn: Connection, dispatch_id: str) -> list[MeteredEvent]:
    """The dispatch's `usage` and `compute` events, in order (its primary key's prefix finds them)."""
    query = (
        select(dispatch_events.c.kind, dispatch_events.c.data)
        .where(dispatch_events.c.dispatch_id == dispatch_id, dispatch_events.c.kind.in_(METERED_KINDS))
        .order_by(dispatch_events.c.seq)
    )
    return [MeteredEvent(found.kind, found.data) for found in await conn.execute(query)]


async def set_dispatch_totals(conn: Connection, dispatch_id: str, tokens: dict[str, int], cost: int) -> None:
    """Write a settled dispatch's token totals and cost (the sum of its ledger rows)."""
    await conn.execute(
        update(dispatches).where(dispatches.c.id == dispatch_id).values(cost_micro_usd=cost, **tokens)
    )


async def list_tenants(conn: Connection) -> list[tuple[str, datetime]]:
    """Every tenant's id and creation time."""
    return [
        (found.id, found.created_at)
        for found in await conn.execute(select(tenants.c.id, tenants.c.created_at))
    ]


async def lock_tenant(conn: Connection, dialect: Dialect, tenant_id: str) -> None:
    """Hold the tenant's row until the transaction ends, so that two servers accruing its storage at once
    take turns. SQLite needs nothing: its write transactions already exclude each other."""
    if dialect == "postgresql":
        await conn.execute(select(tenants.c.id).where(tenants.c.id == tenant_id).with_for_update())


async def last_storage_end(conn: Connection, tenant_id: str) -> datetime | None:
    """The end of the tenant's last charged storage period (its last storage row's time)."""
    query = (
        select(ledger_entries.c.occurred_at)
        .where(ledger_entries.c.tenant_id == tenant_id, ledger_entries.c.kind == "storage")
        .order_by(ledger_entries.c.occurred_at.desc())
        .limit(1)
    )
    found: datetime | None = (await conn.execute(query)).scalar()
    return found


async def held_storage(
    conn: Connection, tenant_id: str, since: datetime
) -> tuple[int, list[tuple[int, datetime]]]:
    """What the tenant holds now: the bytes of items that existed at `since`, and the size and creation
    time of each item created after it (persistent workspaces and artifacts)."""
    held_before = 0
    created_after: list[tuple[int, datetime]] = []
    for table in (workspaces, artifacts):
        size, created, owner = table.c.size_bytes, table.c.created_at, table.c.tenant_id
        before = select(func.coalesce(func.sum(size), 0)).where(owner == tenant_id, created <= since)
        held_before += int((await conn.execute(before)).scalar_one())
        after = select(size, created).where(owner == tenant_id, created > since)
        created_after += [(int(found.size_bytes), found.created_at) for found in await conn.execute(after)]
    return held_before, created_after


def day_of(column: Any, dialect: Dialect) -> ColumnElement[str]:
    """The UTC day (`YYYY-MM-DD`) of a timestamp column. SQLite keeps UTC timestamps as ISO text, whose
    first ten characters are the day; PostgreSQL keeps `timestamptz`, read here at UTC."""
    if dialect == "sqlite":
        return func.substr(column, 1, 10)
    return func.to_char(func.timezone("UTC", column), "YYYY-MM-DD")


async def usage_totals(
    conn: Connection,
    dialect: Dialect,
    group_by: GroupBy,
    tenant_id: str | None,
    since: datetime | None,
    until: datetime | None,
) -> list[UsageTotals]:
    """Sums of ledger rows by `group_by`, for one tenant (None: all), with `occurred_at` in
    [since, until)."""
    key: Any = {
        "agent": ledger_entries.c.agent, "model": ledger_entries.c.model,
        "tenant": ledger_entries.c.tenant_id, "day": day_of(ledger_entries.c.occurred_at, dialect),
    }[group_by]  # fmt: skip
    name = tenants.c.name if group_by == "tenant" else None
    columns = [func.sum(getattr(ledger_entries.c, quantity)) for quantity in QUANTITIES]
    costs = [
        func.sum(case((ledger_entries.c.kind == kind, ledger_entries.c.cost_micro_usd), else_=0))
        for kind in COST_KINDS
    ]
    query = select(key.label("key"), *([name] if name is not None else []), *columns, *costs)
    if name is not None:
        query = query.join_from(ledger_entries, tenants, tenants.c.id == ledger_entries.c.tenant_id)
    if tenant_id is not None:
        query = query.where(ledger_entries.c.tenant_id == tenant_id)
    if since is not None:
        query = query.where(ledger_entries.c.occurred_at >= since)
    if until is not None:
        query = query.where(ledger_entries.c.occurred_at < until)
    query = query.group_by(key, *([name] if name is not None else []))
    return [_totals(found, with_name=name is not None) for found in await conn.execute(query)]


def _totals(found: Any, *, with_name: bool) -> UsageTotals:
    values = list(found)
    key, rest = values[0], values[1:]
    label = rest.pop(0) if with_name else None
    # PostgreSQL sums BIGINT as NUMERIC (a Decimal here): back to int, exactly.
    quantities = {quantity: int(value or 0) for quantity, value in zip(QUANTITIES, rest, strict=False)}
    tokens, compute, storage = (int(value or 0) for value in rest[len(QUANTITIES) :])
    return UsageTotals(key, label, quantities, dict(zip(COST_KINDS, (tokens, compute, storage), strict=True)))
