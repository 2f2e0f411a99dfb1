"""SQLite write transactions run inline on the event loop, one at a time (decision record 0007).

Through aiosqlite every step of a write (BEGIN, each statement, COMMIT, the pool's reset) was a round trip
to the driver's thread: 3-8 ms per transaction on two busy cores, five or more of them per dispatch. In
WAL mode with `synchronous=NORMAL` a commit appends to the WAL without an fsync, so the whole transaction
takes well under a millisecond on the loop's own thread. Two things could still stall the loop, and are
kept off it:

- waiting for the write lock another process holds (the offline CLI): BEGIN IMMEDIATE runs with no busy
  timeout and is retried with `asyncio.sleep` until `LOCK_WAIT_S`;
- checkpoints, which fsync: automatic checkpoints are off for this connection, and a passive checkpoint
  runs in a thread every `CHECKPOINT_EVERY` commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy import Connection as SyncConnection
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from outpost.db.inline import InlineConnection
from outpost.errors import StoreUnavailable

LOCK_WAIT_S = 10.0
CHECKPOINT_EVERY = 200
_RETRY_S = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05)


class InlineSqliteWriter:
    """Write transactions over one sync connection of `engine` (pool of one, `busy_timeout=0`, no
    automatic checkpoints: see `WRITER_PRAGMAS`)."""

    def __init__(self, engine: Engine, checkpointer: Engine) -> None:
        self._engine = engine
        self._checkpointer = checkpointer
        self._lock = asyncio.Lock()
        self._commits = 0
        self._checkpoint: asyncio.Task[None] | None = None

    @contextlib.asynccontextmanager
    async def begin(self) -> AsyncIterator[InlineConnection]:
        """A write transaction: committed when the block ends without an error, rolled back otherwise.
        Raises StoreUnavailable when another process holds the write lock for longer than LOCK_WAIT_S."""
        async with self._lock:
            with self._engine.connect() as conn:
                await _begin_immediate(conn)
                try:
                    yield InlineConnection(conn)
                except BaseException:
                    conn.rollback()
                    raise
                conn.commit()
            self._after_commit()

    async def dispose(self) -> None:
        if self._checkpoint is not None:
            await self._checkpoint
        self._engine.dispose()
        self._checkpointer.dispose()

    def _after_commit(self) -> None:
        self._commits += 1
        if self._commits % CHECKPOINT_EVERY == 0 and (self._checkpoint is None or self._checkpoint.done()):
            self._checkpoint = asyncio.create_task(asyncio.to_thread(self._run_checkpoint))

    def _run_checkpoint(self) -> None:
        # PASSIVE: copies what it can without waiting for readers or the writer, then fsyncs.
        with self._checkpointer.connect() as conn:
            conn.execute(text("PRAGMA wal_checkpoint(PASSIVE)"))


WRITER_PRAGMAS = ("PRAGMA busy_timeout=0", "PRAGMA wal_autocheckpoint=0")


async def _begin_immediate(conn: SyncConnection) -> None:
    """BEGIN IMMEDIATE (through the engine's `begin` hook), retried without blocking the loop while
    another process holds the write lock."""
    deadline = time.monotonic() + LOCK_WAIT_S
    for attempt in itertools.count():
        try:
            conn.begin()
            return
        except OperationalError as exc:
            if not _is_locked(exc):
                raise
            if time.monotonic() > deadline:
                raise StoreUnavailable(f"the database's write lock is held elsewhere: {exc.orig}") from exc
            conn.rollback()
        await asyncio.sleep(_RETRY_S[min(attempt, len(_RETRY_S) - 1)])


def _is_locked(exc: OperationalError) -> bool:
    orig: Any = exc.orig
    return "locked" in str(orig) or "busy" in str(orig)
