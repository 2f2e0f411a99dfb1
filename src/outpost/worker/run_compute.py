"""The `compute` event: what an attempt's sandbox runs used, recorded for the ledger to settle."""

from __future__ import annotations

from collections.abc import Sequence

from outpost.sandbox.base import SandboxRun
from outpost.services.runs import NewEvent


async def compute_events(runs: Sequence[SandboxRun]) -> list[NewEvent]:
    """One event for the attempt's runs (call after killing them); none when no run started. Its
    quantities are integers: CPU microseconds and memory byte-seconds, summed, and the highest peak."""
    if not runs:
        return []
    used = [await run.compute_usage() for run in runs]
    return [
        NewEvent("compute", {
            "cpu_usec": sum(usage.cpu_usec for usage in used),
            "memory_byte_s": sum(usage.memory_byte_s for usage in used),
            "memory_peak_bytes": max(usage.memory_peak_bytes for usage in used),
        })
    ]  # fmt: skip
