"""Turning a byte stream into bounded, storable text lines."""

from __future__ import annotations

from collections.abc import AsyncIterator

CHUNK_BYTES = 65536


def to_text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace").replace("\x00", "\ufffd")


async def read_line_batches(read: AsyncIterator[bytes], max_line_bytes: int) -> AsyncIterator[list[str]]:
    """Split chunks into lines (without their newline), yielding the complete lines of each chunk as one
    batch; a line over `max_line_bytes` is cut into pieces of that size."""
    pending = b""
    async for chunk in read:
        lines, pending = split_lines(pending + chunk, max_line_bytes)
        if lines:
            yield lines
    if pending:
        yield [to_text(pending)]


def split_lines(data: bytes, max_line_bytes: int) -> tuple[list[str], bytes]:
    """The complete lines in `data` (overlong ones cut), and the unfinished rest (at most the limit)."""
    *complete, rest = data.split(b"\n")
    lines: list[str] = []
    for raw in complete:
        last = _cut_into(lines, raw, max_line_bytes)
        lines.append(to_text(last.rstrip(b"\r")))
    return lines, _cut_into(lines, rest, max_line_bytes)


def _cut_into(lines: list[str], raw: bytes, max_line_bytes: int) -> bytes:
    """Append the full-size pieces of an overlong `raw` to `lines`; returns what is left of it."""
    while len(raw) > max_line_bytes:
        lines.append(to_text(raw[:max_line_bytes]))
        raw = raw[max_line_bytes:]
    return raw
