"""Memory held over time: a run's memory use, sampled while it runs and integrated into byte-seconds.

Neither cgroup v1 nor /proc keeps a time integral of memory, so it is sampled: often at first (short runs
still get several samples), then every second, and once more when the run ends. Between two samples the
use is taken to change linearly (the trapezoid rule); what happens between samples (a spike shorter than a
second) is smoothed, in both directions, by at most one interval's worth of the change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator

log = logging.getLogger(__name__)

FIRST_SAMPLE_S = 0.1
"""The first sample's delay; each next one waits twice as long, up to SAMPLE_INTERVAL_S."""
SAMPLE_INTERVAL_S = 1.0

MemoryReader = Callable[[], int | None]
"""Reads the run's memory use in bytes now; None when it cannot (the run's cgroup is gone). Blocks for
a few milliseconds at most: it is called in a worker thread."""


class MemoryIntegral:
    """Trapezoids between timed samples (seconds on a monotonic clock, bytes)."""

    def __init__(self) -> None:
        self._last: tuple[float, int] | None = None
        self._byte_s = 0.0
        self.peak_bytes = 0

    def add(self, at_s: float, used_bytes: int) -> None:
        used_bytes = max(0, used_bytes)
        if self._last is not None:
            last_at, last_bytes = self._last
            self._byte_s += max(0.0, at_s - last_at) * (last_bytes + used_bytes) / 2
        self._last = (at_s, used_bytes)
        self.peak_bytes = max(self.peak_bytes, used_bytes)

    @property
    def byte_s(self) -> int:
        return round(self._byte_s)


class MemorySampler:
    """Samples a run's memory from `start()` until `ended` completes or `stop()` is called."""

    def __init__(self, read: MemoryReader) -> None:
        self._read = read
        self.integral = MemoryIntegral()
        self._task: asyncio.Task[None] | None = None
        self._stopped = False

    def start(self, ended: Awaitable[object]) -> None:
        """Take the first sample at once and go on in the background until `ended` completes."""
        self._task = asyncio.create_task(self._run(ended), name="outpost-memory-sampler")

    async def stop(self) -> MemoryIntegral:
        """Stop sampling, with one last sample unless sampling already ended. Idempotent."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await self._sample()
        self._stopped = True
        return self.integral

    async def _run(self, ended: Awaitable[object]) -> None:
        finished = asyncio.ensure_future(ended)
        try:
            await self._sample()
            for interval_s in _intervals():
                done, _ = await asyncio.wait({finished}, timeout=interval_s)
                await self._sample()
                if done:
                    return
        finally:
            if not finished.done():
                finished.cancel()

    async def _sample(self) -> None:
        if self._stopped:
            return
        try:
            used = await asyncio.to_thread(self._read)
        except OSError:
            log.debug("a memory sample could not be read", exc_info=True)
            return
        if used is not None:
            self.integral.add(asyncio.get_running_loop().time(), used)


def _intervals() -> Iterator[float]:
    interval = FIRST_SAMPLE_S
    while True:
        yield interval
        interval = min(SAMPLE_INTERVAL_S, interval * 2)
