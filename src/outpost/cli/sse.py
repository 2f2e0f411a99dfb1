"""Reading server-sent events (the WHATWG `text/event-stream` format) as the bytes of a response arrive.

An event is a block of `field: value` lines ended by an empty line; lines end with CRLF, LF or CR. Only
`id`, `event` and `data` mean something here (`retry` and unknown fields are ignored, as the format
says), lines starting with `:` are comments, and an event that never got its empty line before the
stream ended was cut off and is not an event. The server is not trusted: a line or an event's data
longer than the caps is cut there and the event says so (`truncated`), so a hostile or broken stream
cannot make this process hold more than a few caps of memory.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

MAX_LINE_BYTES = 8 * 1024 * 1024
"""The longest line kept whole (a tool call carrying a whole file is one line of JSON)."""
MAX_DATA_CHARS = 8 * 1024 * 1024
"""The most data kept of one event, all its `data` lines together."""
_LINE_BREAK = re.compile(rb"\r\n|\r|\n")
_BOM = "\ufeff"


@dataclass(frozen=True, slots=True)
class SseEvent:
    """One event as the stream sent it."""

    event: str
    """Its type: the `event` field, `message` without one."""
    data: str
    """Its `data` lines joined by line feeds."""
    id: str | None = None
    """Its own `id` field; None when it had none (the stream's last id then still holds, see
    `SseParser.last_event_id`)."""
    truncated: bool = False
    """A line or the data went past the caps and was cut: `data` is only its beginning."""


class SseParser:
    """Turns chunks of a stream, as they arrive, into the events they complete; one parser per stream."""

    def __init__(self, max_line_bytes: int = MAX_LINE_BYTES, max_data_chars: int = MAX_DATA_CHARS) -> None:
        self.last_event_id: str | None = None
        """The last `id` the stream set, as a browser keeps it to send back as `Last-Event-ID`."""
        self._max_line_bytes = max_line_bytes
        self._max_data_chars = max_data_chars
        self._line = bytearray()
        self._line_cut = False
        self._after_cr = False
        self._at_start = True
        self._event = ""
        self._id: str | None = None
        self._data: list[str] = []
        self._data_chars = 0
        self._truncated = False

    def feed(self, chunk: bytes) -> list[SseEvent]:
        """The events that `chunk` completes, in order (none while an event's empty line is to come)."""
        events: list[SseEvent] = []
        if not chunk:  # an empty chunk must not forget that the last one ended with a CR
            return events
        for line, cut in self._lines(chunk):
            event = self._take_line(line, cut)
            if event is not None:
                events.append(event)
        return events

    def _lines(self, chunk: bytes) -> Iterator[tuple[str, bool]]:
        """The lines `chunk` ends (with the part kept from earlier chunks), each with whether it was cut."""
        start = 1 if self._after_cr and chunk.startswith(b"\n") else 0  # the LF of a CRLF split in two
        self._after_cr = False
        for line_break in _LINE_BREAK.finditer(chunk, start):
            self._keep(chunk[start : line_break.start()])
            start = line_break.end()
            yield self._end_line()
        self._after_cr = chunk.endswith(b"\r")
        self._keep(chunk[start:])

    def _keep(self, piece: bytes) -> None:
        room = self._max_line_bytes - len(self._line)
        if len(piece) > room:
            self._line_cut = True
            piece = piece[: max(room, 0)]
        self._line += piece

    def _end_line(self) -> tuple[str, bool]:
        # Line breaks are ASCII, so a line never splits a UTF-8 sequence (except where it was cut).
        line, cut = self._line.decode("utf-8", errors="replace"), self._line_cut
        self._line, self._line_cut = bytearray(), False
        if self._at_start:
            self._at_start = False
            line = line.removeprefix(_BOM)
        return line, cut

    def _take_line(self, line: str, cut: bool) -> SseEvent | None:
        if not line and not cut:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon:
            value = value.removeprefix(" ")
        self._truncated = self._truncated or cut
        if name == "data":
            self._add_data(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\x00" not in value:
            self._id = self.last_event_id = value
        return None

    def _add_data(self, value: str) -> None:
        room = self._max_data_chars - self._data_chars  # each line costs one more: its line feed
        if len(value) + 1 > room:
            self._truncated = True
            if room <= 0:
                return  # full: further lines, even empty ones, are dropped
            value = value[: room - 1]
        self._data.append(value)
        self._data_chars += len(value) + 1

    def _dispatch(self) -> SseEvent | None:
        """The event the empty line ends; None for a block without data, which is no event."""
        event = None
        if self._data:
            data = "\n".join(self._data)
            event = SseEvent(self._event or "message", data, self._id, self._truncated)
        self._reset_event()
        return event

    def _reset_event(self) -> None:
        self._event, self._id, self._data, self._data_chars, self._truncated = "", None, [], 0, False
