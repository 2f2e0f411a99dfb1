"""What a tenant has spent: its ledger rows since a time, plus the running cost of its dispatches not yet
settled, which the worker keeps up to date while their runs are metered."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import BigInteger, and_, bindparam, case, func, or_, select, update

from outpost.db.store import Connection
from outpost.db.tables import dispatches, ledger_entries, tenants
from outpost.domain.dispatch import ACTIVE_STATUSES

_ACTIVE = sorted(ACTIVE_STATUSES)


@dataclass(frozen=True, slots=True)
class SpendRead:
    """One consistent read of a tenant's spend, in micro-USD."""

    budget_micro_usd: int | None
    """The tenant's monthly budget; None: it has none."""
    ledger_micro_usd: int
    """What its ledger rows charged since the start of the period."""
    unsettled: dict[str, int]
    """Each of its dispatches a worker holds (provisioning or running), by id: its cost so far."""

    @property
    def spent_micro_usd(self) -> int:
        return self.ledger_micro_usd + sum(self.unsettled.values())


@dataclass(frozen=True, slots=True)
class RunningCost:
    """A run's metered cost so far, for the attempt that spent it."""

    dispatch_id: str
    attempt: int
    cost_micro_usd: int


async def read_spend(conn: Connection, tenant_id: str, since: datetime) -> SpendRead | None:
    """The tenant's spend since `since`; None when there is no such tenant.

    One statement, so one snapshot on both databases (PostgreSQL's READ COMMITTED takes one per
    statement): a dispatch settling meanwhile is counted once, either as unsettled or in the ledger,
    because its terminal status and its ledger rows commit together.
    """
    charged = (
        select(func.coalesce(func.sum(ledger_entries.c.cost_micro_usd), 0))
        .where(ledger_entries.c.tenant_id == tenants.c.id, ledger_entries.c.occurred_at >= since)
        .scalar_subquery()
    )
    held = and_(dispatches.c.tenant_id == tenants.c.id, dispatches.c.status.in_(_ACTIVE))
    query = (
        select(
            tenants.c.monthly_budget_micro_usd, charged.label("charged"), dispatches.c.id,
            dispatches.c.cost_micro_usd,
        )
        .select_from(tenants.outerjoin(dispatches, held))
        .where(tenants.c.id == tenant_id)
    )  # fmt: skip
    rows = (await conn.execute(query)).mappings().all()
    if not rows:
        return None
    unsettled = {row["id"]: int(row["cost_micro_usd"]) for row in rows if row["id"] is not None}
    return SpendRead(rows[0]["monthly_budget_micro_usd"], int(rows[0]["charged"]), unsettled)


_WRITE_RUNNING_COST = (
    update(dispatches)
    .where(
        dispatches.c.id == bindparam("b_id"),
        dispatches.c.attempt == bindparam("b_attempt"),
        # Not `IN (…)`: its expanding parameter cannot be used with executemany.
        or_(*(dispatches.c.status == status for status in _ACTIVE)),
    )
    # Never lowered: a run's cost only grows, and two writers (the coalescing writer, a call's release)
    # may commit in another order than they read the meter.
    .values(
        cost_micro_usd=case(
            (dispatches.c.cost_micro_usd < bindparam("b_cost", type_=BigInteger), bindparam("b_cost")),
            else_=dispatches.c.cost_micro_usd,
        )
    )
)


async def write_running_costs(conn: Connection, costs: Sequence[RunningCost]) -> None:
    """Store each run's cost so far on its dispatch, unless it already holds more; a dispatch that has
    settled, or gone on to another attempt, keeps what it has (settlement writes the final cost)."""
    if costs:
        params = [{"b_id": c.dispatch_id, "b_attempt": c.attempt, "b_cost": c.cost_micro_usd} for c in costs]
        await conn.execute(_WRITE_RUNNING_COST, params)
