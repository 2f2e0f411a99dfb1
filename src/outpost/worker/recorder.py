"""Writes a run's output lines as events: at once when idle, in batches while the store is busy."""

from __future__ import annotations

import asyncio
import contextlib

from outpost.sandbox.base import OutputBatch
from outpost.services.runs import NewEvent, RunService

MAX_BATCH_EVENTS = 1000
"""Most events written in one transaction (a flood is written in several, each holding the write lock
briefly)."""
EVENT_OVERHEAD_BYTES = 64
"""What each kept event costs the budget beyond its text: a flood of one-character lines is a flood of
rows, and rows, not characters, are what fill the store and slow the writer."""


class OutputRecorder:
    """Records lines and events in order, one transaction per batch (adaptive batching).

    An idle recorder writes what it is given at once. While a write is under way, whatever arrives waits
    for it and then goes in the next write, which takes everything pending (up to MAX_BATCH_EVENTS): a
    lone line costs one store round trip of latency, and a flood is written in batches as large as the
    store's speed makes them. `flush_s` > 0 adds a wait before each write to gather more lines (fewer
    transactions, more latency); events other than output, and full batches, never wait for it.

    Past `max_bytes` of output (each event's text plus EVENT_OVERHEAD_BYTES) the rest is dropped and one
    notice event says so (the run keeps going).
    """

    def __init__(self, runs: RunService, dispatch_id: str, flush_s: float, max_bytes: int) -> None:
        self._runs = runs
        self._dispatch_id = dispatch_id
        self._flush_s = flush_s
        self._budget_bytes = max_bytes
        self._pending: list[NewEvent] = []
        self._writer: asyncio.Task[None] | None = None
        self._due = asyncio.Event()
        """Set when the pending events must not wait for `flush_s`."""
        self._closing = False
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
        self._schedule(urgent=len(self._pending) >= MAX_BATCH_EVENTS)

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
        self._schedule(urgent=len(self._pending) >= MAX_BATCH_EVENTS)

    def note(self, message: str) -> None:
        self.event("notice", {"message": message})

    def event(self, kind: str, data: dict[str, object]) -> None:
        """Record something other than an output line (a notice, an egress decision), in order."""
        self._pending.append(NewEvent(kind, data))
        self._schedule(urgent=True)

    async def close(self) -> None:
        """Write everything still pending. Raises what a write raised (the store failed)."""
        self._closing = True
        self._due.set()
        if self._writer is not None:
            await self._writer
        if self._pending:  # an earlier write failed and stopped its writer
            await self._write_pending()

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

    def _schedule(self, *, urgent: bool) -> None:
        if urgent:
            self._due.set()
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_pending())

    async def _write_pending(self) -> None:
        """One write after another, in order, until nothing is pending."""
        try:
            while self._pending:
                if self._flush_s > 0 and not (self._due.is_set() or self._closing):
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self._flush_s):
                            await self._due.wait()
                batch = self._pending[:MAX_BATCH_EVENTS]
                del self._pending[:MAX_BATCH_EVENTS]
                if len(self._pending) < MAX_BATCH_EVENTS:
                    self._due.clear()
                await self._runs.record(self._dispatch_id, batch)
        finally:
            self._writer = None
