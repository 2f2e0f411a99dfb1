"""Provider accounts out of quota until a time (`provider_quotas`): record, clear, look up."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, Insert, delete, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from outpost.db.store import Connection, Dialect
from outpost.db.tables import provider_quotas


@dataclass(frozen=True, slots=True)
class QuotaRow:
    account: str
    """The tenant's id when its own key was in force, else `server`."""
    provider: str
    exhausted_until: datetime
    detail: str
    """The provider's own message, on one line."""
    recorded_at: datetime


async def record_exhausted(conn: Connection, dialect: Dialect, row: QuotaRow) -> None:
    """Record that `row.account` is out of quota at `row.provider` until `row.exhausted_until`. A record
    already there is replaced only by a later time: a per-minute limit does not shorten a daily one."""
    await conn.execute(_upsert(dialect, row))


def _upsert(dialect: Dialect, row: QuotaRow) -> Insert:
    """The dialect's INSERT … ON CONFLICT DO UPDATE (both spell it alike; the classes differ)."""
    values = {name: getattr(row, name) for name in QuotaRow.__slots__}
    if dialect == "postgresql":
        pg = postgresql_insert(provider_quotas).values(values)
        later = pg.excluded.exhausted_until > provider_quotas.c.exhausted_until
        return pg.on_conflict_do_update(
            index_elements=["account", "provider"], set_=_replaced(pg.excluded), where=later
        )
    lite = sqlite_insert(provider_quotas).values(values)
    later = lite.excluded.exhausted_until > provider_quotas.c.exhausted_until
    return lite.on_conflict_do_update(
        index_elements=["account", "provider"], set_=_replaced(lite.excluded), where=later
    )


def _replaced(excluded: object) -> dict[str, object]:
    return {name: getattr(excluded, name) for name in ("exhausted_until", "detail", "recorded_at")}


async def clear(conn: Connection, account: str, provider: str) -> bool:
    """Forget the account's quota at the provider; True when there was one."""
    statement = delete(provider_quotas).where(
        provider_quotas.c.account == account, provider_quotas.c.provider == provider
    )
    return bool(cast(CursorResult[Any], await conn.execute(statement)).rowcount)


async def get(conn: Connection, account: str, provider: str) -> QuotaRow | None:
    query = select(provider_quotas).where(
        provider_quotas.c.account == account, provider_quotas.c.provider == provider
    )
    found = (await conn.execute(query)).mappings().first()
    return QuotaRow(**found) if found else None


async def list_exhausted(conn: Connection, now: datetime) -> list[QuotaRow]:
    """Every quota still in force at `now` (the table holds one row per account and provider at most)."""
    query = select(provider_quotas).where(provider_quotas.c.exhausted_until > now)
    return [QuotaRow(**found) for found in (await conn.execute(query)).mappings()]
