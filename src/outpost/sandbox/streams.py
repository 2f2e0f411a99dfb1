"""Merging a run's stdout and stderr into one stream of bounded text lines."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from outpost.sandbox.base import OutputBatch, Stream
from outpost.sandbox.lines import CHUNK_BYTES, read_line_batches


async def merged_lines(
    stdout: asyncio.StreamReader, stderr: asyncio.StreamReader, max_line_bytes: int
) -> AsyncIterator[OutputBatch]:
    """Batches of lines of both streams as they arrive (order kept within each stream), until both are
    closed."""
    queue: asyncio.Queue[OutputBatch | None] = asyncio.Queue()
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
    stream: Stream,
    reader: asyncio.StreamReader,
    queue: asyncio.Queue[OutputBatch | None],
    max_line_bytes: int,
) -> None:
    try:
        async for batch in read_line_batches(_chunks(reader), max_line_bytes):
            queue.put_nowait(OutputBatch(stream, batch.lines, batch.continued))
    finally:
        queue.put_nowait(None)


async def _chunks(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    while chunk := await reader.read(CHUNK_BYTES):
        yield chunk
