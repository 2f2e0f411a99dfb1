"""One tenant's month spend as this process sees it: the last read of the database, corrected by what this
process's own runs have spent since (their meters count every call the moment its usage is known).

A read gives, in one snapshot, the tenant's ledger total for the month and the stored cost of each of its
dispatches a worker holds. A local run's meter is ahead of its stored cost by what the worker has not
written yet; the view adds that difference, measured against the cost the read saw, so that it does not
depend on when the writes land. A run that leaves (its final cost written) has its difference folded into
the view until the next read, which sees the written cost.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from outpost.db.repositories.spend import SpendRead


class LocalRun(Protocol):
    """A run of this process whose model calls are metered."""

    @property
    def dispatch_id(self) -> str: ...

    @property
    def cost_micro_usd(self) -> int:
        """What the run has spent so far, as its meter counted it."""
        ...


@dataclass(frozen=True, slots=True)
class Spend:
    """A tenant's spend this month and its budget, in micro-USD."""

    budget_micro_usd: int | None
    spent_micro_usd: int

    @property
    def remaining_micro_usd(self) -> int | None:
        """What is left of the budget (never negative); None without a budget."""
        if self.budget_micro_usd is None:
            return None
        return max(0, self.budget_micro_usd - self.spent_micro_usd)

    @property
    def exhausted(self) -> bool:
        return self.budget_micro_usd is not None and self.spent_micro_usd >= self.budget_micro_usd


NO_SPEND = SpendRead(budget_micro_usd=None, ledger_micro_usd=0, unsettled={})


def month_start(now: datetime) -> datetime:
    """The first instant of `now`'s calendar month, in UTC."""
    utc = now.astimezone(UTC)
    return datetime(utc.year, utc.month, 1, tzinfo=UTC)


class TenantSpend:
    """The view of one tenant. Not thread-safe: used from the event loop only."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.runs: dict[str, LocalRun] = {}
        self._clock = clock
        self._read: SpendRead | None = None
        self._read_at = -math.inf
        self._folded = 0
        """Differences of runs that left since the read (their written cost minus what the read saw)."""
        self._generation = 0
        self._left_during_read: dict[str, int] = {}
        self._lock = asyncio.Lock()

    def add(self, run: LocalRun) -> None:
        """Count `run` from now on. The next `current` reads again: a read from before the run's claim
        did not see its dispatch."""
        self.runs[run.dispatch_id] = run
        self._generation += 1
        self._read_at = -math.inf

    def remove(self, dispatch_id: str, final_cost_micro_usd: int) -> None:
        """Stop counting a run whose final cost has been written to its dispatch."""
        self.runs.pop(dispatch_id, None)
        if self._read is not None and dispatch_id in self._read.unsettled:
            self._folded += final_cost_micro_usd - self._read.unsettled[dispatch_id]
        self._left_during_read[dispatch_id] = final_cost_micro_usd

    async def current(self, max_age_s: float, read: Callable[[], Awaitable[SpendRead]]) -> Spend:
        """The spend, read again first when the last read is older than `max_age_s`. One read at a time:
        callers arriving during a read wait for it. Raises what `read` raises."""
        if self._is_stale(max_age_s):
            async with self._lock:
                if self._is_stale(max_age_s):
                    await self._refresh(read)
        return self.spend()

    def spend(self) -> Spend:
        """The spend as of the last read, plus what local runs have spent since."""
        base = self._read or NO_SPEND
        return Spend(base.budget_micro_usd, base.spent_micro_usd + self._folded + self.ahead_of(base))

    def ahead_of(self, base: SpendRead) -> int:
        """What local runs have spent beyond the costs `base` saw stored for them."""
        return sum(
            run.cost_micro_usd - base.unsettled[dispatch_id]
            for dispatch_id, run in self.runs.items()
            if dispatch_id in base.unsettled
        )

    def _is_stale(self, max_age_s: float) -> bool:
        return self._clock() - self._read_at > max_age_s

    async def _refresh(self, read: Callable[[], Awaitable[SpendRead]]) -> None:
        generation = self._generation
        self._left_during_read = {}
        started_at = self._clock()
        fresh = await read()
        # A run that left during the read had its final cost written before it left, but maybe after
        # the read's snapshot: count the difference.
        self._folded = sum(
            cost - fresh.unsettled[dispatch_id]
            for dispatch_id, cost in self._left_during_read.items()
            if dispatch_id in fresh.unsettled
        )
        self._read = fresh
        # A run added during the read may have been claimed after its snapshot: read again next time.
        self._read_at = started_at if generation == self._generation else -math.inf
