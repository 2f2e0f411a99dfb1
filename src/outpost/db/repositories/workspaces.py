"""Persistent workspace rows: named per tenant, used by one dispatch at a time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, delete, func, insert, not_, or_, select, update

from outpost.db.store import Connection
from outpost.db.tables import dispatches, workspaces
from outpost.domain.dispatch import TERMINAL_STATUSES


@dataclass(frozen=True, slots=True)
class WorkspaceRow:
    id: str
    tenant_id: str
    name: str
    repo_url: str | None
    size_bytes: int
    busy_dispatch_id: str | None
    created_at: datetime
    last_used_at: datetime


async def insert_workspace(conn: Connection, row: WorkspaceRow) -> None:
    await conn.execute(
        insert(workspaces).values({name: getattr(row, name) for name in WorkspaceRow.__slots__})
    )


async def get_by_name(conn: Connection, tenant_id: str, name: str) -> WorkspaceRow | None:
    query = select(workspaces).where(workspaces.c.tenant_id == tenant_id, workspaces.c.name == name)
    found = (await conn.execute(query)).mappings().first()
    return WorkspaceRow(**found) if found else None


async def get_workspace(
    conn: Connection, workspace_id: str, tenant_id: str | None = None
) -> WorkspaceRow | None:
    query = select(workspaces).where(workspaces.c.id == workspace_id)
    if tenant_id is not None:
        query = query.where(workspaces.c.tenant_id == tenant_id)
    found = (await conn.execute(query)).mappings().first()
    return WorkspaceRow(**found) if found else None


async def list_for_tenant(conn: Connection, tenant_id: str) -> list[WorkspaceRow]:
    query = select(workspaces).where(workspaces.c.tenant_id == tenant_id).order_by(workspaces.c.name)
    return [WorkspaceRow(**found) for found in (await conn.execute(query)).mappings()]


async def used_bytes(conn: Connection, tenant_id: str) -> int:
    query = select(func.coalesce(func.sum(workspaces.c.size_bytes), 0)).where(
        workspaces.c.tenant_id == tenant_id
    )
    return int((await conn.execute(query)).scalar_one())


def _free() -> ColumnElement[bool]:
    """No dispatch holds the workspace, or the one that did has ended (however it ended)."""
    ended = select(dispatches.c.id).where(dispatches.c.status.in_(list(TERMINAL_STATUSES)))
    return or_(workspaces.c.busy_dispatch_id.is_(None), workspaces.c.busy_dispatch_id.in_(ended))


async def claim(conn: Connection, workspace_id: str, dispatch_id: str, now: datetime) -> bool:
    """Mark the workspace held by `dispatch_id`; False while another dispatch that has not ended holds it."""
    statement = (
        update(workspaces)
        .where(workspaces.c.id == workspace_id, _free())
        .values(busy_dispatch_id=dispatch_id, last_used_at=now)
    )
    return bool(cast(CursorResult[Any], await conn.execute(statement)).rowcount)


async def still_busy(conn: Connection, workspace_ids: list[str]) -> set[str]:
    """Which of these workspaces a dispatch that has not ended holds."""
    if not workspace_ids:
        return set()
    query = select(workspaces.c.id).where(workspaces.c.id.in_(workspace_ids), not_(_free()))
    return set((await conn.execute(query)).scalars())


async def set_size(conn: Connection, workspace_id: str, size_bytes: int) -> None:
    await conn.execute(
        update(workspaces).where(workspaces.c.id == workspace_id).values(size_bytes=size_bytes)
    )


async def delete_if_idle(conn: Connection, workspace_id: str, tenant_id: str) -> bool:
    """Delete the row unless a dispatch that has not ended holds it; False when it is in use."""
    statement = delete(workspaces).where(
        workspaces.c.id == workspace_id, workspaces.c.tenant_id == tenant_id, _free()
    )
    return bool(cast(CursorResult[Any], await conn.execute(statement)).rowcount)
