"""The data dir's disk space: the free-space reserve writes must respect, and how much the data dir takes.

`DiskGuard.check` is what writers (the artifact writer, the checkout) call before they write: one
`statvfs`, no walk, so it is cheap enough for every write. `measure_usage` walks the data dir and is
slow on a large one; the retention janitor calls it once per sweep, in a thread.
"""

from __future__ import annotations

import math
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from outpost.errors import InsufficientStorage, Unavailable
from outpost.services.retention_settings import RetentionSettings

StatVfs = Callable[[str], os.statvfs_result]
_UNITS = ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB")


@dataclass(frozen=True, slots=True)
class DiskState:
    """The data dir's file system as a write sees it."""

    free_bytes: int
    """Space an unprivileged user may still take (`f_bavail`: the root-reserved blocks excluded)."""
    total_bytes: int
    reserve_bytes: int
    """Free space no write may take: the larger of `min_free_bytes` and `min_free_percent`."""
    low: bool
    """Free space is already below the reserve."""


class DiskGuard:
    """Refuses writes that would leave the data dir's file system with less free space than the reserve."""

    def __init__(self, data_dir: Path, settings: RetentionSettings, statvfs: StatVfs = os.statvfs) -> None:
        self._data_dir = data_dir
        self._settings = settings
        self._statvfs = statvfs  # injectable: tests cannot fill a real disk to its reserve

    def state(self) -> DiskState:
        """Raises Unavailable when the file system cannot be queried (e.g. the data dir is missing)."""
        try:
            found = self._statvfs(os.fspath(self._data_dir))
        except OSError as exc:
            raise Unavailable(f"cannot read the free space of the data dir: {exc.strerror or exc}") from exc
        free = found.f_bavail * found.f_frsize
        total = found.f_blocks * found.f_frsize
        reserve = reserve_bytes(total, self._settings)
        return DiskState(free_bytes=free, total_bytes=total, reserve_bytes=reserve, low=free < reserve)

    def check(self, need_bytes: int) -> None:
        """Return when `need_bytes` more can be written; raise InsufficientStorage (507) when that would
        leave less free space than the reserve, and Unavailable when free space cannot be read."""
        state = self.state()
        if state.free_bytes - max(need_bytes, 0) < state.reserve_bytes:
            raise InsufficientStorage(
                f"not enough disk space to write {format_bytes(need_bytes)}: the data dir's file system "
                f"has {format_bytes(state.free_bytes)} free and keeps {format_bytes(state.reserve_bytes)} "
                "in reserve (OUTPOST_RETENTION__MIN_FREE_BYTES/__MIN_FREE_PERCENT); free some space or "
                "lower the retention periods"
            )


def reserve_bytes(total_bytes: int, settings: RetentionSettings) -> int:
    """The larger of the absolute and the relative reserve, rounded up to a whole byte."""
    relative = math.ceil(total_bytes * settings.min_free_percent / 100)
    return max(settings.min_free_bytes, relative)


def format_bytes(count: int) -> str:
    """`1.5 GiB`, `512 bytes`: sizes as an operator reads them in a message."""
    value = float(count)
    for unit in _UNITS[:-1]:
        if abs(value) < 1024:
            return f"{count} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} {_UNITS[-1]}"


def measure_usage(root: Path) -> int:
    """Bytes allocated (`st_blocks`) to `root` and everything below it on `root`'s own file system.

    Blocking; call it in a thread. Other file systems mounted below `root` (the sandbox's tmpfs
    workspaces) are not entered, symlinks are not followed, a file with several hard links (a checkout
    that shares a mirror's objects) counts once, and entries that vanish or cannot be read during the
    walk are skipped: the figure is an estimate for the disk cap, not an audit.
    """
    top = os.lstat(root)
    seen: set[int] = set()
    total = top.st_blocks * 512
    for info in _entries_below(os.fspath(root), top.st_dev):
        if info.st_nlink > 1 and not stat.S_ISDIR(info.st_mode):
            if info.st_ino in seen:
                continue
            seen.add(info.st_ino)
        total += info.st_blocks * 512
    return total


def _entries_below(root: str, device: int) -> Iterator[os.stat_result]:
    """The stat of every entry below `root` on `device`, without following symlinks or crossing mounts."""
    folders = [root]
    while folders:
        folder = folders.pop()
        for entry in _scan(folder):
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue  # removed since the folder was read
            if info.st_dev != device:
                continue  # a mount point: another file system's space
            if stat.S_ISDIR(info.st_mode):
                folders.append(entry.path)
            yield info


def _scan(folder: str) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as scan:
            return list(scan)
    except OSError:
        return []  # removed or unreadable since its parent was read
