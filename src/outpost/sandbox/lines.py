"""Turning a byte stream into bounded, storable text lines."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

CHUNK_BYTES = 65536


def to_text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace").replace("\x00", "\ufffd")


@dataclass(frozen=True, slots=True)
class LineBatch:
    lines: list[str]
    continued: frozenset[int] = frozenset()
    """Indexes of lines cut at the limit: each continues in the next line of its stream."""


async def read_line_batches(read: AsyncIterator[bytes], max_line_bytes: int) -> AsyncIterator[LineBatch]:
    """Split chunks into lines (without their newline), yielding the complete lines of each chunk as one
    batch; a line over `max_line_bytes` is cut into pieces of that size, marked as continued."""
    pending = b""
    async for chunk in read:
        batch, pending = split_lines(pending + chunk, max_line_bytes)
        if batch.lines:
            yield batch
    if pending:
        yield LineBatch([to_text(pending)])


def split_lines(data: bytes, max_line_bytes: int) -> tuple[LineBatch, bytes]:
    """The complete lines in `data` (overlong ones cut), and the unfinished rest (at most the limit)."""
    *complete, rest = data.split(b"\n")
    lines: list[str] = []
    continued: set[int] = set()
    for raw in complete:
        last = _cut_into(lines, continued, raw, max_line_bytes)
        lines.append(to_text(last.rstrip(b"\r")))
    rest = _cut_into(lines, continued, rest, max_line_bytes)
    return LineBatch(lines, frozenset(continued)), rest


def _cut_into(lines: list[str], continued: set[int], raw: bytes, max_line_bytes: int) -> bytes:
    """Append the full-size pieces of an overlong `raw` to `lines`; returns what is left of it."""
    while len(raw) > max_line_bytes:
        continued.add(len(lines))
        lines.append(to_text(raw[:max_line_bytes]))
        raw = raw[max_line_bytes:]
    return raw
