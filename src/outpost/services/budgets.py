"""Budgets: a tenant's monthly budget and a dispatch's `max_cost_usd`, checked when a dispatch is submitted
and before every model call its run makes (decision 0014).

A tenant's month spend is what its ledger rows charged since the first of the month (UTC) plus what its
dispatches not yet settled (provisioning, running) have cost so far. The worker keeps that running cost
on each dispatch row while its run is metered (`SpendWriter`), and each process counts its own runs' calls
the moment their usage is known (`TenantSpend`).

- **Admission** (`BudgetGuard.admit`): a dispatch is refused (`BudgetExceeded`, 402) when the month spend
  has reached the budget, or when its `max_cost_usd` is more than what remains. Read afresh, in the
  submit's transaction.
- **Each model call** (the hold `worker.run_budget` builds on this guard): let through when its bound fits
  beside the calls in flight, or when it is alone, against the dispatch's `max_cost_usd` (in memory) and
  the tenant's budget (reserved in the store, `reserve`/`release`); refused once either is reached, and
  the run is then stopped and fails with `budget_exceeded`.

Guarantee: a limit is exceeded by at most one call's cost, tenant-wide and across workers (decision 0014
says when a call's bound holds).

Compute and storage are charged by the ledger when a dispatch settles and as storage accrues, not per
call: they count towards the month spend (and so towards admission and later calls) from then on, and a
dispatch's `max_cost_usd` limits its model calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from outpost.db.repositories import reservations as reservations_repo
from outpost.db.repositories import spend as spend_repo
from outpost.db.repositories.reservations import Taken
from outpost.db.repositories.spend import RunningCost, SpendRead
from outpost.db.store import Connection, Store
from outpost.db.types import utc_now
from outpost.domain.reservations import Verdict
from outpost.errors import BudgetExceeded, StoreUnavailable
from outpost.services.tenant_spend import NO_SPEND, LocalRun, Spend, TenantSpend, month_start

log = logging.getLogger(__name__)
_RESERVE_RETRY_S = 0.1
"""How often a call waiting for budget asks again, for calls ending in other processes."""


def format_usd(micro_usd: int) -> str:
    """`$12.50`, `$0.0123`: cents always, smaller digits when there are any."""
    text = f"{micro_usd / 1_000_000:.6f}".rstrip("0")
    whole, _, fraction = text.partition(".")
    return f"${whole}.{fraction.ljust(2, '0')}"


class BudgetGuard:
    """Admission checks, and the month spend of tenants with runs in this process, for their gates."""

    def __init__(
        self, store: Store, refresh_s: float, *, output_tokens_cap: int = 128_000, reservation_s: float = 900
    ) -> None:
        self._store = store
        self._refresh_s = refresh_s
        self._tenants: dict[str, TenantSpend] = {}
        self._writer = SpendWriter(store)
        self.output_tokens_cap = output_tokens_cap
        """Output tokens assumed of a call that sets no limit, when bounding its cost."""
        self._reservation_s = reservation_s
        self._released: dict[str, asyncio.Event] = {}
        """Per tenant: set when one of its calls here releases its reservation, for calls waiting."""

    async def admit(self, conn: Connection, tenant_id: str, max_cost_micro_usd: int | None) -> None:
        """Raises BudgetExceeded when the tenant's budget is spent or what remains is less than the
        dispatch's `max_cost_micro_usd`. Reads on `conn`, the caller's transaction."""
        read = await spend_repo.read_spend(conn, tenant_id, month_start(utc_now()))
        if read is None or read.budget_micro_usd is None:
            return
        tenant = self._tenants.get(tenant_id)
        spend = Spend(read.budget_micro_usd, read.spent_micro_usd + (tenant.ahead_of(read) if tenant else 0))
        budget, remaining = read.budget_micro_usd, spend.remaining_micro_usd or 0
        if spend.exhausted:
            raise BudgetExceeded(
                f"the tenant's monthly budget of {format_usd(budget)} is spent "
                f"({format_usd(spend.spent_micro_usd)} this month); new dispatches are refused until the "
                "month ends or an admin raises the budget",
                remaining, budget,
            )  # fmt: skip
        if max_cost_micro_usd is not None and max_cost_micro_usd > remaining:
            raise BudgetExceeded(
                f"max_cost_usd {format_usd(max_cost_micro_usd)} is more than the {format_usd(remaining)} "
                f"left of the tenant's monthly budget of {format_usd(budget)}; ask for at most that",
                remaining, budget,
            )  # fmt: skip

    def join(self, tenant_id: str, run: LocalRun) -> None:
        """Count a run that is starting in this process, until `leave`."""
        self._tenants.setdefault(tenant_id, TenantSpend()).add(run)

    def record(self, run: LocalRun, attempt: int) -> None:
        """Note a run's new cost: written to its dispatch soon, off the caller's path. Never blocks."""
        self._writer.record(RunningCost(run.dispatch_id, attempt, run.cost_micro_usd))

    def leave(self, tenant_id: str, run: LocalRun, attempt: int) -> None:
        """Write the run's final cost, then stop counting it (the next read sees the written cost)."""
        final = run.cost_micro_usd

        def forget() -> None:
            tenant = self._tenants.get(tenant_id)
            if tenant is not None:
                tenant.remove(run.dispatch_id, final)
                if not tenant.runs:
                    del self._tenants[tenant_id]

        self._writer.record(RunningCost(run.dispatch_id, attempt, final), then=forget)

    async def month_spend(self, tenant_id: str) -> Spend:
        """The tenant's month spend for a gate: read again when the last read is older than the refresh
        time. When the store cannot be reached, the last read (if any) stands."""
        # A tenant without runs here (a gate asked after its run left) gets a view of its own.
        tenant = self._tenants.get(tenant_id) or TenantSpend()
        try:
            return await tenant.current(self._refresh_s, lambda: self._read(tenant_id))
        except StoreUnavailable as exc:
            log.warning("tenant %s's spend could not be read, the last read stands: %s", tenant_id, exc)
            return tenant.spend()

    async def reserve(self, tenant_id: str, dispatch_id: str, bound: int) -> Taken:
        """Reserve `bound` for a call against the tenant's budget, waiting while calls in flight may use
        up what is left (`Pot.verdict`): the verdict is GO (with a reservation to `release` when the
        tenant has a budget) or SPENT. Another process's calls are seen ending within `_RESERVE_RETRY_S`.
        Raises StoreUnavailable."""
        while True:
            async with self._store.write() as conn:
                now = utc_now()
                taken = await reservations_repo.take(
                    conn, tenant_id, dispatch_id, bound, since=month_start(now), now=now,
                    hold_s=self._reservation_s,
                )  # fmt: skip
            if taken.verdict is not Verdict.WAIT:
                return taken
            released = self._released.setdefault(tenant_id, asyncio.Event())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(released.wait(), _RESERVE_RETRY_S)

    async def release(self, tenant_id: str, reservation_id: str, cost: RunningCost) -> None:
        """End a call's reservation, storing its run's cost so far in the same transaction. A failure is
        logged: the reservation then lapses at its expiry, or when the dispatch settles."""
        try:
            async with self._store.write() as conn:
                await reservations_repo.release(conn, tenant_id, reservation_id, cost)
        except Exception:
            log.exception("reservation %s of tenant %s could not be released", reservation_id, tenant_id)
        released = self._released.pop(tenant_id, None)
        if released is not None:
            released.set()

    async def close(self) -> None:
        """Wait for the costs noted so far to be written."""
        await self._writer.flush()

    async def _read(self, tenant_id: str) -> SpendRead:
        async with self._store.read() as conn:
            read = await spend_repo.read_spend(conn, tenant_id, month_start(utc_now()))
        return read or NO_SPEND


@dataclass(slots=True)
class _Note:
    cost: RunningCost
    then: list[Callable[[], None]]


class SpendWriter:
    """Writes runs' costs so far to their dispatches. `record` only notes the newest cost of a run; one
    task writes what is noted, everything noted meanwhile in one transaction, so a burst of calls costs
    one write and the gateway never waits for the database."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._pending: dict[str, _Note] = {}
        self._task: asyncio.Task[None] | None = None

    def record(self, cost: RunningCost, then: Callable[[], None] | None = None) -> None:
        """Note `cost`; `then` runs once it has been written (or failed to be: that is logged)."""
        earlier = self._pending.get(cost.dispatch_id)
        callbacks = earlier.then if earlier is not None else []
        if then is not None:
            callbacks.append(then)
        self._pending[cost.dispatch_id] = _Note(cost, callbacks)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._drain())

    async def flush(self) -> None:
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, {}
            try:
                async with self._store.write() as conn:
                    await spend_repo.write_running_costs(conn, [note.cost for note in batch.values()])
            except Exception:
                # The next write, or settlement, stores the cost; until then reads see an older one.
                log.exception("the running cost of %d dispatches could not be written", len(batch))
            for note in batch.values():
                for then in note.then:
                    then()
