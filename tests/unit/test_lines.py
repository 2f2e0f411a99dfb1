"""Byte streams become bounded, storable lines."""

from __future__ import annotations

from collections.abc import AsyncIterator

from outpost.sandbox.lines import read_line_batches


async def _lines(chunks: list[bytes], max_line_bytes: int = 8) -> list[str]:
    async def source() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    return [line async for batch in read_line_batches(source(), max_line_bytes) for line in batch.lines]


async def test_lines_split_across_chunks_are_joined() -> None:
    assert await _lines([b"he", b"llo\nwor", b"ld\n"]) == ["hello", "world"]


async def test_a_last_line_without_newline_is_kept() -> None:
    assert await _lines([b"a\nb"]) == ["a", "b"]


async def test_overlong_lines_are_cut_into_pieces_of_the_limit() -> None:
    assert await _lines([b"0123456789abcdefXY\n"]) == ["01234567", "89abcdef", "XY"]


async def test_crlf_endings_lose_their_carriage_return() -> None:
    assert await _lines([b"dos\r\n"]) == ["dos"]


async def test_invalid_utf8_and_nul_bytes_are_replaced() -> None:
    assert await _lines([b"a\x00b\xffc\n"]) == ["a\ufffdb\ufffdc"]


async def test_empty_lines_are_kept() -> None:
    assert await _lines([b"\n\n"]) == ["", ""]


async def test_pieces_of_a_cut_line_are_marked_as_continued() -> None:
    async def source() -> AsyncIterator[bytes]:
        yield b"short\n0123456789abcdefXY\nlast"

    batches = [batch async for batch in read_line_batches(source(), 8)]
    assert [(b.lines, sorted(b.continued)) for b in batches] == [
        (["short", "01234567", "89abcdef", "XY"], [1, 2]),
        (["last"], []),
    ]
