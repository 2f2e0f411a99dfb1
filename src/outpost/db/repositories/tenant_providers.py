"""Tenants' own settings for model providers (their keys are secrets, stored apart)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, insert, select, update

from outpost.db.store import Connection
from outpost.db.tables import tenant_providers


@dataclass(frozen=True, slots=True)
class TenantProviderRow:
    tenant_id: str
    provider: str
    base_url: str | None
    updated_at: datetime


async def get_tenant_provider(conn: Connection, tenant_id: str, provider: str) -> TenantProviderRow | None:
    query = select(tenant_providers).where(
        tenant_providers.c.tenant_id == tenant_id, tenant_providers.c.provider == provider
    )
    found = (await conn.execute(query)).mappings().first()
    return TenantProviderRow(**found) if found else None


async def list_tenant_providers(conn: Connection, tenant_id: str) -> list[TenantProviderRow]:
    query = (
        select(tenant_providers)
        .where(tenant_providers.c.tenant_id == tenant_id)
        .order_by(tenant_providers.c.provider)
    )
    return [TenantProviderRow(**found) for found in (await conn.execute(query)).mappings()]


async def upsert_tenant_provider(conn: Connection, row: TenantProviderRow) -> None:
    """Portable upsert: the row is only ever written under the caller's write transaction."""
    values = {"base_url": row.base_url, "updated_at": row.updated_at}
    result = await conn.execute(
        update(tenant_providers)
        .where(tenant_providers.c.tenant_id == row.tenant_id, tenant_providers.c.provider == row.provider)
        .values(values)
        .returning(tenant_providers.c.provider)
    )
    if result.first() is None:
        await conn.execute(
            insert(tenant_providers).values(tenant_id=row.tenant_id, provider=row.provider, **values)
        )


async def delete_tenant_provider(conn: Connection, tenant_id: str, provider: str) -> bool:
    result = await conn.execute(
        delete(tenant_providers)
        .where(tenant_providers.c.tenant_id == tenant_id, tenant_providers.c.provider == provider)
        .returning(tenant_providers.c.provider)
    )
    return result.first() is not None
