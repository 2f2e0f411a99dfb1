"""Merging a run's stdout and stderr into one stream of bounded text lines."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from outpost.sandbox.base import OutputLine, Stream
from outpost.sandbox.lines import CHUNK_BYTES, read_lines


async def merged_lines(
    stdout: asyncio.StreamReader, stderr: asyncio.StreamReader, max_line_bytes: int
) -> AsyncIterator[OutputLine]:
    """Lines of both streams as they arrive (order kept within each stream), until both are closed."""
    queue: asyncio.Queue[OutputLine | None] = asyncio.Queue()
    pumps = [
        asyncio.create_task(_pump("stdout", stdout, queue, max_line_bytes)),
        asyncio.create_task(_pump("stderr", stderr, queue, max_line_bytes)),
    ]
    try:
        open_streams = len(pumps)
        while open_streams:
            item = await queue.get()
            if item is None:
                open_streams -= 1
            else:
                yield item
    finally:
        for pump in pumps:
            pump.cancel()


async def _pump(
    stream: Stream, reader: asyncio.StreamReader, queue: asyncio.Queue[OutputLine | None], max_line_bytes: int
) -> None:
    try:
        async for line in read_lines(_chunks(reader), max_line_bytes):
            queue.put_nowait(OutputLine(stream, line))
    finally:
        queue.put_nowait(None)


async def _chunks(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    while chunk := await reader.read(CHUNK_BYTES):
        yield chunk
