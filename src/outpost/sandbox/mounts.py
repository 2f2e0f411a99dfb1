"""Host mounts for sandboxes: size- and inode-capped tmpfs, bind mounts, and finding leftovers.

Made with the mount(2) system call rather than mount(8): a fork and exec per mount would cost more than
the rest of a sandbox's start. Needs root (the bwrap backend already does).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import re
from pathlib import Path

from outpost.errors import SandboxError

_MS_NOSUID = 0x2
_MS_NODEV = 0x4
_MS_BIND = 0x1000
_MNT_DETACH = 0x2
_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def mount_tmpfs(target: Path, *, size_bytes: int, inodes: int, uid: int, mode: int) -> None:
    """A tmpfs at `target`, its root owned by `uid`: ENOSPC past `size_bytes` or past `inodes` files."""
    options = f"size={size_bytes},nr_inodes={inodes},mode={mode:o},uid={uid},gid={uid}"
    _mount(b"tmpfs", target, b"tmpfs", _MS_NOSUID | _MS_NODEV, options.encode())


def bind(source: Path, target: Path) -> None:
    """Make `source` visible at `target` too (`target` must exist)."""
    _mount(os.fsencode(source), target, None, _MS_BIND, None)


def unmount(target: Path) -> None:
    """Detach the mount at `target` (lazily, so a process still inside cannot keep it); a path that is
    not a mount point is left alone."""
    if _libc.umount2(os.fsencode(target), _MNT_DETACH) != 0:
        code = ctypes.get_errno()
        if code not in (errno.EINVAL, errno.ENOENT):  # not a mount point; gone already
            raise SandboxError(f"cannot unmount {target}: {os.strerror(code)}")


def mounts_under(root: Path) -> list[Path]:
    """Mount points at or below `root` in this mount namespace, deepest first (the unmount order)."""
    top = str(root).rstrip("/")
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split(" ", 5)[4]
        if "\\" in point:
            point = _unescape(point)
        if point == top or point.startswith(top + "/"):
            found.append(Path(point))
    return sorted(found, key=lambda path: len(path.parts), reverse=True)


def unmount_all_under(root: Path) -> int:
    """Unmount everything at or below `root`; how many mounts there were."""
    points = mounts_under(root.resolve()) if root.exists() else []
    for point in points:
        unmount(point)
    return len(points)


def is_full(path: Path) -> bool:
    """Whether the file system at `path` has no block or no inode left for an unprivileged writer."""
    try:
        usage = os.statvfs(path)
    except OSError:
        return False
    return usage.f_bavail == 0 or usage.f_favail == 0


def _mount(source: bytes, target: Path, fstype: bytes | None, flags: int, data: bytes | None) -> None:
    if _libc.mount(source, os.fsencode(target), fstype, flags, data) != 0:
        raise SandboxError(f"cannot mount on {target}: {os.strerror(ctypes.get_errno())}")


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash in paths as octal escapes (`\\040`)."""
    return re.sub(r"\\([0-7]{3})", lambda match: chr(int(match.group(1), 8)), field)
