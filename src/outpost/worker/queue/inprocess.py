"""The embedded queue backend: the dispatch row is the queue entry; an asyncio loop claims and runs rows."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from outpost.db.repositories.dispatches import DispatchRow
from outpost.db.store import Connection
from outpost.services.runs import RunService
from outpost.worker.executor import DispatchExecutor

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _ActiveRun:
    task: asyncio.Task[None]
    abort: asyncio.Event


class InProcessWorker:
    """Claims queued dispatches while it has free slots; implements the DispatchQueue protocol."""

    def __init__(
        self, runs: RunService, executor: DispatchExecutor, slots: int, poll_interval_s: float
    ) -> None:
        self._runs = runs
        self._executor = executor
        self._slots = slots
        self._poll_interval_s = poll_interval_s
        self._active: dict[str, _ActiveRun] = {}
        self._wakeup = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._stopping = False

    async def enqueue(self, conn: Connection, dispatch_id: str) -> None:
        """Nothing to write: a queued row is the queue entry."""

    def wake(self) -> None:
        self._wakeup.set()

    async def release_held(self, tenant_id: str, count: int | None) -> None:
        """The loop's next pass claims every row that may run: waking it is enough."""
        self.wake()

    async def request_abort(self, dispatch_id: str) -> bool:
        active = self._active.get(dispatch_id)
        if active is None:
            return False
        active.abort.set()
        return True

    async def wait_stopped(self, dispatch_id: str, timeout_s: float) -> bool:
        active = self._active.get(dispatch_id)
        if active is None:
            return True
        done, _ = await asyncio.wait({active.task}, timeout=timeout_s)
        return bool(done)

    @property
    def busy(self) -> int:
        """Dispatches running now."""
        return len(self._active)

    def is_healthy(self) -> bool:
        return self._loop_task is not None and not self._loop_task.done()

    async def open(self) -> None:
        """Nothing to connect: the store is the queue."""

    def start(self) -> None:
        self._loop_task = asyncio.create_task(self._claim_loop(), name="outpost-worker")

    async def stop(self) -> None:
        """Stop claiming and kill the runs in progress. Their dispatches stay active in the store, and the
        next start reconciles them like after a crash, so shutdown and crash recovery share one path."""
        self._stopping = True
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        runs = list(self._active.values())
        for active in runs:
            active.task.cancel()
        await asyncio.gather(*(active.task for active in runs), return_exceptions=True)

    async def _claim_loop(self) -> None:
        while not self._stopping:
            self._wakeup.clear()
            free = self._slots - len(self._active)
            claimed: list[DispatchRow] = []
            if free > 0:
                try:
                    claimed = await self._runs.claim(free)
                except Exception:
                    log.exception("claiming queued dispatches failed; retrying")
            for row in claimed:
                self._launch(row)
            if len(claimed) < free or free <= 0:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation that
                # arrives as the wake-up does, and stop() would then wait for this loop forever.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._poll_interval_s):
                        await self._wakeup.wait()

    def _launch(self, row: DispatchRow) -> None:
        abort = asyncio.Event()
        task = asyncio.create_task(self._executor.execute(row, abort), name=f"dispatch-{row.id}")
        self._active[row.id] = _ActiveRun(task, abort)
        task.add_done_callback(lambda _: self._finished(row.id))

    def _finished(self, dispatch_id: str) -> None:
        self._active.pop(dispatch_id, None)
        self._wakeup.set()
