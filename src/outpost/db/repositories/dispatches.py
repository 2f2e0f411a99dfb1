"""Dispatch rows: insert, look up, page through, and update under optimistic locking."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, insert, or_, select, update

from outpost.db.store import Connection, Dialect
from outpost.db.tables import dispatches
from outpost.domain.dispatch import DispatchStatus


@dataclass(frozen=True, slots=True)
class DispatchRow:
    id: str
    tenant_id: str
    status: str
    version: int
    attempt: int
    event_seq: int
    agent: str
    task: str
    tier: str
    model: str | None
    timeout_s: int
    env: dict[str, str]
    labels: dict[str, str]
    max_cost_micro_usd: int | None
    limits: dict[str, float] | None
    egress_allow: list[str] | None
    idempotency_key: str | None
    request_sha256: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    exit_code: int | None
    result: str | None
    failure_reason: str | None
    failure_detail: str | None
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    cost_micro_usd: int
    cli_cost_micro_usd: int | None = None
    repo: dict[str, str] | None = None
    base_commit: str | None = None
    workspace_id: str | None = None
    workspace_name: str | None = None
    push_branch: str | None = None
    queue_reason: str | None = None
    not_before: datetime | None = None
    failover: dict[str, Any] | None = None
    worker_id: str | None = None


async def insert_dispatch(conn: Connection, row: DispatchRow) -> None:
    await conn.execute(
        insert(dispatches).values({name: getattr(row, name) for name in DispatchRow.__slots__})
    )


# Built once: the hottest reads skip statement construction and cache-key work on every call.
_BY_ID = select(dispatches).where(dispatches.c.id == bindparam("id"))
_BY_ID_OF_TENANT = _BY_ID.where(dispatches.c.tenant_id == bindparam("tenant_id"))


async def get_dispatch(
    conn: Connection, dispatch_id: str, tenant_id: str | None = None
) -> DispatchRow | None:
    """The dispatch with this id; with `tenant_id`, only when that tenant owns it."""
    if tenant_id is None:
        result = await conn.execute(_BY_ID, {"id": dispatch_id})
    else:
        result = await conn.execute(_BY_ID_OF_TENANT, {"id": dispatch_id, "tenant_id": tenant_id})
    found = result.mappings().first()
    return DispatchRow(**found) if found else None


async def get_by_idempotency_key(conn: Connection, tenant_id: str, key: str) -> DispatchRow | None:
    query = select(dispatches).where(dispatches.c.tenant_id == tenant_id, dispatches.c.idempotency_key == key)
    found = (await conn.execute(query)).mappings().first()
    return DispatchRow(**found) if found else None


async def list_page(
    conn: Connection,
    tenant_id: str,
    *,
    limit: int,
    before_id: str | None = None,
    status: str | None = None,
    agent: str | None = None,
) -> list[DispatchRow]:
    """Newest first; `before_id` is the keyset cursor (the last id of the previous page)."""
    query = select(dispatches).where(dispatches.c.tenant_id == tenant_id)
    if status is not None:
        query = query.where(dispatches.c.status == status)
    if agent is not None:
        query = query.where(dispatches.c.agent == agent)
    if before_id is not None:
        query = query.where(dispatches.c.id < before_id)
    query = query.order_by(dispatches.c.id.desc()).limit(limit)
    return [DispatchRow(**found) for found in (await conn.execute(query)).mappings()]


async def update_versioned(
    conn: Connection, dispatch_id: str, expected_version: int, values: dict[str, Any]
) -> DispatchRow | None:
    """Apply `values` only if the row still has `expected_version`; bumps the version and reserves one
    event sequence number (for the status event that goes with every update). None if the race was lost."""
    statement = (
        update(dispatches)
        .where(dispatches.c.id == dispatch_id, dispatches.c.version == expected_version)
        .values(version=dispatches.c.version + 1, event_seq=dispatches.c.event_seq + 1, **values)
        .returning(*dispatches.c)
    )
    found = (await conn.execute(statement)).mappings().first()
    return DispatchRow(**found) if found else None


async def select_queued(
    conn: Connection, dialect: Dialect, limit: int, due_at: datetime, skip_tenants: Collection[str] = ()
) -> list[DispatchRow]:
    """The oldest queued dispatches due at `due_at` (none told to wait past it), of tenants other than
    `skip_tenants`, locked for claiming.

    PostgreSQL: `FOR UPDATE SKIP LOCKED`, so concurrent claimers take different rows. SQLite: the
    caller's `BEGIN IMMEDIATE` transaction already excludes every other writer.
    """
    query = (
        select(dispatches)
        .where(dispatches.c.status == DispatchStatus.QUEUED)
        .where(or_(dispatches.c.not_before.is_(None), dispatches.c.not_before <= due_at))
        .order_by(dispatches.c.id)
        .limit(limit)
    )
    if skip_tenants:
        query = query.where(dispatches.c.tenant_id.not_in(sorted(skip_tenants)))
    if dialect == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return [DispatchRow(**found) for found in (await conn.execute(query)).mappings()]


async def list_by_status(conn: Connection, statuses: Iterable[str]) -> list[DispatchRow]:
    query = select(dispatches).where(dispatches.c.status.in_(list(statuses))).order_by(dispatches.c.id)
    return [DispatchRow(**found) for found in (await conn.execute(query)).mappings()]
