"""The `Range` header of downloads: one byte range is served, anything else is the whole object."""

from __future__ import annotations

import pytest

from outpost.api.byte_ranges import ByteRange, RangeNotSatisfiable, parse_range

SIZE = 1000


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-99", ByteRange(0, 100)),
        ("bytes=990-", ByteRange(990, 1000)),
        ("bytes=990-5000", ByteRange(990, 1000)),  # past the end: clamped
        ("bytes=-10", ByteRange(990, 1000)),  # the last ten bytes
        ("bytes=-5000", ByteRange(0, 1000)),
        (" bytes=5-5 ", ByteRange(5, 6)),
    ],
)
def test_one_range_is_served(header: str, expected: ByteRange) -> None:
    assert parse_range(header, SIZE) == expected


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "bytes=",
        "bytes=-",
        "bytes=5-2",
        "bytes=0-1,5-6",
        "items=0-5",
        "bytes=a-b",
        "bytes=0x10-20",
        "bytes=1_0-20",
        "bytes=\u0661-5",
        "bytes=99999999999999999999-",
        "bytes=0-99\r\nX-Evil: 1",
        "bytes = 0-5",
    ],
)
def test_anything_else_is_the_whole_object(header: str | None) -> None:
    assert parse_range(header, SIZE) is None


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=5000-6000", "bytes=-0"])
def test_a_range_past_the_end_is_not_satisfiable(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable):
        parse_range(header, SIZE)


def test_an_empty_object_satisfies_no_range() -> None:
    for header in ("bytes=0-", "bytes=-10"):
        with pytest.raises(RangeNotSatisfiable):
            parse_range(header, 0)
    assert ByteRange(0, 100).content_range(SIZE) == "bytes 0-99/1000"
