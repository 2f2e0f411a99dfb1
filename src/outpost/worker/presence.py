"""A worker's entry in the fleet (`workers`): registered when it starts, kept alive by a heartbeat that
also says how busy it is, marked draining when it stops taking work and stopped when it exits. What the
fleet's health shows, and how other processes tell a live worker from a dead one."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Sequence

from outpost import __version__
from outpost.db.repositories import workers as repo
from outpost.db.repositories.workers import WorkerRow
from outpost.db.store import Store
from outpost.db.types import utc_now
from outpost.domain.ids import new_ulid
from outpost.services.periodic import Periodic

log = logging.getLogger(__name__)
_HOST_CHARS = 30
"""Of the host name in a worker's id (the id is at most 64 characters)."""


def new_worker_id() -> str:
    """`<host>-<pid>-<ulid>`: readable in the fleet's list, unique per process start."""
    return f"{socket.gethostname()[:_HOST_CHARS]}-{os.getpid()}-{new_ulid()}"


class WorkerPresence:
    def __init__(
        self, store: Store, *, slots: int, agents: Sequence[str], heartbeat_s: float, busy: Callable[[], int]
    ) -> None:
        self.id = new_worker_id()
        self._store = store
        self._slots = slots
        self._agents = sorted(agents)
        self._busy = busy
        self._beats = Periodic("worker heartbeat", self._beat, heartbeat_s)
        self._running = False
        self.taken_for_dead = False
        """Set when a heartbeat found this worker marked stopped: another process took it for dead and
        handed its dispatches on, so it must stop taking work."""

    async def start(self) -> None:
        now = utc_now()
        row = WorkerRow(
            id=self.id, host=socket.gethostname()[:255], pid=os.getpid(), version=__version__,
            slots=self._slots, busy=0, agents=self._agents, draining=False, started_at=now, heartbeat_at=now,
        )  # fmt: skip
        async with self._store.write() as conn:
            await repo.register(conn, row)
        self._running = True
        self._beats.start()

    async def drain(self) -> None:
        async with self._store.write() as conn:
            await repo.set_draining(conn, self.id)

    async def stop(self) -> None:
        """Stop beating and record the clean exit. A failure is logged: the worker then looks dead after
        the stale time, which is what it is. Does nothing unless started (and not stopped yet)."""
        if not self._running:
            return
        self._running = False
        await self._beats.stop()
        try:
            async with self._store.write() as conn:
                await repo.mark_stopped(conn, [self.id], utc_now())
        except Exception:
            log.exception("worker %s could not record its exit", self.id)

    async def _beat(self) -> None:
        async with self._store.write() as conn:
            alive = await repo.beat(conn, self.id, self._busy(), utc_now())
        if not alive and not self.taken_for_dead:
            self.taken_for_dead = True
            log.error("worker %s was taken for dead by another process; it must stop taking work", self.id)


async def retire_workers(store: Store) -> None:
    """Mark every worker of the store stopped. Only for a process that knows no other worker can be
    running (the embedded server, which holds the data dir's lock and has just taken back every dispatch
    a worker held)."""
    async with store.write() as conn:
        now = utc_now()
        await repo.mark_stopped(conn, await repo.silent_since(conn, now), now)
