"""Tenants and their API keys."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import insert, select, update

from outpost.db.store import Connection
from outpost.db.tables import api_keys, tenants


@dataclass(frozen=True, slots=True)
class TenantRow:
    """A tenant. `limits` caps its dispatches below the server's limits (keys: memory_mb, pids, cpu_cores,
    disk_mb, timeout_s); `egress_allow` adds hosts to the egress allowlist of its runs. None: no policy."""

    id: str
    name: str
    created_at: datetime
    limits: dict[str, float] | None = None
    egress_allow: list[str] | None = None
    monthly_budget_micro_usd: int | None = None
    max_concurrent_dispatches: int | None = None


@dataclass(frozen=True, slots=True)
class ApiKeyRow:
    id: str
    tenant_id: str
    prefix: str
    secret_sha256: str
    name: str
    is_admin: bool
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


async def insert_tenant(conn: Connection, row: TenantRow) -> None:
    await conn.execute(insert(tenants).values({name: getattr(row, name) for name in TenantRow.__slots__}))


async def get_tenant(conn: Connection, tenant_id: str) -> TenantRow | None:
    result = await conn.execute(select(tenants).where(tenants.c.id == tenant_id))
    found = result.mappings().first()
    return TenantRow(**found) if found else None


async def get_tenant_by_name(conn: Connection, name: str) -> TenantRow | None:
    result = await conn.execute(select(tenants).where(tenants.c.name == name))
    found = result.mappings().first()
    return TenantRow(**found) if found else None


_POLICY = ("limits", "egress_allow", "monthly_budget_micro_usd", "max_concurrent_dispatches")


async def update_tenant_policy(conn: Connection, row: TenantRow) -> None:
    """Store `row`'s policy fields (caps, egress hosts, budget, concurrency cap) as they are."""
    values = {name: getattr(row, name) for name in _POLICY}
    await conn.execute(update(tenants).where(tenants.c.id == row.id).values(values))


async def insert_key(conn: Connection, row: ApiKeyRow) -> None:
    await conn.execute(insert(api_keys).values(**_key_values(row)))


async def find_key_by_prefix(conn: Connection, prefix: str) -> ApiKeyRow | None:
    result = await conn.execute(select(api_keys).where(api_keys.c.prefix == prefix))
    found = result.mappings().first()
    return ApiKeyRow(**found) if found else None


async def list_keys(conn: Connection, tenant_id: str) -> list[ApiKeyRow]:
    query = select(api_keys).where(api_keys.c.tenant_id == tenant_id).order_by(api_keys.c.id)
    result = await conn.execute(query)
    return [ApiKeyRow(**found) for found in result.mappings()]


async def get_key(conn: Connection, tenant_id: str, key_id: str) -> ApiKeyRow | None:
    query = select(api_keys).where(api_keys.c.tenant_id == tenant_id, api_keys.c.id == key_id)
    found = (await conn.execute(query)).mappings().first()
    return ApiKeyRow(**found) if found else None


async def revoke_key(conn: Connection, key_id: str, revoked_at: datetime | None) -> None:
    """Mark a key revoked; a key already revoked keeps its first revocation time."""
    await conn.execute(
        update(api_keys)
        .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
        .values(revoked_at=revoked_at)
    )


def _key_values(row: ApiKeyRow) -> dict[str, object]:
    return {name: getattr(row, name) for name in ApiKeyRow.__slots__}
