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


async def retire_version(
    conn: Connection, tenant_id: str, name: str, version: int, retired_at: datetime
) -> bool:
    """Retire one live version (its ciphertext erased); False when no such version is live."""
    where = [secrets.c.tenant_id == tenant_id, secrets.c.name == name, secrets.c.version == version]
    statement = (
        update(secrets)
        .where(*where, secrets.c.retired_at.is_(None))
        .values(retired_at=retired_at, sealed=b"")
        .returning(secrets.c.id)
    )
    return bool((await conn.execute(statement)).all())


async def count_live_by_key(conn: Connection) -> dict[str, int]:
    """Live secrets per master key id."""
    live = func.count().label("live")
    query = select(secrets.c.key_id, live).where(secrets.c.retired_at.is_(None)).group_by(secrets.c.key_id)
    return {str(row["key_id"]): int(row["live"]) for row in (await conn.execute(query)).mappings()}


async def live_rows_under(conn: Connection, key_ids: list[str], limit: int) -> list[SecretRow]:
    """Up to `limit` live rows sealed under one of `key_ids`, oldest first."""
    query = (
        select(secrets)
        .where(secrets.c.retired_at.is_(None), secrets.c.key_id.in_(key_ids))
        .order_by(secrets.c.id)
        .limit(limit)
    )
    return [SecretRow(**found) for found in (await conn.execute(query)).mappings()]


async def live_rows_not_under(conn: Connection, key_id: str, after_id: str, limit: int) -> list[SecretRow]:
    """Up to `limit` live rows sealed under another key than `key_id`, by id after `after_id`."""
    query = (
        select(secrets)
        .where(secrets.c.retired_at.is_(None), secrets.c.key_id != key_id, secrets.c.id > after_id)
        .order_by(secrets.c.id)
        .limit(limit)
    )
    return [SecretRow(**found) for found in (await conn.execute(query)).mappings()]


async def replace_sealed(conn: Connection, row: SecretRow, key_id: str, sealed: bytes) -> bool:
    """Store `sealed` (made under `key_id`) in place of `row`'s ciphertext, unless the row was retired or
    re-sealed since it was read; True when it was replaced."""
    statement = (
        update(secrets)
        .where(secrets.c.id == row.id, secrets.c.key_id == row.key_id, secrets.c.retired_at.is_(None))
        .values(key_id=key_id, sealed=sealed)
        .returning(secrets.c.id)
    )
    return bool((await conn.execute(statement)).all())


async def delete_tenant_secrets(conn: Connection, tenant_id: str) -> None:
    await conn.execute(delete(secrets).where(secrets.c.tenant_id == tenant_id))
