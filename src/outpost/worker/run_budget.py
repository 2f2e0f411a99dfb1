"""A run's budget hold: each model call is let through against the dispatch's `max_cost_usd` and its
tenant's monthly budget, holding the most it can cost until its usage is metered (see
`services.budgets` and `domain.reservations` for what is guaranteed).

A call over budget is answered by the gateway itself with 402 (in the provider's error format): the agent
CLIs retry 429 and 5xx answers, some of them for minutes, but not 402. The hold also sets `exceeded`,
on which the worker stops the run at once; the dispatch then fails with `budget_exceeded`, its partial
changes and logs kept like any other ending.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace

from outpost.db.repositories.dispatches import DispatchRow
from outpost.db.repositories.spend import RunningCost
from outpost.domain.dispatch import DispatchStatus, FailureReason
from outpost.domain.reservations import Pot, Verdict
from outpost.errors import StoreUnavailable
from outpost.gateway.call_bounds import PlannedCall
from outpost.gateway.metering import MeteredCall
from outpost.gateway.tokens import CallRefusal
from outpost.services.budgets import BudgetGuard, format_usd
from outpost.services.runs import Outcome
from outpost.worker.run_meter import RunMeter

log = logging.getLogger(__name__)
OVER_BUDGET_STATUS = 402


class RunBudget:
    """The hold and usage hook of one run. Counted by the guard from creation until `close`."""

    def __init__(self, guard: BudgetGuard, row: DispatchRow, meter: RunMeter) -> None:
        self._guard = guard
        self._meter = meter
        self._tenant_id = row.tenant_id
        self._attempt = row.attempt
        self._earlier_attempts = row.cost_micro_usd
        """What the dispatch's earlier attempts were seen to cost (0 on a first attempt)."""
        self._max_cost = row.max_cost_micro_usd
        self._in_flight: dict[int, int] = {}
        """This run's calls let through and not yet metered, with their bounds."""
        self._call_ids = itertools.count()
        self._reservations = 0
        """The run's calls holding a reservation in the store: their release writes the run's cost."""
        self._call_ended = asyncio.Condition()
        self._closed = False
        self.dispatch_id = row.id
        self.exceeded = asyncio.Event()
        """Set when a call was refused: the worker stops the run."""
        self.detail: str | None = None
        """Why the run was stopped, for the dispatch's failure."""
        guard.join(row.tenant_id, self)

    @property
    def cost_micro_usd(self) -> int:
        return self._earlier_attempts + self._meter.cost_micro_usd

    def on_usage(self, provider: str, call: MeteredCall) -> None:
        """The grant's usage hook: meter the call, then note the run's new cost, unless a reservation's
        release is about to write it (in the transaction that ends the reservation). Never blocks."""
        self._meter.on_usage(provider, call)
        if not self._reservations:
            self._guard.record(self, self._attempt)

    @asynccontextmanager
    async def hold(self, provider: str, call: PlannedCall) -> AsyncIterator[CallRefusal | None]:
        """A `CallHold`: the dispatch's own limit first, then the tenant's budget. Once a call is refused,
        every later one is too (the run is being stopped)."""
        bound = self._meter.bound_micro_usd(call, self._guard.output_tokens_cap)
        call_id = await self._hold_own(bound) if self.detail is None else None
        if call_id is None:
            yield self._refusal(self._over_max_cost())
            return
        try:
            reservation = await self._reserve_tenant(bound)
            if self.detail is not None:
                yield self._refusal(self.detail)
                return
            if reservation is not None:
                self._reservations += 1
            try:
                yield None
            finally:
                if reservation is not None:
                    self._reservations -= 1
                    cost = RunningCost(self.dispatch_id, self._attempt, self.cost_micro_usd)
                    # Shielded: a call whose handler is cancelled still gives its reservation back.
                    await asyncio.shield(self._guard.release(self._tenant_id, reservation, cost))
        finally:
            await self._end_own(call_id)

    def close(self) -> None:
        """The run is over: its final cost is written, then the guard stops counting it. Idempotent."""
        if not self._closed:
            self._closed = True
            self._guard.leave(self._tenant_id, self, self._attempt)

    def outcome(self, ended: Outcome) -> Outcome:
        """How the run ended, as `budget_exceeded` when a hold stopped it (unless it was cancelled:
        the caller's intent stands). Usage, cost, exit code and result are kept."""
        if self.detail is None or ended.status is DispatchStatus.CANCELLED:
            return ended
        return replace(
            ended, status=DispatchStatus.FAILED, reason=FailureReason.BUDGET_EXCEEDED,
            detail=f"{self.detail}; the run was stopped at its next model call",
        )  # fmt: skip

    async def _hold_own(self, bound: int) -> int | None:
        """Wait until the dispatch's limit lets the call through; its id, or None when it is refused."""
        async with self._call_ended:
            await self._call_ended.wait_for(lambda: self._own_pot().verdict(bound) is not Verdict.WAIT)
            if self._own_pot().verdict(bound) is Verdict.SPENT:
                self._stop(self._over_max_cost())
                return None
            call_id = next(self._call_ids)
            self._in_flight[call_id] = bound
            return call_id

    async def _end_own(self, call_id: int) -> None:
        async with self._call_ended:
            self._in_flight.pop(call_id, None)
            self._call_ended.notify_all()

    def _own_pot(self) -> Pot:
        held = sum(self._in_flight.values())
        return Pot(self._max_cost, self._meter.cost_micro_usd, held, len(self._in_flight))

    async def _reserve_tenant(self, bound: int) -> str | None:
        """Reserve the call against the tenant's budget when it has one (as this process last saw it);
        the reservation's id, or None. Sets `detail` when the budget is spent."""
        seen = await self._guard.month_spend(self._tenant_id)
        if seen.budget_micro_usd is None:
            return None
        try:
            taken = await self._guard.reserve(self._tenant_id, self.dispatch_id, bound)
        except StoreUnavailable as exc:
            # Rather than stop every run while the store is down, the last view decides (decision 0014).
            log.warning(
                "tenant %s's budget could not be reserved, the last view decides: %s", self._tenant_id, exc
            )
            if seen.exhausted:
                self._stop(_budget_spent(seen.budget_micro_usd, seen.spent_micro_usd))
            return None
        pot = taken.pot
        if taken.verdict is Verdict.SPENT and pot.limit is not None:
            self._stop(_budget_spent(pot.limit, pot.spent))
        return taken.reservation_id

    def _stop(self, detail: str) -> None:
        if self.detail is None:
            self.detail = detail
        self.exceeded.set()

    def _refusal(self, detail: str | None) -> CallRefusal:
        return CallRefusal(OVER_BUDGET_STATUS, f"{self.detail or detail}; this run is stopped")

    def _over_max_cost(self) -> str:
        cost, limit = self._meter.cost_micro_usd, self._max_cost or 0
        return f"the dispatch has cost {format_usd(cost)}, reaching its max_cost_usd of {format_usd(limit)}"


def _budget_spent(budget: int, spent: int) -> str:
    return f"the tenant's monthly budget of {format_usd(budget)} is spent ({format_usd(spent)} this month)"
