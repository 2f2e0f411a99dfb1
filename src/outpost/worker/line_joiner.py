"""Rejoining the lines the sandbox cut at its line limit, before the agent's parser reads them.

The event log keeps the pieces (its rows stay bounded); the parser needs the whole line, or a JSON event
longer than the limit, such as a long final message, is lost. A line is rejoined up to MAX_JOINED_CHARS;
past that its pieces go to the parser one by one, as they did before.
"""

from __future__ import annotations

from collections.abc import Iterator

from outpost.sandbox.base import OutputBatch, Stream

MAX_JOINED_CHARS = 8 * 1024 * 1024


class LineJoiner:
    def __init__(self, max_chars: int = MAX_JOINED_CHARS) -> None:
        self._max_chars = max_chars
        self._parts: dict[Stream, list[str]] = {"stdout": [], "stderr": []}
        self._chars: dict[Stream, int] = {"stdout": 0, "stderr": 0}

    def lines(self, batch: OutputBatch) -> Iterator[str]:
        """The batch's whole lines, in order; a cut line comes out once its last piece has arrived."""
        parts = self._parts[batch.stream]
        for index, text in enumerate(batch.lines):
            if index not in batch.continued and not parts:
                yield text  # the common case: a line that was never cut
                continue
            parts.append(text)
            self._chars[batch.stream] += len(text)
            if self._chars[batch.stream] > self._max_chars:
                yield from self._release(batch.stream)
            elif index not in batch.continued:
                yield "".join(parts)
                self._reset(batch.stream)

    def finish(self) -> Iterator[tuple[Stream, str]]:
        """What is left of lines whose end never came (the run ended mid-line)."""
        for stream in ("stdout", "stderr"):
            if self._parts[stream]:
                joined = "".join(self._parts[stream])
                self._reset(stream)
                yield stream, joined

    def _release(self, stream: Stream) -> Iterator[str]:
        pieces = list(self._parts[stream])
        self._reset(stream)
        yield from pieces

    def _reset(self, stream: Stream) -> None:
        self._parts[stream].clear()  # in place: `lines` holds this very list
        self._chars[stream] = 0
