"""An exclusive lock that the worker processes of one host share: `flock` on a lock file.

The lock is polled with LOCK_NB rather than taken in a blocking call on a thread: a thread stuck in
`flock` cannot be cancelled, and would take the lock after its task had given up, holding it forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

FIRST_POLL_S = 0.005
LAST_POLL_S = 0.2


@contextlib.asynccontextmanager
async def file_lock(path: Path, *, timeout_s: float) -> AsyncIterator[None]:
    """Hold an exclusive lock on `path` (created when missing) for the block. A `timeout_s` of 0 tries
    once. Raises TimeoutError when another holder keeps it longer, OSError when `path` cannot be opened."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        await _acquire(fd, timeout_s)
        yield
    finally:
        os.close(fd)  # releases the lock


async def _acquire(fd: int, timeout_s: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    delay = FIRST_POLL_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        if loop.time() + delay > deadline:
            raise TimeoutError(f"the lock was held longer than {timeout_s:g} s")
        await asyncio.sleep(delay)
        delay = min(delay * 2, LAST_POLL_S)


@contextlib.contextmanager
def try_file_lock(path: Path) -> Iterator[bool]:
    """Try once to lock `path` (created when missing); yields whether the lock is held for the block."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
        else:
            yield True
    finally:
        os.close(fd)
