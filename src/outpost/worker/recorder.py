"""Batches a run's output lines into event writes: one transaction per batch, not per line."""

from __future__ import annotations

import asyncio

from outpost.sandbox.base import OutputBatch
from outpost.services.runs import NewEvent, RunService

MAX_BATCH_EVENTS = 1000
EVENT_OVERHEAD_BYTES = 64
"""What each kept event costs the budget beyond its text: a flood of one-character lines is a flood of
rows, and rows, not characters, are what fill the store and slow the writer."""


class OutputRecorder:
    """Collects lines and writes them at most `flush_s` after they arrived, in order.

    Past `max_bytes` of output (each event's text plus EVENT_OVERHEAD_BYTES) the rest is dropped and one
    notice event says so (the run keeps going).
    """

    def __init__(self, runs: RunService, dispatch_id: str, flush_s: float, max_bytes: int) -> None:
        self._runs = runs
        self._dispatch_id = dispatch_id
        self._flush_s = flush_s
        self._budget_bytes = max_bytes
        self._pending: list[NewEvent] = []
        self._timer: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._truncated = False
        self.batches_seen = 0
        """Output batches handed over so far, kept or not (the worker watches it for progress)."""

    def add(self, batch: OutputBatch) -> None:
        self.batches_seen += 1
        if self._truncated:
            return  # before measuring anything: past the limit, a flood should cost as little as possible
        for text in batch.lines:
            size = len(text.encode()) + EVENT_OVERHEAD_BYTES
            if not self._within_budget(size):
                return
            self._budget_bytes -= size
            self._pending.append(NewEvent("log", {"stream": batch.stream, "line": text}))
        self._schedule(0 if len(self._pending) >= MAX_BATCH_EVENTS else self._flush_s)

    def add_event(self, kind: str, data: dict[str, object]) -> None:
        """Record an event derived from the output (a parsed agent event); it counts against the same
        budget as the lines, so an agent printing without end cannot grow the event log without end."""
        if self._truncated:
            return
        size = len(repr(data)) + EVENT_OVERHEAD_BYTES
        if not self._within_budget(size):
            return
        self._budget_bytes -= size
        self._pending.append(NewEvent(kind, data))
        self._schedule(0 if len(self._pending) >= MAX_BATCH_EVENTS else self._flush_s)

    def note(self, message: str) -> None:
        self.event("notice", {"message": message})

    def event(self, kind: str, data: dict[str, object]) -> None:
        """Record something other than an output line (a notice, an egress decision), in order."""
        self._pending.append(NewEvent(kind, data))
        self._schedule(0)

    async def close(self) -> None:
        """Write everything still pending."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        await self._flush()

    def _within_budget(self, size: int) -> bool:
        """False once output outgrew the budget. A shorter line that would still fit is dropped too: the
        notice says nothing after it is kept, and a log with silent gaps would mislead."""
        if self._truncated:
            return False
        if size > self._budget_bytes:
            self._truncated = True
            self.note("output limit reached: further output of this run is not kept")
            return False
        return True

    def _schedule(self, delay_s: float) -> None:
        if self._timer is not None and (delay_s > 0 or self._timer.done()):
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.create_task(self._flush_after(delay_s))

    async def _flush_after(self, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        self._timer = None
        await self._flush()

    async def _flush(self) -> None:
        async with self._lock:
            batch, self._pending = self._pending, []
            await self._runs.record(self._dispatch_id, batch)
