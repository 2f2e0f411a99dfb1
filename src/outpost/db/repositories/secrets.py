"""Encrypted secrets. Rows hold ciphertext only; sealing and opening happen in the secrets service."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, insert, select, update

from outpost.db.store import Connection
from outpost.db.tables import secrets


@dataclass(frozen=True, slots=True)
class SecretRow:
    id: str
    tenant_id: str
    name: str
    version: int
    key_id: str
    sealed: bytes
    created_at: datetime
    retired_at: datetime | None


async def insert_secret(conn: Connection, row: SecretRow) -> None:
    await conn.execute(insert(secrets).values({name: getattr(row, name) for name in SecretRow.__slots__}))


async def latest_version(conn: Connection, tenant_id: str, name: str) -> int:
    """The highest version ever stored under this name, retired or not; 0 when none."""
    query = select(func.max(secrets.c.version)).where(
        secrets.c.tenant_id == tenant_id, secrets.c.name == name
    )
    return int((await conn.execute(query)).scalar_one() or 0)


async def live_versions(conn: Connection, tenant_id: str, name: str) -> list[SecretRow]:
    """The versions not yet retired, newest first."""
    query = (
        select(secrets)
        .where(secrets.c.tenant_id == tenant_id, secrets.c.name == name, secrets.c.retired_at.is_(None))
        .order_by(secrets.c.version.desc())
    )
    return [SecretRow(**found) for found in (await conn.execute(query)).mappings()]


async def live_names(conn: Connection, tenant_id: str, prefix: str) -> list[str]:
    """The names starting with `prefix` that have a live version, sorted."""
    query = (
        select(secrets.c.name)
        .where(
            secrets.c.tenant_id == tenant_id,
            secrets.c.name.startswith(prefix, autoescape=True),
            secrets.c.retired_at.is_(None),
        )
        .distinct()
        .order_by(secrets.c.name)
    )
    return [str(name) for name in (await conn.execute(query)).scalars()]


async def retire_versions(
    conn: Connection, tenant_id: str, name: str, retired_at: datetime, below_version: int | None = None
) -> int:
    """Retire the live versions of a secret (those older than `below_version`, if given); returns how
    many. The ciphertext is erased: a retired secret is never needed again."""
    where = [secrets.c.tenant_id == tenant_id, secrets.c.name == name, secrets.c.retired_at.is_(None)]
    if below_version is not None:
        where.append(secrets.c.version < below_version)
    erased = {"retired_at": retired_at, "sealed": b""}
    statement = update(secrets).where(*where).values(erased).returning(secrets.c.id)
    return len((await conn.execute(statement)).all())


async def foreign_key_ids(conn: Connection, key_id: str) -> list[str]:
    """Ids of master keys other than `key_id` that live secrets were sealed with."""
    query = (
        select(secrets.c.key_id).where(secrets.c.retired_at.is_(None), secrets.c.key_id != key_id).distinct()
    )
    return [str(found) for found in (await conn.execute(query)).scalars()]


async def delete_tenant_secrets(conn: Connection, tenant_id: str) -> None:
    await conn.execute(delete(secrets).where(secrets.c.tenant_id == tenant_id))
