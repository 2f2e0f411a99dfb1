"""Re-stamping a fresh checkout's index after its files changed owner, so that capture does not re-read them.

Git recognises an unchanged file by the stat data its index holds (see `capture`). Handing the
workspace to a run's uid (a chown of every file) changes each file's ctime, uid and gid and nothing
else, yet that alone makes git read and hash every file of the workspace at capture time: on 20,000
files, about 0.4 s. Once the chown is done and before the run starts, `restamp_index` writes the new
ctime, uid and gid into the private index, for exactly the entries whose other stat data (mtime, size,
inode, device, type) still match: what a chown changes, and nothing a run could have done, since the run
has not started. Any other entry is left as it was, and git compares its content as before; so is an
entry git counts as racily clean (an mtime no older than the index's): once the index is rewritten, git
could no longer tell, and a same-size change made in the same clock tick would go unseen.

Only index versions 2 and 3 (what `read-tree` writes) are handled; another version, an index git marked
racily clean (size 0) or anything unexpected leaves the index untouched: slower, never wrong.
"""

from __future__ import annotations

import hashlib
import os
import stat
import struct
from pathlib import Path

_HEADER = struct.Struct(">4sII")
_STAT = struct.Struct(">10I")  # ctime s, ns; mtime s, ns; dev; ino; mode; uid; gid; size
_FLAGS = struct.Struct(">H")
_ENTRY_FIXED = _STAT.size + 20 + _FLAGS.size  # stat data, object id, flags
_NAME_MASK = 0x0FFF
_EXTENDED = 0x4000
_CHECKSUM = 20
_MASK32 = 0xFFFFFFFF
_SUPPORTED_VERSIONS = {2, 3}
_RESTAMPED_TYPES = {stat.S_IFREG, stat.S_IFLNK}


def restamp_index(index_path: Path, workdir: Path) -> int:
    """Take the ctime, uid and gid of `workdir`'s files into the index at `index_path` where only those
    changed; how many entries were re-stamped (0: the index was left as it was)."""
    data = bytearray(index_path.read_bytes())
    if not _is_plain_index(data):
        return 0
    written_ns = os.stat(index_path).st_mtime_ns
    prefix = os.fsencode(workdir) + b"/"
    restamped = 0
    for offset, name in _entries(data):
        if _restamp_entry(data, offset, prefix + name, written_ns):
            restamped += 1
    if restamped:
        data[-_CHECKSUM:] = hashlib.sha1(data[:-_CHECKSUM], usedforsecurity=False).digest()
        _replace(index_path, bytes(data))
    return restamped


def _is_plain_index(data: bytearray) -> bool:
    if len(data) < _HEADER.size + _CHECKSUM:
        return False
    signature, version, _ = _HEADER.unpack_from(data)
    if signature != b"DIRC" or version not in _SUPPORTED_VERSIONS:
        return False
    return hashlib.sha1(data[:-_CHECKSUM], usedforsecurity=False).digest() == data[-_CHECKSUM:]


def _entries(data: bytearray) -> list[tuple[int, bytes]]:
    """(offset, path) of every entry; raises nothing: a malformed index yields what parsed before it."""
    _, _, count = _HEADER.unpack_from(data)
    offset, end = _HEADER.size, len(data) - _CHECKSUM
    found: list[tuple[int, bytes]] = []
    for _ in range(count):
        if offset + _ENTRY_FIXED > end:
            return []
        (flags,) = _FLAGS.unpack_from(data, offset + _STAT.size + 20)
        name_start = offset + _ENTRY_FIXED + (2 if flags & _EXTENDED else 0)
        name_end = data.find(b"\0", name_start, end)
        if name_end < 0:
            return []
        found.append((offset, bytes(data[name_start:name_end])))
        # Entries are padded with 1-8 NULs to a multiple of 8 bytes.
        offset += (name_end - offset + 8) & ~7
    return found


def _restamp_entry(data: bytearray, offset: int, path: bytes, index_written_ns: int) -> bool:
    old = _STAT.unpack_from(data, offset)
    if old[2] * 1_000_000_000 + old[3] >= index_written_ns:
        # "Racily clean": written no earlier than the index, so a change in the same clock tick would
        # not show in its stat data; git compares its content, and so it stays.
        return False
    try:
        now = os.lstat(path)
    except OSError:
        return False
    if not _only_owner_changed(old, now):
        return False
    ctime_s, ctime_ns = divmod(now.st_ctime_ns, 1_000_000_000)
    _STAT.pack_into(
        data,
        offset,
        ctime_s & _MASK32,
        ctime_ns,
        *old[2:7],
        now.st_uid & _MASK32,
        now.st_gid & _MASK32,
        old[9],
    )
    return True


def _only_owner_changed(old: tuple[int, ...], now: os.stat_result) -> bool:
    """True when the entry's mtime, device, inode, type and size still match the file (git keeps the low
    32 bits of each); a zero size in the index means git wants the content compared, so it stays."""
    if old[9] == 0 or stat.S_IFMT(now.st_mode) not in _RESTAMPED_TYPES:
        return False
    mtime_s, mtime_ns = divmod(now.st_mtime_ns, 1_000_000_000)
    kept = (mtime_s & _MASK32, mtime_ns, now.st_dev & _MASK32, now.st_ino & _MASK32)
    return (
        old[2:6] == kept
        and stat.S_IFMT(old[6]) == stat.S_IFMT(now.st_mode)
        and old[9] == now.st_size & _MASK32
    )


def _replace(index_path: Path, content: bytes) -> None:
    temporary = index_path.with_name(f"{index_path.name}.restamp")
    temporary.write_bytes(content)
    os.replace(temporary, index_path)
