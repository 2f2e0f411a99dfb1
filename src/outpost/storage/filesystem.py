"""The filesystem object store: one file per object under a root folder (the default backend).

Layout under the root:

    objects/<key>     the object: its content, then a trailer with its info (below)
    uploads/<random>  puts in progress; a crashed server's leftovers are swept after a day

The info (content type, SHA-256, size, time) is a trailer inside the object's own file rather than a
sidecar, so that one `rename` publishes content and info together: a reader can never pair new content
with old info. The trailer is `JSON info | u32 big-endian length of the JSON | 8-byte magic`; `read`
never returns it. A put writes into `uploads/`, fsyncs, then renames into place (same filesystem, so
the rename is atomic). Keys map to paths segment by segment, walked by `outpost.storage.folders` without
ever following a symlink.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import stat
import struct
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import ParamSpec, TypeVar

from outpost.errors import Conflict, InvalidInput, OutpostError, Unavailable
from outpost.storage import folders
from outpost.storage.base import (
    DEFAULT_CONTENT_TYPE,
    ObjectInfo,
    ObjectNotFound,
    validate_content_type,
    validate_range,
)
from outpost.storage.blocking import run_blocking
from outpost.storage.keys import is_valid_key, validate_key, validate_prefix
from outpost.storage.streams import MIB, rechunk

P = ParamSpec("P")
T = TypeVar("T")
log = logging.getLogger(__name__)

CHUNK_BYTES = MIB
STALE_UPLOAD_S = 24 * 3600
_MAGIC = b"OPOBJv1\n"
_FOOTER = struct.Struct(">I8s")
_MAX_INFO_BYTES = 4096
# O_NONBLOCK: opening a FIFO planted in the store must not hang; it has no effect on regular files.
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_INSTALL_ATTEMPTS = 3


class _Damaged(Exception):
    """A file in `objects/` without a valid trailer (not written by this store, or truncated)."""


class FilesystemObjectStore:
    """An `ObjectStore` in the folder `root` (created on first put; private to the server's user)."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._swept = False

    async def put(
        self, key: str, data: AsyncIterable[bytes] | bytes, content_type: str = DEFAULT_CONTENT_TYPE
    ) -> ObjectInfo:
        validate_key(key)
        validate_content_type(content_type)
        upload = await _call(_Upload.begin, self._root, sweep=not self._swept)
        self._swept = True
        try:
            async with contextlib.aclosing(rechunk(data, CHUNK_BYTES)) as chunks:
                async for chunk in chunks:
                    await _call(upload.write, chunk)
            return await _call(upload.finish, key, content_type)
        finally:
            upload.discard()

    async def stat(self, key: str) -> ObjectInfo:
        validate_key(key)
        fd, info = await _call(_open_object, self._root, key)
        os.close(fd)
        return info

    async def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        validate_key(key)
        validate_range(start, end)
        fd, info = await _call(_open_object, self._root, key)
        try:
            stop = info.size_bytes if end is None else min(end, info.size_bytes)
            while start < stop:
                chunk = await _call(os.pread, fd, min(CHUNK_BYTES, stop - start), start)
                if not chunk:
                    raise Unavailable(f"the object under {key!r} was truncated while it was read")
                start += len(chunk)
                yield chunk
        finally:
            os.close(fd)

    async def delete(self, key: str) -> None:
        validate_key(key)
        await _call(_delete_object, self._root, key)

    async def list(self, prefix: str) -> list[ObjectInfo]:
        validate_prefix(prefix)
        return await _call(_list_objects, self._root, prefix)

    async def delete_prefix(self, prefix: str) -> int:
        if not validate_prefix(prefix):
            raise InvalidInput("refusing to delete every object: the prefix is empty")
        return await _call(_delete_prefix, self._root, prefix)

    async def total_bytes(self, prefix: str) -> int:
        return sum(info.size_bytes for info in await self.list(prefix))

    async def close(self) -> None:
        """Nothing to release: every call opens and closes its own descriptors."""


async def _call(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """`fn` in a thread, with operating-system failures translated to Unavailable."""
    try:
        return await run_blocking(fn, *args, **kwargs)
    except OutpostError:
        raise
    except OSError as exc:
        raise Unavailable(f"the filesystem object store failed: {exc.strerror or exc}") from exc


class _Upload:
    """One put's temporary file in `uploads/`; blocking methods, called in worker threads."""

    def __init__(self, root: Path, uploads_fd: int, name: str, fd: int) -> None:
        self._root, self._uploads_fd, self._name, self._fd = root, uploads_fd, name, fd
        self._sha256 = hashlib.sha256()
        self._size_bytes = 0

    @classmethod
    def begin(cls, root: Path, sweep: bool) -> _Upload:
        uploads_fd = folders.open_area(root, "uploads", create=True)
        if sweep:
            _sweep_stale_uploads(uploads_fd)
        name = f"{uuid.uuid4().hex}.part"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(name, flags, 0o600, dir_fd=uploads_fd)
        except BaseException:
            os.close(uploads_fd)
            raise
        return cls(root, uploads_fd, name, fd)

    def write(self, chunk: bytes) -> None:
        self._sha256.update(chunk)
        self._size_bytes += len(chunk)
        _write_all(self._fd, chunk)

    def finish(self, key: str, content_type: str) -> ObjectInfo:
        """Append the trailer, make the file durable and rename it into place under `key`."""
        info = ObjectInfo(key, self._size_bytes, content_type, self._sha256.hexdigest(), datetime.now(UTC))
        _write_all(self._fd, _encode_trailer(info))
        os.fsync(self._fd)
        for attempt in range(1, _INSTALL_ATTEMPTS + 1):
            try:
                self._install(key)
                break
            except FileNotFoundError:
                # A concurrent delete pruned the emptied folder between our walk and the rename.
                if attempt == _INSTALL_ATTEMPTS:
                    raise
        return info

    def _install(self, key: str) -> None:
        *parents, name = key.split("/")
        objects_fd = folders.open_area(self._root, "objects", create=True)
        try:
            folder_fd = folders.open_folder(objects_fd, parents, create=True)
        except OSError as exc:
            if exc.errno in folders.NOT_A_FOLDER:
                raise Conflict(f"cannot store {key!r}: one of its folders is an object or a link") from None
            raise
        finally:
            os.close(objects_fd)
        try:
            os.replace(self._name, name, src_dir_fd=self._uploads_fd, dst_dir_fd=folder_fd)
            os.fsync(folder_fd)
        except IsADirectoryError:
            raise Conflict(f"cannot store {key!r}: keys under it exist (it is a folder)") from None
        finally:
            os.close(folder_fd)

    def discard(self) -> None:
        """Close and remove the temporary file (gone already when it was renamed into place)."""
        with contextlib.suppress(OSError):
            os.unlink(self._name, dir_fd=self._uploads_fd)
        for fd in (self._fd, self._uploads_fd):
            with contextlib.suppress(OSError):
                os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    with memoryview(data) as view:
        written = 0
        while written < len(view):
            written += os.write(fd, view[written:])


def _sweep_stale_uploads(uploads_fd: int) -> None:
    """Remove temporary files that a crashed server left behind (a live put never takes a day)."""
    cutoff = time.time() - STALE_UPLOAD_S
    with os.scandir(uploads_fd) as scan:
        names = [entry.name for entry in scan]
    for name in names:
        with contextlib.suppress(OSError):  # gone meanwhile: another process's put just ended
            if os.stat(name, dir_fd=uploads_fd, follow_symlinks=False).st_mtime < cutoff:
                os.unlink(name, dir_fd=uploads_fd)


def _encode_trailer(info: ObjectInfo) -> bytes:
    fields = {
        "content_type": info.content_type,
        "sha256": info.sha256,
        "size_bytes": info.size_bytes,
        "modified_at": info.modified_at.isoformat(),
    }
    encoded = json.dumps(fields, separators=(",", ":")).encode()
    return encoded + _FOOTER.pack(len(encoded), _MAGIC)


def _decode_trailer(fd: int, key: str) -> ObjectInfo:
    file_size = os.fstat(fd).st_size
    if file_size < _FOOTER.size:
        raise _Damaged("shorter than a trailer")
    info_size, magic = _FOOTER.unpack(os.pread(fd, _FOOTER.size, file_size - _FOOTER.size))
    size_bytes = file_size - _FOOTER.size - info_size
    if magic != _MAGIC or info_size > _MAX_INFO_BYTES or size_bytes < 0:
        raise _Damaged("no valid trailer")
    try:
        fields = json.loads(os.pread(fd, info_size, size_bytes))
        if fields["size_bytes"] != size_bytes:
            raise _Damaged("the recorded size does not match")
        modified_at = datetime.fromisoformat(fields["modified_at"])
        return ObjectInfo(key, size_bytes, str(fields["content_type"]), str(fields["sha256"]), modified_at)
    except (ValueError, KeyError, TypeError) as exc:
        raise _Damaged(f"unreadable trailer: {exc}") from None


@contextlib.contextmanager
def _existing_folder(root: Path, segments: list[str], prune: bool = False) -> Iterator[int | None]:
    """A descriptor of the folder `objects/<segments>`, or None when it is missing or something other
    than a folder stands in its way. With `prune`, the folder and its parents are removed afterwards
    if they are left empty."""
    try:
        objects_fd = folders.open_area(root, "objects", create=False)
    except FileNotFoundError:
        objects_fd = None
    if objects_fd is None:
        yield None
        return
    try:
        folder_fd = folders.open_existing(objects_fd, segments)
        if folder_fd is None:
            yield None
            return
        try:
            yield folder_fd
        finally:
            os.close(folder_fd)
        if prune:
            folders.prune_folders(objects_fd, segments)
    finally:
        os.close(objects_fd)


def _open_object(root: Path, key: str) -> tuple[int, ObjectInfo]:
    """A descriptor of the object's file (the caller closes it) and its info; ObjectNotFound when the
    key holds no regular file (missing, a folder, a symlink, a FIFO)."""
    *parents, name = key.split("/")
    with _existing_folder(root, parents) as folder_fd:
        if folder_fd is None:
            raise ObjectNotFound(key)
        try:
            fd = os.open(name, _FILE_FLAGS, dir_fd=folder_fd)
        except OSError as exc:
            if isinstance(exc, FileNotFoundError) or exc.errno in folders.NOT_A_FOLDER:
                raise ObjectNotFound(key) from None
            raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ObjectNotFound(key)
        return fd, _decode_trailer(fd, key)
    except _Damaged as exc:
        os.close(fd)
        raise Unavailable(
            f"the object under {key!r} is damaged ({exc}); delete it and store it again"
        ) from None
    except BaseException:
        os.close(fd)
        raise


def _delete_object(root: Path, key: str) -> None:
    *parents, name = key.split("/")
    with _existing_folder(root, parents, prune=True) as folder_fd:
        if folder_fd is not None:
            with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                os.unlink(name, dir_fd=folder_fd)


def _matching_entries(root: Path, prefix: str, prune: bool) -> Iterator[tuple[int, str, str]]:
    """`(folder descriptor, name, key)` of the entries whose keys start with `prefix` and are valid."""
    *parents, partial = prefix.split("/")
    key_prefix = "".join(f"{parent}/" for parent in parents)
    with _existing_folder(root, parents, prune) as folder_fd:
        if folder_fd is None:
            return
        for folder, name, key in folders.walk_entries(folder_fd, key_prefix, partial, prune):
            if is_valid_key(key):
                yield folder, name, key


def _list_objects(root: Path, prefix: str) -> list[ObjectInfo]:
    found = []
    for folder_fd, name, key in _matching_entries(root, prefix, prune=False):
        try:
            fd = os.open(name, _FILE_FLAGS, dir_fd=folder_fd)
        except OSError:
            continue  # deleted since the scan, or a symlink
        try:
            if stat.S_ISREG(os.fstat(fd).st_mode):
                found.append(_decode_trailer(fd, key))
        except _Damaged as exc:
            log.warning("skipping the damaged object file under %r: %s", key, exc)
        finally:
            os.close(fd)
    return sorted(found, key=lambda info: info.key)


def _delete_prefix(root: Path, prefix: str) -> int:
    deleted = 0
    for folder_fd, name, _key in _matching_entries(root, prefix, prune=True):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=folder_fd)
            deleted += 1
    return deleted
