"""A run's outputs directory: files an agent hands back, kept as artifacts named `outputs/<path>`.

Every run gets `.outpost/outputs/` inside its workspace (so it counts against the workspace's disk cap),
announced to the run as `OUTPOST_OUTPUTS_DIR`. Before the run it is made an empty directory (a persistent
workspace's earlier outputs are not reported again); captured changes leave it out (`exclude_outputs`).
After the run, every process gone, each regular file under it becomes an artifact.

The run owned the directory and may have planted anything in it, so nothing is followed at any level: the
workspace, `.outpost` and `outputs` are opened with O_NOFOLLOW|O_DIRECTORY, the walk (`os.fwalk`, which
opens each folder relative to its parent and checks it is the one it listed) never enters a symlink, and
each file is opened relative to its folder with O_NOFOLLOW|O_NONBLOCK (a FIFO cannot block) and read only
when `fstat` says it is the regular file that was listed. Symlinks, FIFOs, sockets, devices, names that
are not UTF-8 or that `join_key` refuses, and files past the caps (`OutputLimits`) are left out, each
with a warning. Files are streamed, never read whole into memory.
"""

from __future__ import annotations

import mimetypes
import os
import shutil
import stat
from collections.abc import AsyncGenerator, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from outpost.errors import InvalidInput, SandboxError
from outpost.services.retention_settings import RetentionSettings
from outpost.storage.base import DEFAULT_CONTENT_TYPE, validate_content_type
from outpost.storage.blocking import run_blocking
from outpost.storage.keys import join_key
from outpost.workspaces.checkout import OUTPUTS_DIR
from outpost.workspaces.raw_diff import decode_name, display_name

OUTPUTS_ENV = "OUTPOST_OUTPUTS_DIR"
NAME_PREFIX = "outputs/"
MAX_NAME_CHARS = 255
"""The longest artifact name the `artifacts` table holds."""
MAX_WARNINGS = 20
_PARTS = tuple(OUTPUTS_DIR.split("/"))
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_CHUNK = 1024 * 1024
_SHOWN_CHARS = 160
_Walk = Generator[tuple[bytes, list[bytes], list[bytes], int], None, None]


@dataclass(frozen=True, slots=True)
class OutputLimits:
    """What of a run's outputs is kept (see `RetentionSettings.outputs_*`)."""

    max_files: int = 100
    max_file_bytes: int = 100 * 1024**2
    max_total_bytes: int = 500 * 1024**2

    @classmethod
    def from_settings(cls, settings: RetentionSettings) -> OutputLimits:
        return cls(
            settings.outputs_max_files, settings.outputs_max_file_bytes, settings.outputs_max_total_bytes
        )


@dataclass(frozen=True, slots=True)
class OutputFile:
    """A file to keep: its artifact name, its path under the outputs directory, what it was when listed."""

    name: str
    parts: tuple[bytes, ...]
    size_bytes: int
    content_type: str
    identity: tuple[int, int]
    """`(st_dev, st_ino)`: the file read must be the file listed."""


@dataclass(slots=True)
class OutputsListing:
    files: list[OutputFile] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    """What was left out, and why: the first `MAX_WARNINGS`."""
    more_warnings: int = 0
    """How many more entries were left out."""


def reset_outputs_dir(workdir: Path) -> None:
    """Make `.outpost/outputs` in `workdir` an empty directory, before a run. Whatever was there that is
    not a directory (a symlink an earlier run planted, a file) is removed, never followed; an existing
    `.outpost` directory keeps its other entries. Raises SandboxError."""
    try:
        parent = os.open(workdir, _DIR_FLAGS)
        try:
            for name in _PARTS[:-1]:
                parent = _swap(parent, _fresh_dir(parent, name, keep=True))
            os.close(_fresh_dir(parent, _PARTS[-1], keep=False))
        finally:
            os.close(parent)
    except OSError as exc:
        raise SandboxError(f"cannot make the run's outputs directory: {exc.strerror or exc}") from exc


def _fresh_dir(parent: int, name: str, *, keep: bool) -> int:
    """The directory `name` in `parent`, opened; made anew unless `keep` and it is a real directory."""
    try:
        found = os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        found = None
    if found is not None and stat.S_ISDIR(found.st_mode):
        if not keep:
            shutil.rmtree(name, dir_fd=parent)  # fd-based: it never leaves the directory through a link
            found = None
    elif found is not None:
        os.unlink(name, dir_fd=parent)
        found = None
    if found is None:
        os.mkdir(name, 0o755, dir_fd=parent)
    return os.open(name, _DIR_FLAGS, dir_fd=parent)


def _swap(old: int, new: int) -> int:
    os.close(old)
    return new


class RunOutputs:
    """A finished run's outputs directory, opened without following links. `close()` when done."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    @classmethod
    def open(cls, workdir: Path) -> RunOutputs | None:
        """None when the run removed the directory. Raises InvalidInput when something else (a symlink,
        a file) stands in its place or in `.outpost`'s: nothing is read then."""
        try:
            return cls(_open_dirs(os.open(workdir, _DIR_FLAGS), [part.encode() for part in _PARTS]))
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise InvalidInput(
                f"{OUTPUTS_DIR} is not a directory (a symlink or another file was put in its place, or in "
                f"`.outpost`'s): no outputs were kept ({exc.strerror or exc})"
            ) from None

    def close(self) -> None:
        os.close(self._fd)

    def listing(self, limits: OutputLimits, key_prefix: str) -> OutputsListing:
        """The files to keep, in name order, and a warning for each entry left out. `key_prefix` is
        where their objects go: a name whose key `join_key` refuses is left out here. Blocking: call it
        in a thread."""
        picker = _Picker(limits, key_prefix)
        found = os.fwalk(b".", dir_fd=self._fd, follow_symlinks=False, onerror=picker.unreadable)
        walk = cast(_Walk, found)  # a generator: closing it early closes the folders it holds open
        try:
            for top, subdirs, names, top_fd in walk:
                parts = tuple(top.split(b"/")[1:])
                subdirs[:] = picker.folders(parts, subdirs, top_fd)
                if not all(picker.consider((*parts, name), top_fd) for name in sorted(names)):
                    break
        finally:
            walk.close()
        return OutputsListing(picker.files, picker.warnings, picker.more_warnings)

    async def chunks(self, file: OutputFile) -> AsyncGenerator[bytes, None]:
        """The file's bytes (as many as were listed), opened anew relative to the outputs directory.
        Raises InvalidInput when it is no longer the file listed or cannot be read."""
        fd = await run_blocking(self._open_file, file)
        try:
            left = file.size_bytes
            while left > 0:
                chunk = await run_blocking(os.read, fd, min(_CHUNK, left))
                if not chunk:
                    raise InvalidInput("it became shorter while it was read")
                left -= len(chunk)
                yield chunk
        finally:
            os.close(fd)

    def _open_file(self, file: OutputFile) -> int:
        try:
            folder = _open_dirs(os.dup(self._fd), list(file.parts[:-1]))
            try:
                fd = os.open(file.parts[-1], _FILE_FLAGS, dir_fd=folder)
            finally:
                os.close(folder)
        except OSError as exc:
            raise InvalidInput(f"it cannot be read: {exc.strerror or exc}") from None
        found = os.fstat(fd)
        if not stat.S_ISREG(found.st_mode) or (found.st_dev, found.st_ino) != file.identity:
            os.close(fd)
            raise InvalidInput("it was replaced after it was listed")
        return fd


def _open_dirs(start: int, parts: list[bytes]) -> int:
    """Open `parts` one below the other from the directory `start` (whose descriptor this takes over),
    following no link; the last one's descriptor."""
    fd = start
    try:
        for part in parts:
            fd = _swap(fd, os.open(part, _DIR_FLAGS, dir_fd=fd))
    except BaseException:
        os.close(fd)
        raise
    return fd


class _Picker:
    """Decides, entry by entry, what of the outputs directory is kept."""

    def __init__(self, limits: OutputLimits, key_prefix: str) -> None:
        self._limits = limits
        self._key_prefix = key_prefix
        self._total_bytes = 0
        self.files: list[OutputFile] = []
        self.warnings: list[str] = []
        self.more_warnings = 0

    def unreadable(self, error: OSError) -> None:
        self._warn(f"{NAME_PREFIX}: a folder could not be read ({error.strerror or error})")

    def folders(self, parts: tuple[bytes, ...], names: list[bytes], top_fd: int) -> list[bytes]:
        """The subfolders of `parts` to walk into: real directories (a symlink to one is left out) in
        whose names a kept file could still fit."""
        kept = []
        for name in sorted(names):
            path = (*parts, name)
            try:
                mode = os.stat(name, dir_fd=top_fd, follow_symlinks=False).st_mode
            except OSError as exc:
                self._leave_out(path, f"cannot be read ({exc.strerror or exc})")
                continue
            if not stat.S_ISDIR(mode):
                self._leave_out(path, f"{_kind(mode)}, not followed")
            elif len(NAME_PREFIX) + len(b"/".join(path)) + 2 > MAX_NAME_CHARS:
                self._leave_out(path, f"a folder whose files' names would be longer than {MAX_NAME_CHARS}")
            else:
                kept.append(name)
        return kept

    def consider(self, path: tuple[bytes, ...], top_fd: int) -> bool:
        """Keep the file at `path` if it may be kept; False once no more files may be."""
        try:
            found = os.stat(path[-1], dir_fd=top_fd, follow_symlinks=False)
        except OSError as exc:
            return self._leave_out(path, f"cannot be read ({exc.strerror or exc})")
        why = self._refusal(found)
        if why is not None:
            return self._leave_out(path, why)
        name = self._artifact_name(path)
        if name is None:
            return True
        if len(self.files) >= self._limits.max_files:
            # First: the one warning that says the listing is incomplete must not be cut off.
            self.warnings.insert(
                0, f"{NAME_PREFIX}: over {self._limits.max_files} files; the rest were left out"
            )
            return False
        self._total_bytes += found.st_size
        self.files.append(OutputFile(name, path, found.st_size, content_type_of(name),
                                     (found.st_dev, found.st_ino)))  # fmt: skip
        return True

    def _refusal(self, found: os.stat_result) -> str | None:
        """Why a file cannot be kept whatever its name, if it cannot."""
        limits = self._limits
        if not stat.S_ISREG(found.st_mode):
            return f"{_kind(found.st_mode)}, not a regular file"
        if found.st_size > limits.max_file_bytes:
            return f"larger than the {limits.max_file_bytes} bytes a file may have"
        if self._total_bytes + found.st_size > limits.max_total_bytes:
            return f"past the {limits.max_total_bytes} bytes all files together may take"
        return None

    def _artifact_name(self, path: tuple[bytes, ...]) -> str | None:
        try:
            name = NAME_PREFIX + b"/".join(path).decode()
        except UnicodeDecodeError:
            self._leave_out(path, "a name that is not UTF-8")
            return None
        if len(name) > MAX_NAME_CHARS:
            self._leave_out(path, f"a name longer than {MAX_NAME_CHARS} characters")
            return None
        try:
            join_key(self._key_prefix, name)
        except InvalidInput as exc:
            self._leave_out(path, f"a name that is not allowed ({exc.detail})")
            return None
        return name

    def _leave_out(self, path: tuple[bytes, ...], why: str) -> bool:
        self._warn(f"{shown_name(path)}: {why}; left out")
        return True

    def _warn(self, warning: str) -> None:
        """Only the first warnings are kept: a run may leave out thousands of entries."""
        if len(self.warnings) < MAX_WARNINGS:
            self.warnings.append(warning)
        else:
            self.more_warnings += 1


def content_type_of(name: str) -> str:
    """The type its extension suggests; `application/octet-stream` when none does, or when the file is
    compressed (`.tar.gz`: the type would describe what is inside)."""
    guessed, encoding = mimetypes.guess_type(name, strict=False)
    if guessed is None or encoding is not None:
        return DEFAULT_CONTENT_TYPE
    try:
        return validate_content_type(guessed)
    except InvalidInput:
        return DEFAULT_CONTENT_TYPE


def shown_name(path: tuple[bytes, ...]) -> str:
    """`outputs/<path>`, printable and cut short (it goes into an event)."""
    shown = display_name(decode_name(b"/".join(path)))
    cut = f"{shown[:_SHOWN_CHARS]}..." if len(shown) > _SHOWN_CHARS else shown
    return NAME_PREFIX + cut


def capped_warnings(warnings: list[str], more: int = 0) -> list[str]:
    """The first `MAX_WARNINGS` of `warnings`, and how many more there were (`more` of them unlisted)."""
    more += max(0, len(warnings) - MAX_WARNINGS)
    return [*warnings[:MAX_WARNINGS], *([f"... and {more} more"] if more else [])]


def _kind(mode: int) -> str:
    kinds = ((stat.S_ISLNK, "a symlink"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
             (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device"))  # fmt: skip
    return next((text for test, text in kinds if test(mode)), "a special file")
