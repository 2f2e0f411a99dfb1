"""A tenant's month spend as one process sees it: the last read, corrected by its own runs' meters."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

import pytest

from outpost.db.repositories.spend import SpendRead
from outpost.services.budgets import format_usd
from outpost.services.tenant_spend import Spend, TenantSpend, month_start


@dataclass
class Run:
    dispatch_id: str
    cost_micro_usd: int = 0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Database:
    """What reads return, and how many were made."""

    def __init__(self, read: SpendRead) -> None:
        self.next = read
        self.reads = 0
        self.gate: asyncio.Event | None = None

    async def read(self) -> SpendRead:
        self.reads += 1
        answer = self.next
        if self.gate is not None:
            await self.gate.wait()
        return answer


def read(budget: int | None, ledger: int, **unsettled: int) -> SpendRead:
    return SpendRead(budget, ledger, dict(unsettled))


async def test_a_run_is_counted_beyond_the_cost_the_read_saw_stored_not_twice() -> None:
    clock = Clock()
    view, db = TenantSpend(clock), Database(read(1000, 300, a=50, b=20))
    run = Run("a", cost_micro_usd=80)
    view.add(run)
    assert await view.current(0.25, db.read) == Spend(1000, 300 + 50 + 20 + 30)
    run.cost_micro_usd = 120  # metered, not written yet
    assert view.spend() == Spend(1000, 300 + 50 + 20 + 70)
    db.next = read(1000, 300, a=110, b=20)  # a write landed meanwhile
    clock.now += 1
    assert (await view.current(0.25, db.read)).spent_micro_usd == 300 + 110 + 20 + 10


async def test_reads_happen_at_most_once_per_refresh_time_and_callers_share_one() -> None:
    clock = Clock()
    view, db = TenantSpend(clock), Database(read(None, 0))
    view.add(Run("a"))
    db.gate = asyncio.Event()
    waiting = [asyncio.create_task(view.current(0.25, db.read)) for _ in range(5)]
    await asyncio.sleep(0)
    db.gate.set()
    await asyncio.gather(*waiting)
    clock.now += 0.2
    await view.current(0.25, db.read)
    assert db.reads == 1
    clock.now += 0.1
    await view.current(0.25, db.read)
    assert db.reads == 2


async def test_a_run_added_during_a_read_makes_the_next_call_read_again() -> None:
    clock = Clock()
    view, db = TenantSpend(clock), Database(read(None, 0))
    db.gate = asyncio.Event()
    reading = asyncio.create_task(view.current(10, db.read))
    await asyncio.sleep(0)
    view.add(Run("late"))  # claimed after the read's snapshot, maybe
    db.gate.set()
    await reading
    await view.current(10, db.read)
    assert db.reads == 2


async def test_a_run_that_leaves_keeps_counting_until_a_read_sees_its_written_cost() -> None:
    clock = Clock()
    view, db = TenantSpend(clock), Database(read(1000, 0, a=10))
    run = Run("a", cost_micro_usd=10)
    view.add(run)
    await view.current(10, db.read)
    run.cost_micro_usd = 90
    view.remove("a", 90)
    assert view.spend().spent_micro_usd == 90
    db.next = read(1000, 95)  # settled: its cost (plus compute) is in the ledger now
    clock.now += 11
    assert (await view.current(10, db.read)).spent_micro_usd == 95


async def test_a_run_that_leaves_during_a_read_is_counted_once_whatever_the_read_saw() -> None:
    for seen in (10, 90):  # the read's snapshot from before, or after, the final write
        clock = Clock()
        view, db = TenantSpend(clock), Database(read(1000, 0, a=10))
        view.add(Run("a", cost_micro_usd=90))
        await view.current(10, db.read)
        db.next, db.gate = read(1000, 0, a=seen), asyncio.Event()
        clock.now += 11
        reading = asyncio.create_task(view.current(10, db.read))
        await asyncio.sleep(0)
        view.remove("a", 90)
        db.gate.set()
        assert (await reading).spent_micro_usd == 90


async def test_a_failed_read_raises_and_keeps_the_last_view() -> None:
    clock = Clock()
    view, db = TenantSpend(clock), Database(read(1000, 400))
    await view.current(10, db.read)

    async def broken() -> SpendRead:
        raise OSError("down")

    clock.now += 11
    with pytest.raises(OSError, match="down"):
        await view.current(10, broken)
    assert view.spend() == Spend(1000, 400)


def test_the_budget_is_spent_once_the_spend_reaches_it_and_remaining_is_never_negative() -> None:
    assert not Spend(None, 10**12).exhausted
    assert Spend(None, 5).remaining_micro_usd is None
    assert not Spend(100, 99).exhausted
    assert Spend(100, 100).exhausted
    assert Spend(100, 130).remaining_micro_usd == 0


def test_the_month_starts_on_the_first_at_midnight_utc() -> None:
    late = datetime(2026, 3, 31, 23, 30, tzinfo=UTC)
    assert month_start(late) == datetime(2026, 3, 1, tzinfo=UTC)
    # 00:30 on April 1st at UTC+2 is still March in UTC.
    east = datetime(2026, 4, 1, 0, 30, tzinfo=timezone(timedelta(hours=2)))
    assert month_start(east) == datetime(2026, 3, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("micro_usd", "text"),
    [(0, "$0.00"), (12_500_000, "$12.50"), (12_345, "$0.012345"), (10_000, "$0.01"), (1, "$0.000001")],
)
def test_amounts_are_shown_in_dollars_with_cents_and_smaller_digits_when_there_are_any(
    micro_usd: int, text: str
) -> None:
    assert format_usd(micro_usd) == text
