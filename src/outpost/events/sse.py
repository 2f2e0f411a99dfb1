"""Server-sent events framing (the WHATWG `text/event-stream` format) and the ids clients send back.

An event is a block of `field: value` lines ended by an empty line. A line break inside a value would
start a new field, so ids and event names are checked, and data is one line of JSON (JSON escapes
every line break and control character inside strings).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

import orjson

from outpost.errors import InvalidInput

KEEPALIVE = b": keep-alive\n\n"
MAX_EVENT_ID_CHARS = 128
_FIELD_VALUE = re.compile(r"[^\r\n\x00]*")
_SEQ = re.compile(r"[0-9]{1,18}")


def event_frame(event_id: str | None, kind: str, data: Mapping[str, object]) -> bytes:
    """One event: `id` (omitted when None), `event` and one line of JSON `data`. Raises ValueError when
    the id or the event name holds a line break or NUL (they would break the framing)."""
    lines = []
    if event_id is not None:
        lines.append(b"id: " + _field_value(event_id))
    lines.append(b"event: " + _field_value(kind))
    lines.append(b"data: " + json_line(data))
    return b"\n".join(lines) + b"\n\n"


def json_line(data: Mapping[str, object]) -> bytes:
    """Compact JSON on one line; datetimes in UTC as `…Z`, as the JSON API writes them."""
    try:
        return orjson.dumps(data, option=orjson.OPT_UTC_Z)
    except TypeError:
        # orjson refuses integers past 64 bits; the standard library writes them (and escapes line
        # breaks alike).
        return json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str).encode()


def parse_seq(value: str, source: str) -> int:
    """A sequence number a client sent back (the `Last-Event-ID` header or `?after=`). Raises
    InvalidInput naming `source` unless it is a non-negative integer of at most 18 digits."""
    if not _SEQ.fullmatch(value):
        raise InvalidInput(f"{source} must be an event id of this stream: a non-negative integer", source)
    return int(value)


def _field_value(value: str) -> bytes:
    if not _FIELD_VALUE.fullmatch(value):
        raise ValueError(f"an SSE field cannot hold a line break or NUL: {value!r}")
    return value.encode()
