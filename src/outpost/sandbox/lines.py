"""Turning a byte stream into bounded, storable text lines."""

from __future__ import annotations

from collections.abc import AsyncIterator

CHUNK_BYTES = 65536


def to_text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace").replace("\x00", "\ufffd")


async def read_lines(read: AsyncIterator[bytes], max_line_bytes: int) -> AsyncIterator[str]:
    """Split chunks into lines (without their newline); a line over `max_line_bytes` is cut into pieces."""
    pending = b""
    async for chunk in read:
        pending += chunk
        while True:
            newline = pending.find(b"\n", 0, max_line_bytes + 1)
            if newline >= 0:
                yield to_text(pending[:newline].rstrip(b"\r"))
                pending = pending[newline + 1 :]
            elif len(pending) > max_line_bytes:
                yield to_text(pending[:max_line_bytes])
                pending = pending[max_line_bytes:]
            else:
                break
    if pending:
        yield to_text(pending)
