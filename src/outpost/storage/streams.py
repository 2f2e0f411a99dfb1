"""Turning what a caller hands to `ObjectStore.put` into chunks of a size a backend wants."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterable

MIB = 1024 * 1024


async def rechunk(data: AsyncIterable[bytes] | bytes, size_bytes: int) -> AsyncGenerator[bytes, None]:
    """`data` in chunks of exactly `size_bytes`, except a shorter last one; never an empty chunk.

    Holds at most about two chunks of memory whatever the sizes of the pieces `data` yields (bytes
    given whole are sliced, not copied whole).
    """
    if isinstance(data, bytes):
        with memoryview(data) as view:
            for offset in range(0, len(view), size_bytes):
                yield bytes(view[offset : offset + size_bytes])
        return
    buffer = bytearray()
    async for piece in data:
        buffer += piece
        while len(buffer) >= size_bytes:
            yield _take(buffer, size_bytes)  # no local name: a chunk is not kept while the next fills
    if buffer:
        yield bytes(buffer)


def _take(buffer: bytearray, size_bytes: int) -> bytes:
    """Remove the first `size_bytes` of `buffer` and return them."""
    with memoryview(buffer) as view:  # released before the bytearray is resized below
        taken = bytes(view[:size_bytes])
    del buffer[:size_bytes]
    return taken
