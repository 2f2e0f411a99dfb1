"""The `Range` header of a download (RFC 9110 §14): one byte range, or the whole object.

Only single ranges are served; a request for several gets the whole object (200), which the RFC allows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_SINGLE = re.compile(r"bytes=([0-9]{0,19})-([0-9]{0,19})")


class RangeNotSatisfiable(Exception):
    """The range starts past the end of the object (HTTP 416)."""


@dataclass(frozen=True, slots=True)
class ByteRange:
    start: int
    end: int
    """Exclusive."""

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.end - 1}/{size}"


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The range to serve; None for the whole object (no header, several ranges, or a header that is
    not a byte range: ignored, as the RFC says). Raises RangeNotSatisfiable."""
    if header is None:
        return None
    match = _SINGLE.fullmatch(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # a suffix: the last N bytes
        length = int(last)
        if length == 0 or size == 0:
            raise RangeNotSatisfiable
        return ByteRange(max(0, size - length), size)
    start = int(first)
    end = size if not last else min(int(last) + 1, size)
    if last and int(last) < start:
        return None  # invalid: ignored
    if start >= size:
        raise RangeNotSatisfiable
    return ByteRange(start, end)
