"""Unprivileged uids for sandboxes: each running dispatch gets one of its own."""

from __future__ import annotations

import os
from pathlib import Path

from outpost.errors import SandboxError


class UidPool:
    """Hands out uids from `[first, first + count)`; a released uid goes to the back of the line, so a uid
    is reused as late as possible."""

    def __init__(self, first: int, count: int) -> None:
        self.first = first
        self.count = count
        self._free = list(range(first, first + count))

    def acquire(self) -> int:
        """Raises SandboxError when every uid is in use."""
        if not self._free:
            raise SandboxError(f"all {self.count} sandbox uids are in use; raise OUTPOST_SANDBOX__UID_COUNT")
        return self._free.pop(0)

    def release(self, uid: int) -> None:
        """Return a uid once no process runs as it any more."""
        self._free.append(uid)

    def __contains__(self, uid: int) -> bool:
        return self.first <= uid < self.first + self.count


def pids_owned_by(pool: UidPool) -> list[int]:
    """Pids of processes whose real uid is in the pool (read from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            uid = entry.stat().st_uid
        except OSError:
            continue
        if uid in pool and int(entry.name) != os.getpid():
            found.append(int(entry.name))
    return found
