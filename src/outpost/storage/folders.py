"""Walking the filesystem store's folders through directory file descriptors, never following a symlink.

Every step opens one name relative to the folder before it with O_NOFOLLOW, so a symlink planted
anywhere below the store's root (even swapped in during a walk) is never followed out of it. All
functions block; the filesystem store calls them in worker threads.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
FOLDER_MODE = 0o700
# Errors that mean "something other than a folder of ours is in the way": a file or a symlink.
NOT_A_FOLDER = frozenset({errno.ENOTDIR, errno.ELOOP})


def open_area(root: Path, name: str, create: bool) -> int:
    """A descriptor of the folder `name` directly under `root` (the store's own `objects` or `uploads`).

    `root` itself is followed if it is a symlink: it is the operator's choice of location. Raises
    FileNotFoundError when it does not exist and `create` is false.
    """
    if create:
        root.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return open_folder(root_fd, [name], create)
    finally:
        os.close(root_fd)


def open_folder(top_fd: int, segments: Sequence[str], create: bool) -> int:
    """A new descriptor of the folder `segments` below `top_fd` (the caller closes it), creating missing
    folders when `create` is true. Raises FileNotFoundError for a missing folder, and OSError with an
    errno in NOT_A_FOLDER when a file or a symlink stands where a folder should be."""
    fd = os.dup(top_fd)
    try:
        for segment in segments:
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(segment, FOLDER_MODE, dir_fd=fd)
                    os.fsync(fd)  # a new folder's entry must survive a crash, like the object put in it
            child = os.open(segment, FOLDER_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_existing(top_fd: int, segments: Sequence[str]) -> int | None:
    """Like `open_folder` without creating, but None instead of an error when the folder is missing or
    a file or a symlink stands in its way."""
    try:
        return open_folder(top_fd, segments, create=False)
    except OSError as exc:
        if isinstance(exc, FileNotFoundError) or exc.errno in NOT_A_FOLDER:
            return None
        raise


def walk_entries(
    folder_fd: int, key_prefix: str, name_prefix: str, prune: bool
) -> Iterator[tuple[int, str, str]]:
    """`(folder descriptor, name, key)` of every entry that is not a folder, below `folder_fd`, whose
    top-level name starts with `name_prefix`; keys are `key_prefix` plus the path below `folder_fd`.

    The descriptor is valid until the next item. With `prune`, folders found empty once their
    entries have been handled (e.g. deleted by the consumer) are removed.
    """
    with os.scandir(folder_fd) as scan:
        entries = [entry for entry in scan if entry.name.startswith(name_prefix)]
    for entry in entries:
        key = key_prefix + entry.name
        if not entry.is_dir(follow_symlinks=False):
            yield folder_fd, entry.name, key
            continue
        try:
            child = os.open(entry.name, FOLDER_FLAGS, dir_fd=folder_fd)
        except OSError:
            continue  # removed, or swapped for a symlink, since the scan
        try:
            yield from walk_entries(child, key + "/", "", prune)
        finally:
            os.close(child)
        if prune:
            remove_if_empty(folder_fd, entry.name)


def prune_folders(top_fd: int, segments: Sequence[str]) -> None:
    """Remove the folder `segments` below `top_fd` and then each of its parents, as long as they are
    empty. Never raises: a folder in use by a concurrent put simply stays."""
    for depth in range(len(segments), 0, -1):
        parent = open_existing(top_fd, segments[: depth - 1])
        if parent is None:
            return
        try:
            if not remove_if_empty(parent, segments[depth - 1]):
                return
        finally:
            os.close(parent)


def remove_if_empty(parent_fd: int, name: str) -> bool:
    """Remove the empty folder `name`; False when it is not empty, gone, or not a folder."""
    try:
        os.rmdir(name, dir_fd=parent_fd)
    except OSError:
        return False
    return True
