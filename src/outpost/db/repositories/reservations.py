"""Model calls in flight against a tenant's budget (`call_reservations`), each holding the most it can cost
(decision 0014). Taking and releasing one both lock the tenant's row first, so that a reader under that
lock sees every call either held or spent, never neither."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, insert, select

from outpost.db.repositories import spend as spend_repo
from outpost.db.repositories.spend import RunningCost
from outpost.db.store import Connection
from outpost.db.tables import call_reservations, tenants
from outpost.domain.ids import new_ulid
from outpost.domain.reservations import Pot, Verdict


@dataclass(frozen=True, slots=True)
class Taken:
    """The outcome of asking to reserve: the verdict, the pot it was given on, and the reservation's id
    when it was taken."""

    verdict: Verdict
    pot: Pot
    reservation_id: str | None = None


async def take(
    conn: Connection,
    tenant_id: str,
    dispatch_id: str,
    bound: int,
    *,
    since: datetime,
    now: datetime,
    hold_s: float,
) -> Taken:
    """Reserve `bound` micro-USD for a call of `dispatch_id` when the tenant's budget allows it (see
    `Pot.verdict`); reservations past their expiry (their worker died mid-call) are dropped first.
    No reservation is taken for a tenant without a budget (verdict GO, no id)."""
    await _lock_tenant(conn, tenant_id)
    await conn.execute(
        delete(call_reservations).where(
            call_reservations.c.tenant_id == tenant_id, call_reservations.c.expires_at <= now
        )
    )
    read = await spend_repo.read_spend(conn, tenant_id, since)
    held_sum = func.coalesce(func.sum(call_reservations.c.micro_usd), 0)
    query = select(held_sum.label("held"), func.count().label("calls")).where(
        call_reservations.c.tenant_id == tenant_id
    )
    held = (await conn.execute(query)).mappings().one()
    budget = read.budget_micro_usd if read is not None else None
    pot = Pot(budget, read.spent_micro_usd if read else 0, int(held["held"]), int(held["calls"]))
    verdict = pot.verdict(bound)
    if verdict is not Verdict.GO or budget is None:
        return Taken(verdict, pot)
    reservation_id = new_ulid()
    await conn.execute(
        insert(call_reservations).values(
            id=reservation_id, tenant_id=tenant_id, dispatch_id=dispatch_id, micro_usd=bound,
            created_at=now, expires_at=now + timedelta(seconds=hold_s),
        )
    )  # fmt: skip
    return Taken(verdict, pot, reservation_id)


async def release(conn: Connection, tenant_id: str, reservation_id: str, cost: RunningCost) -> None:
    """End a reservation, storing its run's cost so far (which now includes the call) in the same
    transaction."""
    await _lock_tenant(conn, tenant_id)
    await spend_repo.write_running_costs(conn, [cost])
    await conn.execute(delete(call_reservations).where(call_reservations.c.id == reservation_id))


async def drop_for_dispatch(conn: Connection, dispatch_id: str) -> None:
    """Forget the reservations of a dispatch that is settling (its worker may have died mid-call)."""
    await conn.execute(delete(call_reservations).where(call_reservations.c.dispatch_id == dispatch_id))


async def _lock_tenant(conn: Connection, tenant_id: str) -> None:
    """On PostgreSQL, FOR UPDATE on the tenant's row; on SQLite the write transaction already holds the
    database's only write lock."""
    await conn.execute(select(tenants.c.id).where(tenants.c.id == tenant_id).with_for_update())
