"""Compute samples: a running attempt records its compute so far, and settlement charges each attempt's
last `compute` event (cumulative), summed over attempts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from outpost.agents.catalog import default_catalog
from outpost.db.repositories.ledger import MeteredEvent
from outpost.ledger.prices import GIB, build_price_table
from outpost.ledger.settings import LedgerSettings
from outpost.ledger.settlement import ComputeTotals, charged_compute, ledger_rows
from outpost.sandbox.base import ComputeUsage, LimitName, OutputBatch
from outpost.worker.run_compute import compute_events, compute_samples
from tests.unit.test_ledger_prices import NOW, _dispatch

PRICES = build_price_table(default_catalog(), LedgerSettings())


def _compute(attempt: int | None, cpu_usec: int, memory_byte_s: int, *, final: bool) -> MeteredEvent:
    data: dict[str, object] = {"final": final, "cpu_usec": cpu_usec, "memory_byte_s": memory_byte_s}
    if attempt is not None:
        data["attempt"] = attempt
    return MeteredEvent("compute", {**data, "memory_peak_bytes": 1})


def _compute_row(events: list[MeteredEvent]) -> tuple[int, int, int]:
    (compute,) = [row for row in ledger_rows(_dispatch(), events, PRICES, NOW) if row.kind == "compute"]
    return compute.cpu_usec, compute.memory_byte_s, compute.cost_micro_usd


def test_only_the_final_event_counts_after_several_samples() -> None:
    events = [
        _compute(1, 1_000_000, GIB, final=False),
        MeteredEvent("usage", {"provider": "anthropic", "priced_as": "claude-sonnet-5-5", "input_tokens": 5}),
        _compute(1, 2_000_000, 2 * GIB, final=False),
        _compute(1, 2_500_000, 3 * GIB, final=True),
    ]
    assert _compute_row(events)[:2] == (2_500_000, 3 * GIB)


def test_a_run_that_never_wrote_its_final_event_is_charged_its_last_sample() -> None:
    events = [
        _compute(1, 1_000_000, GIB, final=False),
        _compute(1, 3_600_000_000, 1800 * GIB, final=False),  # one vCPU-hour, half a GB-hour
    ]
    assert _compute_row(events) == (3_600_000_000, 1800 * GIB, 40_000 + 2_000)


def test_each_attempt_is_charged_its_last_event_and_the_attempts_are_added() -> None:
    events = [
        _compute(1, 1_000_000, GIB, final=False),
        _compute(1, 4_000_000, 2 * GIB, final=False),  # attempt 1's worker was lost here
        _compute(2, 500_000, GIB, final=False),
        _compute(2, 700_000, 5 * GIB, final=True),
    ]
    assert _compute_row(events)[:2] == (4_700_000, 7 * GIB)


def test_events_naming_no_attempt_each_count_on_their_own() -> None:
    """Written before samples existed: one final event per attempt, summed as they always were."""
    events = [_compute(None, 1_000, 10, final=True), _compute(None, 2_000, 20, final=True)]
    assert charged_compute([event.data for event in events]) == ComputeTotals(3_000, 30)
    # A malformed attempt number names no attempt; a later attempt's samples still take its last.
    odd = [
        {"attempt": True, "cpu_usec": 5},
        {"attempt": "1", "cpu_usec": 7},
        {"attempt": 3, "cpu_usec": 11},
        {"attempt": 3, "cpu_usec": 13},
    ]
    assert charged_compute(odd) == ComputeTotals(5 + 7 + 13, 0)


def test_the_sample_interval_is_zero_or_at_least_a_tenth_of_a_second() -> None:
    assert LedgerSettings().compute_sample_s == 30.0
    assert LedgerSettings(compute_sample_s=0).compute_sample_s == 0
    with pytest.raises(ValueError, match=r"at least 0\.1 s"):
        LedgerSettings(compute_sample_s=0.01)
    with pytest.raises(ValueError, match="greater than or equal to 0"):
        LedgerSettings(compute_sample_s=-1)


class _GrowingRun:
    """A sandbox run whose compute grows by a fixed step each time it is measured."""

    def __init__(self) -> None:
        self.measured = 0

    def output(self) -> AsyncIterator[OutputBatch]:
        raise NotImplementedError

    async def wait(self) -> int:
        raise NotImplementedError

    async def limit_exceeded(self) -> LimitName | None:
        return None

    async def kill(self) -> None:
        return None

    async def compute_usage(self) -> ComputeUsage:
        self.measured += 1
        return ComputeUsage(1000 * self.measured, 10 * self.measured, 100 * self.measured)


async def test_samples_are_recorded_while_the_body_runs_and_stop_when_it_ends() -> None:
    run, recorded = _GrowingRun(), []
    async with compute_samples([run], 2, 0.1, lambda kind, data: recorded.append((kind, data))):
        await asyncio.sleep(0.35)
    taken = len(recorded)
    assert taken >= 2
    assert recorded[0] == (
        "compute",
        {"attempt": 2, "final": False, "cpu_usec": 1000, "memory_byte_s": 10, "memory_peak_bytes": 100},
    )
    assert [data["cpu_usec"] for _, data in recorded] == [1000 * n for n in range(1, taken + 1)]
    await asyncio.sleep(0.25)
    assert len(recorded) == taken  # none after the body: the final event is always the attempt's last
    (final,) = await compute_events([run], 2)
    assert (final.kind, final.data["final"], final.data["attempt"]) == ("compute", True, 2)


async def test_an_interval_of_zero_records_no_samples() -> None:
    run, recorded = _GrowingRun(), []
    async with compute_samples([run], 1, 0, lambda kind, data: recorded.append((kind, data))):
        await asyncio.sleep(0.15)
    assert (recorded, run.measured) == ([], 0)
