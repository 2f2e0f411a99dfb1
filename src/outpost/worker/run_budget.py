"""A run's budget gate: before each model call, the dispatch's `max_cost_usd` and its tenant's monthly
budget (see `services.budgets` for what is guaranteed).

A call over budget is answered by the gateway itself with 402 (in the provider's error format): the agent
CLIs retry 429 and 5xx answers, some of them for minutes, but not 402. The gate also sets `exceeded`,
on which the worker stops the run at once; the dispatch then fails with `budget_exceeded`, its partial
changes and logs kept like any other ending.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

from outpost.db.repositories.dispatches import DispatchRow
from outpost.domain.dispatch import DispatchStatus, FailureReason
from outpost.gateway.metering import MeteredCall
from outpost.gateway.tokens import CallRefusal
from outpost.services.budgets import BudgetGuard, format_usd
from outpost.services.runs import Outcome
from outpost.worker.run_meter import RunMeter

OVER_BUDGET_STATUS = 402


class RunBudget:
    """The gate and usage hook of one run. Counted by the guard from creation until `close`."""

    def __init__(self, guard: BudgetGuard, row: DispatchRow, meter: RunMeter) -> None:
        self._guard = guard
        self._meter = meter
        self._tenant_id = row.tenant_id
        self._attempt = row.attempt
        self._max_cost = row.max_cost_micro_usd
        self._closed = False
        self.dispatch_id = row.id
        self.exceeded = asyncio.Event()
        """Set when a call was refused: the worker stops the run."""
        self.detail: str | None = None
        """Why the run was stopped, for the dispatch's failure."""
        guard.join(row.tenant_id, self)

    @property
    def cost_micro_usd(self) -> int:
        return self._meter.cost_micro_usd

    def on_usage(self, provider: str, call: MeteredCall) -> None:
        """The grant's usage hook: meter the call, then note the run's new cost. Never blocks."""
        self._meter.on_usage(provider, call)
        self._guard.record(self, self._attempt)

    async def gate(self, provider: str) -> CallRefusal | None:
        """A `CallGate`: None to let the call through, else the refusal. Once a call is refused, every
        later one is too (the run is being stopped)."""
        if self.detail is None:
            self.detail = self._over_max_cost() or await self._over_tenant_budget()
            if self.detail is None:
                return None
            self.exceeded.set()
        return CallRefusal(OVER_BUDGET_STATUS, f"{self.detail}; this run is stopped")

    def close(self) -> None:
        """The run is over: its final cost is written, then the guard stops counting it. Idempotent."""
        if not self._closed:
            self._closed = True
            self._guard.leave(self._tenant_id, self, self._attempt)

    def outcome(self, ended: Outcome) -> Outcome:
        """How the run ended, as `budget_exceeded` when the gate stopped it (unless it was cancelled:
        the caller's intent stands). Usage, cost, exit code and result are kept."""
        if self.detail is None or ended.status is DispatchStatus.CANCELLED:
            return ended
        return replace(
            ended, status=DispatchStatus.FAILED, reason=FailureReason.BUDGET_EXCEEDED,
            detail=f"{self.detail}; the run was stopped at its next model call",
        )  # fmt: skip

    def _over_max_cost(self) -> str | None:
        cost, limit = self._meter.cost_micro_usd, self._max_cost
        if limit is None or cost < limit:
            return None
        return f"the dispatch has cost {format_usd(cost)}, reaching its max_cost_usd of {format_usd(limit)}"

    async def _over_tenant_budget(self) -> str | None:
        spend = await self._guard.month_spend(self._tenant_id)
        if not spend.exhausted or spend.budget_micro_usd is None:
            return None
        return (
            f"the tenant's monthly budget of {format_usd(spend.budget_micro_usd)} is spent "
            f"({format_usd(spend.spent_micro_usd)} this month)"
        )
