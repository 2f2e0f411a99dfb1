"""Artifact rows: what a run left in the object store, by dispatch, until they expire."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, bindparam, delete, insert, select

from outpost.db.store import Connection
from outpost.db.tables import artifacts


@dataclass(frozen=True, slots=True)
class ArtifactRow:
    id: str
    tenant_id: str
    dispatch_id: str
    name: str
    object_key: str
    size_bytes: int
    sha256: str
    content_type: str
    created_at: datetime
    expires_at: datetime


async def insert_artifacts(conn: Connection, rows: list[ArtifactRow]) -> None:
    if rows:
        await conn.execute(
            insert(artifacts), [{name: getattr(row, name) for name in ArtifactRow.__slots__} for row in rows]
        )


# Built once: every read of a finished dispatch lists its artifacts.
_OF_DISPATCH = (
    select(artifacts).where(artifacts.c.dispatch_id == bindparam("dispatch_id")).order_by(artifacts.c.name)
)


async def list_for_dispatch(conn: Connection, dispatch_id: str) -> list[ArtifactRow]:
    result = await conn.execute(_OF_DISPATCH, {"dispatch_id": dispatch_id})
    return [ArtifactRow(**found) for found in result.mappings()]


async def get_artifact(conn: Connection, dispatch_id: str, name: str) -> ArtifactRow | None:
    query = select(artifacts).where(artifacts.c.dispatch_id == dispatch_id, artifacts.c.name == name)
    found = (await conn.execute(query)).mappings().first()
    return ArtifactRow(**found) if found else None


async def list_expired(conn: Connection, now: datetime, limit: int) -> list[ArtifactRow]:
    """Expired artifacts, the earliest expiry first."""
    query = (
        select(artifacts).where(artifacts.c.expires_at <= now).order_by(artifacts.c.expires_at).limit(limit)
    )
    return [ArtifactRow(**found) for found in (await conn.execute(query)).mappings()]


async def list_oldest(conn: Connection, limit: int) -> list[ArtifactRow]:
    """Artifacts by age, the oldest first (what a disk cap gives up first once nothing has expired)."""
    query = select(artifacts).order_by(artifacts.c.created_at, artifacts.c.id).limit(limit)
    return [ArtifactRow(**found) for found in (await conn.execute(query)).mappings()]


async def delete_artifacts(conn: Connection, ids: list[str]) -> int:
    if not ids:
        return 0
    result = cast(CursorResult[Any], await conn.execute(delete(artifacts).where(artifacts.c.id.in_(ids))))
    return int(result.rowcount or 0)


async def get_by_id(conn: Connection, artifact_id: str) -> ArtifactRow | None:
    found = (await conn.execute(select(artifacts).where(artifacts.c.id == artifact_id))).mappings().first()
    return ArtifactRow(**found) if found else None
