"""Object keys: `/`-separated relative paths such as `tenants/<tenant>/dispatches/<id>/diff.patch`.

A valid key is 1 to `MAX_KEY_BYTES` bytes of UTF-8, made of segments of 1 to `MAX_SEGMENT_BYTES` bytes,
none of them `.`, `..` or other dots only, with no control characters, line or paragraph separators,
bidirectional-text controls or backslashes. Keys are compared byte for byte (no Unicode normalization).
Names that come from an agent are untrusted: `join_key` is the only way to turn one into a key.
"""

from __future__ import annotations

import unicodedata

from outpost.errors import InvalidInput

MAX_KEY_BYTES = 768
"""Leaves room for an S3 backend's own prefix inside S3's limit of 1024 bytes per key."""
MAX_SEGMENT_BYTES = 255
"""The longest file name most filesystems allow."""
MAX_STORE_PREFIX_BYTES = 200
"""The longest prefix an operator may give a shared store (S3): with `objects/` and the longest key, it
stays within S3's 1024 bytes."""
# Categories that never belong in a name: controls (C0, DEL, C1), surrogates, line/paragraph separators.
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})
# Bidirectional controls make a name display as something it is not (e.g. `report\u202egnp.exe`).
_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
# An untrusted name this long is refused before it is looked at character by character.
_MAX_RAW_NAME_CHARS = 4 * MAX_KEY_BYTES


def validate_key(key: str) -> str:
    """Return `key` unchanged when it is a valid key (see the module docstring); raise InvalidInput."""
    if not key:
        raise InvalidInput("the key is empty")
    _check_characters(key)
    if len(key.encode()) > MAX_KEY_BYTES:
        raise InvalidInput(f"the key is longer than {MAX_KEY_BYTES} bytes")
    for segment in key.split("/"):
        _check_segment(segment)
    return key


def is_valid_key(key: str) -> bool:
    """Whether `validate_key` would accept `key` (for names found in storage, e.g. a file whose name is
    not UTF-8, which no put could have made)."""
    try:
        validate_key(key)
    except InvalidInput:
        return False
    return True


def validate_prefix(prefix: str) -> str:
    """Return `prefix` unchanged when it can start a valid key: empty, or the first characters of one
    (it may end in `/` or in the middle of a segment). Raise InvalidInput otherwise."""
    if not prefix:
        return prefix
    _check_characters(prefix)
    if len(prefix.encode()) > MAX_KEY_BYTES:
        raise InvalidInput(f"the key prefix is longer than {MAX_KEY_BYTES} bytes")
    *folders, _partial = prefix.split("/")
    for segment in folders:
        _check_segment(segment)
    return prefix


def join_key(prefix: str, name: str | bytes) -> str:
    """The key for the untrusted relative path `name` under the trusted `prefix`, e.g.
    `join_key("tenants/t1/dispatches/d1/artifacts", "out/report.md")`.

    The result is always strictly under `prefix` (`prefix/...`). `.` and empty segments are dropped
    (`./out//report.md` is `out/report.md`); everything else that is not a valid key segment raises
    InvalidInput: `..`, an absolute path, a backslash, NUL and other control characters, bytes that
    are not UTF-8 (also as surrogate escapes), and names or segments over the length limits.
    `prefix` may end in `/`; it is validated too.
    """
    base = validate_key(prefix.removesuffix("/"))
    relative = _normalize_name(name)
    return validate_key(f"{base}/{relative}")


def _normalize_name(name: str | bytes) -> str:
    if len(name) > _MAX_RAW_NAME_CHARS:
        raise InvalidInput(f"the name is longer than {MAX_KEY_BYTES} bytes")
    if isinstance(name, bytes):
        try:
            name = name.decode()
        except UnicodeDecodeError:
            raise InvalidInput("the name is not valid UTF-8") from None
    if name.startswith("/"):
        raise InvalidInput("the name must be a relative path, not an absolute one")
    _check_characters(name)
    kept = [segment for segment in name.split("/") if segment not in ("", ".")]
    if not kept:
        raise InvalidInput("the name is empty (or only `.` and `/`)")
    return "/".join(kept)


def _check_characters(text: str) -> None:
    if "\\" in text:
        raise InvalidInput("a backslash is not allowed in names; separate folders with `/`")
    for char in text:
        category = unicodedata.category(char)
        if category == "Cs":
            raise InvalidInput("the name is not valid UTF-8 (it holds a lone surrogate)")
        if category in _FORBIDDEN_CATEGORIES or char in _BIDI_CONTROLS:
            raise InvalidInput(f"the character U+{ord(char):04X} is not allowed in names")


def _check_segment(segment: str) -> None:
    if not segment:
        raise InvalidInput("empty path segments are not allowed (no leading, trailing or double `/`)")
    if segment.strip(".") == "":
        raise InvalidInput(f"the path segment {segment!r} is not allowed (dots only)")
    if len(segment.encode()) > MAX_SEGMENT_BYTES:
        raise InvalidInput(f"a path segment is longer than {MAX_SEGMENT_BYTES} bytes")


def validate_store_prefix(prefix: str) -> str:
    """An operator's prefix for everything a store keeps (e.g. `outpost` in a shared bucket): "" or a
    valid key ending in `/` (added when missing). Raises InvalidInput when unusable."""
    if not prefix:
        return ""
    prefix = prefix if prefix.endswith("/") else f"{prefix}/"
    if len(prefix.encode()) > MAX_STORE_PREFIX_BYTES:
        raise InvalidInput(f"the store prefix is longer than {MAX_STORE_PREFIX_BYTES} bytes", field="prefix")
    validate_key(prefix.removesuffix("/"))
    return prefix
