"""Changed files as `git diff --raw -z` lists them. Pure: no I/O.

Names are NUL-separated there, so any byte but NUL and `/` survives: newlines, invalid UTF-8. A path is
kept as a `str` decoded with `surrogateescape` (encoding it back the same way gives the exact bytes) and
shown through `display_name`, which escapes what is not printable.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

GITLINK_MODE = 0o160000
"""The mode of a nested repository's entry (a commit id, not files)."""


class ChangeKind(StrEnum):
    ADDED = "added"
    MODIFIED = "modified"
    DELETED = "deleted"
    RENAMED = "renamed"
    TYPE_CHANGED = "type_changed"


_KINDS = {"A": ChangeKind.ADDED, "M": ChangeKind.MODIFIED, "D": ChangeKind.DELETED, "R": ChangeKind.RENAMED,
          "T": ChangeKind.TYPE_CHANGED}  # fmt: skip


@dataclass(frozen=True, slots=True)
class ChangedFile:
    """One changed path. Modes are git's (0o100644, 0o100755, 0o120000 for a symlink; 0 when absent);
    a mode change alone is `modified`. `old_path` is set for renames."""

    kind: ChangeKind
    path: str
    old_mode: int
    new_mode: int
    old_path: str | None = None

    @property
    def path_bytes(self) -> bytes:
        return self.path.encode("utf-8", "surrogateescape")

    @property
    def display_path(self) -> str:
        return display_name(self.path)


def display_name(name: str) -> str:
    """`name` made printable and unambiguous: bytes that are not UTF-8 as `\\xNN`, control and other
    unprintable characters as Python escapes, backslashes doubled."""
    shown = []
    for char in name:
        code = ord(char)
        if 0xDC80 <= code <= 0xDCFF:  # a byte surrogateescape could not decode
            shown.append(f"\\x{code - 0xDC00:02x}")
        elif char == "\\":
            shown.append("\\\\")
        elif not char.isprintable():
            shown.append(char.encode("unicode_escape").decode("ascii"))
        else:
            shown.append(char)
    return "".join(shown)


def decode_name(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def parse_raw(output: bytes) -> list[ChangedFile]:
    """The entries of `git diff --raw -z --no-abbrev` output. Raises ValueError when it is malformed."""
    fields = output.split(b"\0")
    changes: list[ChangedFile] = []
    index = 0
    while index < len(fields) and fields[index]:
        old_mode, new_mode, letter = _header(fields[index])
        names = 2 if letter == "R" else 1
        paths = fields[index + 1 : index + 1 + names]
        if len(paths) < names or not all(paths):
            raise ValueError("git's raw diff ends in the middle of an entry")
        kind = _KINDS[letter]
        if names == 2:
            changes.append(
                ChangedFile(kind, decode_name(paths[1]), old_mode, new_mode, decode_name(paths[0]))
            )
        else:
            changes.append(ChangedFile(kind, decode_name(paths[0]), old_mode, new_mode))
        index += 1 + names
    return changes


def _header(field: bytes) -> tuple[int, int, str]:
    """`(old mode, new mode, status letter)` of `:100644 100644 <sha> <sha> M` (R has a score)."""
    parts = field.decode("ascii", "replace").removeprefix(":").split(" ")
    if len(parts) != 5 or not parts[4] or parts[4][0] not in _KINDS:
        raise ValueError(f"unexpected raw diff entry {field[:120]!r}")
    return int(parts[0], 8), int(parts[1], 8), parts[4][0]
