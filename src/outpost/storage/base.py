"""The object store seam: where artifacts (diffs, logs, files a run produced) are kept.

Every backend passes the contract suite in tests/contract/test_object_store_contract.py. Keys are
checked with `outpost.storage.keys` (names that come from an agent go through `join_key` first).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from outpost.errors import InvalidInput, NotFound

DEFAULT_CONTENT_TYPE = "application/octet-stream"
MAX_CONTENT_TYPE_CHARS = 255
# Printable ASCII only: the content type travels in HTTP headers and in S3 metadata.
_CONTENT_TYPE = re.compile(r"[\x21-\x7e][\x20-\x7e]*")


class ObjectNotFound(NotFound):
    """No object is stored under the key (HTTP 404 through `NotFound`)."""

    def __init__(self, key: str) -> None:
        super().__init__(f"no object is stored under the key {key!r}")
        self.key = key


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What the store knows about one object, as of the put that wrote its current content."""

    key: str
    size_bytes: int
    content_type: str
    sha256: str
    """Lower-case hex SHA-256 of the content, computed by the store while it was written."""
    modified_at: datetime
    """When the put that wrote the current content finished (UTC, timezone-aware)."""


class ObjectStore(Protocol):
    """Objects under `/`-separated keys (see `outpost.storage.keys`). Every method raises InvalidInput for
    a malformed key or argument before doing any I/O, and Unavailable when the backend cannot be reached
    or fails; messages never contain object content.

    Keys are opaque to the store: `a` and `a/b` are different objects, but a backend that keeps keys as
    file paths cannot hold both, so lay keys out so that no key is a folder of another.
    """

    async def put(
        self, key: str, data: AsyncIterable[bytes] | bytes, content_type: str = DEFAULT_CONTENT_TYPE
    ) -> ObjectInfo:
        """Store `data` under `key`, replacing any object there, and return its info.

        Atomic: readers see the old object (or none) until the new one is complete, never part of it.
        When `data` raises or the call is cancelled, nothing is left behind (no object, no temporary
        file, no incomplete upload) and the error propagates unchanged; only a cancellation that
        arrives during the final step (once `data` is exhausted) may find the object stored. `data`
        is consumed once, in order, and never held in memory whole. Raises InvalidInput for a bad key
        or content type (printable ASCII, at most 255 characters), Conflict when the key cannot be
        stored because a folder or a foreign entry occupies its place (filesystem backend),
        PayloadTooLarge past the backend's largest object, Unavailable when the backend fails.
        """

    async def stat(self, key: str) -> ObjectInfo:
        """The object's info. Raises ObjectNotFound when nothing is stored under `key`."""

    def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """The bytes `start` (included) to `end` (excluded; None: to the end) of the object, in chunks.

        Ranges behave like a Python slice of the content clamped to its size: `end` past the size
        stops at the size, and `start` at or past the size yields nothing. A negative `start` or
        `end`, or `end` before `start`, raises InvalidInput. Errors (InvalidInput, ObjectNotFound)
        surface when iteration starts, before any bytes. The range is read from one version of the
        object even if the key is overwritten meanwhile; a `stat` made before may describe another
        version if the key was overwritten in between. Close the iterator (`aclose`) when stopping
        early, so that its file or connection is released at once.
        """

    async def delete(self, key: str) -> None:
        """Remove the object. Idempotent: deleting a missing key does nothing."""

    async def list(self, prefix: str) -> list[ObjectInfo]:
        """Every object whose key starts with `prefix` (a plain string prefix, e.g. `a/b/` or `a/b/c`),
        sorted by key. Meant for one dispatch's or one tenant's objects, not the whole store."""

    async def delete_prefix(self, prefix: str) -> int:
        """Remove every object whose key starts with `prefix`; how many there were. `prefix` must not
        be empty (InvalidInput): emptying the whole store is never meant."""

    async def total_bytes(self, prefix: str) -> int:
        """The summed size of the objects whose keys start with `prefix` (for quotas)."""

    async def close(self) -> None:
        """Release connections. Idempotent; never raises."""


def validate_content_type(content_type: str) -> str:
    """Return `content_type` unchanged, or raise InvalidInput when it cannot travel in a header."""
    if len(content_type) > MAX_CONTENT_TYPE_CHARS or not _CONTENT_TYPE.fullmatch(content_type):
        raise InvalidInput(
            f"content type must be 1 to {MAX_CONTENT_TYPE_CHARS} printable ASCII characters",
            field="content_type",
        )
    return content_type


def validate_range(start: int, end: int | None) -> None:
    """Raise InvalidInput unless `start` and `end` describe a range as `ObjectStore.read` takes it."""
    if start < 0 or (end is not None and end < start):
        raise InvalidInput(f"invalid byte range {start}..{end}: need 0 <= start <= end")
