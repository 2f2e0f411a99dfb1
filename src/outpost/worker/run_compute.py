"""The `compute` events: what an attempt's sandbox runs used, recorded for the ledger to settle.

Each event is cumulative for its attempt and names it: `{"attempt", "final", "cpu_usec",
"memory_byte_s", "memory_peak_bytes"}`. While the run is supervised, a sample (`final: false`) is
recorded every `compute_sample_s`; the measurement after the kill (`final: true`) comes last. Settlement
charges each attempt's last one, so a run whose worker is lost, or whose cancel is settled before the
worker answers, is still charged what it used up to its last sample.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence

from outpost.sandbox.base import SandboxRun
from outpost.services.runs import NewEvent

log = logging.getLogger(__name__)

RecordEvent = Callable[[str, dict[str, object]], None]
"""Queues an event for writing, in order with the run's output (`OutputRecorder.event`)."""


async def compute_events(runs: Sequence[SandboxRun], attempt: int) -> list[NewEvent]:
    """The attempt's final event (call after killing its runs); none when no run started."""
    if not runs:
        return []
    return [NewEvent("compute", await measure_compute(runs, attempt, final=True))]


async def measure_compute(runs: Sequence[SandboxRun], attempt: int, *, final: bool) -> dict[str, object]:
    """The runs' use so far as a `compute` event's data: integers, CPU microseconds and memory
    byte-seconds summed, and the highest peak."""
    used = [await run.compute_usage() for run in runs]
    return {
        "attempt": attempt,
        "final": final,
        "cpu_usec": sum(usage.cpu_usec for usage in used),
        "memory_byte_s": sum(usage.memory_byte_s for usage in used),
        "memory_peak_bytes": max((usage.memory_peak_bytes for usage in used), default=0),
    }


@contextlib.asynccontextmanager
async def compute_samples(
    runs: Sequence[SandboxRun], attempt: int, interval_s: float, record: RecordEvent
) -> AsyncIterator[None]:
    """Record a sample of `runs` every `interval_s` (0: never) while the body runs.

    Leave the body before killing the runs: a run may not be measured during its kill (its cgroup goes),
    and a sample must never follow the final event of its attempt."""
    if interval_s <= 0:
        yield
        return
    sampling = asyncio.create_task(_sample_every(runs, attempt, interval_s, record), name="compute-samples")
    try:
        yield
    finally:
        sampling.cancel()
        # Not suppress(CancelledError): a cancellation of the caller meanwhile must go on to it.
        (ended,) = await asyncio.gather(sampling, return_exceptions=True)
        if isinstance(ended, Exception):
            log.error("compute samples stopped early", exc_info=ended)


async def _sample_every(
    runs: Sequence[SandboxRun], attempt: int, interval_s: float, record: RecordEvent
) -> None:
    while True:
        await asyncio.sleep(interval_s)
        record("compute", await measure_compute(runs, attempt, final=False))
