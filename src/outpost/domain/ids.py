"""Identifiers: ULIDs, time-ordered, 26 Crockford base32 characters.

ULIDs made in this process are strictly increasing, also within one millisecond (the random part is
incremented), so that listings ordered by id follow creation order.
"""

from __future__ import annotations

import re
import secrets
import threading
import time

from ulid import ULID

_ULID_PATTERN = re.compile(r"^[0-7][0-9A-HJKMNP-TV-Z]{25}$")
_RANDOM_BITS = 80


class _MonotonicUlids:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = 0

    def next(self) -> str:
        with self._lock:
            candidate = (time.time_ns() // 1_000_000) << _RANDOM_BITS | secrets.randbits(_RANDOM_BITS)
            # Same millisecond (or a clock step back): continue from the last id instead.
            self._last = candidate if candidate > self._last else self._last + 1
            return str(ULID.from_int(self._last))


_ulids = _MonotonicUlids()


def new_ulid() -> str:
    return _ulids.next()


def is_ulid(value: str) -> bool:
    """True when `value` is a well-formed ULID (upper-case canonical form)."""
    return bool(_ULID_PATTERN.match(value))
