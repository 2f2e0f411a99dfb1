"""The queue seam: how a committed dispatch reaches a worker, and how a cancel reaches its run.

In the embedded default the dispatch row is the queue entry and the in-process worker claims rows; when
scaled out, procrastinate jobs are written in the same transaction as the row.
"""

from __future__ import annotations

from typing import Protocol

from outpost.db.store import Connection


class DispatchQueue(Protocol):
    async def enqueue(self, conn: Connection, dispatch_id: str) -> None:
        """Queue a dispatch inside the caller's transaction (the row and its queue entry commit together)."""

    def wake(self) -> None:
        """Tell workers that queued work was committed. Never raises; a lost wake-up only costs a poll."""

    async def release_held(self, tenant_id: str, count: int | None) -> None:
        """A tenant may run more now (a cap was raised or removed): let up to `count` (None: all) of its
        dispatches held back by its cap be claimed at once rather than at their next recheck. Call it
        after the change commits. Never raises; a lost release only costs the wait for the recheck."""

    async def request_abort(self, dispatch_id: str) -> bool:
        """Ask the run of a dispatch to stop at once. True when a live run received the request."""

    async def wait_stopped(self, dispatch_id: str, timeout_s: float) -> bool:
        """Wait until the run of a dispatch has ended and recorded its outcome. False on timeout."""

    def is_healthy(self) -> bool:
        """True while the workers this process relies on are taking work."""


class QueueBackend(DispatchQueue, Protocol):
    """A queue backend as the composition root holds it: opened with the server, started where this
    process runs dispatches, stopped with it."""

    @property
    def busy(self) -> int:
        """Dispatches this process is running now."""

    async def open(self) -> None:
        """Connect what enqueue and abort need, before the server takes requests. Raises Unavailable when
        the backend cannot work with this database."""

    def start(self) -> None:
        """Start claiming and running dispatches."""

    async def stop(self) -> None:
        """Stop taking work, end or hand back the runs in progress, and close connections."""
