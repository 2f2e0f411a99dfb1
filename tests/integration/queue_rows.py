"""Tenants and queued dispatches written straight into a store, for tests of what claims them."""

from __future__ import annotations

from typing import Any

from sqlalchemy import update

from outpost.db.repositories.dispatches import DispatchRow
from outpost.db.repositories.tenants import TenantRow, insert_tenant
from outpost.db.store import Store
from outpost.db.tables import tenants
from outpost.db.types import utc_now
from outpost.domain.ids import new_ulid


async def new_tenant(store: Store, cap: int | None = None) -> str:
    """A tenant, with `cap` dispatches running at once at most (None: no cap); its id."""
    tenant_id = new_ulid()
    async with store.write() as conn:
        await insert_tenant(conn, TenantRow(id=tenant_id, name=f"t{tenant_id[-8:]}", created_at=utc_now()))
        await conn.execute(
            update(tenants).where(tenants.c.id == tenant_id).values(max_concurrent_dispatches=cap)
        )
    return tenant_id


def queued_row(dispatch_id: str, tenant_id: str, **fields: Any) -> DispatchRow:
    """A `shell` dispatch as submit stores it (queued, no attempt yet), with `fields` replaced."""
    values: dict[str, Any] = {
        "id": dispatch_id, "tenant_id": tenant_id, "status": "queued", "version": 1, "attempt": 0,
        "event_seq": 0, "agent": "shell", "task": "true", "tier": "balanced", "model": None, "timeout_s": 60,
        "env": {}, "labels": {}, "max_cost_micro_usd": None, "limits": None, "egress_allow": None,
        "idempotency_key": None, "request_sha256": None, "created_at": utc_now(), "started_at": None,
        "finished_at": None, "exit_code": None, "result": None, "failure_reason": None,
        "failure_detail": None, "input_tokens": 0, "output_tokens": 0, "cache_read_tokens": 0,
        "cache_write_tokens": 0, "cost_micro_usd": 0,
    }  # fmt: skip
    return DispatchRow(**{**values, **fields})
