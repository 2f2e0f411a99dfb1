"""Reading a pipe on the event loop through a descriptor this module alone owns and closes, once.

`loop.connect_read_pipe` is not used on purpose: under uvloop, libuv and the file object passed in both
close the same descriptor number (uvloop issue 763). Between the two closes the number can be handed to
another open — a pidfd, a socket — which the second close then takes away from its owner. In this server
that showed up as a pidfd callback firing for the wrong child and a blocking wait() on the loop. Here the
descriptor is a private duplicate, watched with `add_reader` (which works the same on asyncio and uvloop)
and closed exactly once.
"""

from __future__ import annotations

import asyncio
import os
from typing import IO, Any

_CHUNK = 65536


class PipeReader(asyncio.ReadTransport):
    """Feeds what arrives on a pipe into a StreamReader, pausing while the reader's buffer is full."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int, reader: asyncio.StreamReader) -> None:
        super().__init__()
        self._loop = loop
        self._fd: int | None = fd
        self._reader = reader
        self._paused = False
        os.set_blocking(fd, False)
        reader.set_transport(self)  # the reader calls pause_reading()/resume_reading() as it fills
        loop.add_reader(fd, self._on_readable)

    def _on_readable(self) -> None:
        if self._fd is None:
            return
        try:
            data = os.read(self._fd, _CHUNK)
        except BlockingIOError:
            return
        except OSError as exc:
            self._reader.set_exception(exc)
            self.close()
            return
        if data:
            self._reader.feed_data(data)
        else:
            self.close()

    def pause_reading(self) -> None:
        if self._fd is not None and not self._paused:
            self._paused = True
            self._loop.remove_reader(self._fd)

    def resume_reading(self) -> None:
        if self._fd is not None and self._paused:
            self._paused = False
            self._loop.add_reader(self._fd, self._on_readable)

    def is_reading(self) -> bool:
        return self._fd is not None and not self._paused

    def is_closing(self) -> bool:
        return self._fd is None

    def close(self) -> None:
        """Stop reading and close the descriptor; the reader sees the end of the stream. Idempotent."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        if not self._paused:
            self._loop.remove_reader(fd)
        os.close(fd)
        self._reader.feed_eof()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


Pipe = tuple[asyncio.StreamReader, PipeReader]


def attach_pipe(pipe: IO[bytes]) -> Pipe:
    """A stream reader over the read end of a pipe (a file object, closed here: from now on only the
    returned transport holds a descriptor of it)."""
    fd = os.dup(pipe.fileno())
    pipe.close()
    reader = asyncio.StreamReader(limit=2**20)
    return reader, PipeReader(asyncio.get_running_loop(), fd, reader)
