"""Storage accrual: each tenant is charged, periodically, for the workspaces and artifacts it holds.

An accrual charges the period from the end of the tenant's last storage row (`period_start`) to now
(`occurred_at`): consecutive rows meet exactly, so periods never overlap and leave no gap, across
restarts too (the last row is read from the database). An item created within the period counts from
its creation. Sizes are those at the accrual: a workspace's size is the one its last run left, and an
item deleted before an accrual is not charged for the part of the period it was still held.

A tenant without storage rows yet starts at its creation, but at most one interval back, so that
storage held before the ledger existed is not charged. Tenants holding nothing get no row.

Several servers may accrue at once (PostgreSQL): each tenant's accrual locks its tenant row and reads
the last row under the lock, so the second one charges only from the first one's end; a tenant charged
less than half an interval ago is skipped, so two servers do not double the number of rows.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from outpost.db.repositories import ledger as repo
from outpost.db.repositories.ledger import LedgerEntry
from outpost.db.store import Store
from outpost.db.types import utc_now
from outpost.domain.ids import new_ulid
from outpost.ledger.metrics import LedgerMetrics
from outpost.ledger.prices import PriceTable
from outpost.services.periodic import Periodic

log = logging.getLogger(__name__)


class StorageAccrual:
    """Accrues every `interval_s` between `start()` and `stop()`; `accrue()` runs one pass on demand."""

    def __init__(self, store: Store, prices: PriceTable, metrics: LedgerMetrics, interval_s: float) -> None:
        self._store = store
        self._prices = prices
        self._metrics = metrics
        self._interval = timedelta(seconds=interval_s)
        # A pass that fails is retried at the next: it charges the whole period since each tenant's
        # last row, so nothing is lost.
        self._loop = Periodic("storage accrual", lambda: self.accrue(utc_now()), interval_s)

    async def accrue(self, now: datetime) -> list[LedgerEntry]:
        """Charge every tenant's storage up to `now`; the rows written. Raises what the store raises
        (Unavailable); tenants charged before the error stay charged."""
        async with self._store.read() as conn:
            tenants = await repo.list_tenants(conn)
        written = []
        for tenant_id, created_at in tenants:
            entry = await self._accrue_tenant(tenant_id, created_at, now)
            if entry is not None:
                written.append(entry)
        self._metrics.count(written)
        return written

    def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    async def _accrue_tenant(self, tenant_id: str, created_at: datetime, now: datetime) -> LedgerEntry | None:
        async with self._store.write() as conn:
            await repo.lock_tenant(conn, self._store.dialect, tenant_id)
            last_end = await repo.last_storage_end(conn, tenant_id)
            if last_end is not None and now - last_end < self._interval / 2:
                return None  # charged just now (by another server, or before a restart)
            start = last_end or max(created_at, now - self._interval)
            if now <= start:
                return None
            held_before, created_after = await repo.held_storage(conn, tenant_id, start)
            byte_s = held_storage_byte_s(held_before, created_after, start, now)
            if byte_s == 0:
                return None
            entry = self._entry(tenant_id, byte_s, start, now)
            await repo.insert_entries(conn, [entry])
        return entry

    def _entry(self, tenant_id: str, byte_s: int, start: datetime, now: datetime) -> LedgerEntry:
        return LedgerEntry(
            id=new_ulid(), tenant_id=tenant_id, dispatch_id=None, kind="storage", agent=None, provider=None,
            model=None, input_tokens=0, output_tokens=0, cache_read_tokens=0, cache_write_tokens=0,
            cpu_usec=0, memory_byte_s=0, storage_byte_s=byte_s,
            cost_micro_usd=self._prices.storage_micro_usd(byte_s), prices=self._prices.version,
            period_start=start, occurred_at=now,
        )  # fmt: skip


def held_storage_byte_s(
    held_before: int, created_after: list[tuple[int, datetime]], start: datetime, end: datetime
) -> int:
    """Byte-seconds over [start, end]: `held_before` bytes for all of it, each later item from its
    creation (whole microseconds, so the result is exact)."""

    def micros(span: timedelta) -> int:
        return max(0, span // timedelta(microseconds=1))

    byte_us = held_before * micros(end - start)
    byte_us += sum(size * micros(end - max(created, start)) for size, created in created_after)
    return byte_us // 1_000_000
