"""The CLI's server-sent events parser, on well-formed streams and on hostile ones."""

from __future__ import annotations

import pytest

from outpost.cli.sse import SseEvent, SseParser

STREAM = (
    b": keep-alive\n\n"
    b'id: 1\nevent: status\ndata: {"status": "running"}\n\n'
    b"id: 2\nevent: log\ndata: first\ndata: second\n\n"
    b"data: no id, no type\n\n"
)
EXPECTED = [
    SseEvent("status", '{"status": "running"}', "1"),
    SseEvent("log", "first\nsecond", "2"),
    SseEvent("message", "no id, no type", None),
]


def parse(*chunks: bytes, parser: SseParser | None = None) -> list[SseEvent]:
    parser = parser or SseParser()
    return [event for chunk in chunks for event in parser.feed(chunk)]


def test_fields_multi_line_data_and_comments_are_read_as_the_format_says() -> None:
    assert parse(STREAM) == EXPECTED


@pytest.mark.parametrize("line_break", [b"\r\n", b"\r", b"\n"])
def test_every_line_break_the_format_allows_ends_a_line(line_break: bytes) -> None:
    assert parse(STREAM.replace(b"\n", line_break)) == EXPECTED


@pytest.mark.parametrize("line_break", [b"\r\n", b"\r", b"\n"])
def test_the_same_events_come_out_wherever_the_chunks_split_the_stream(line_break: bytes) -> None:
    stream = STREAM.replace(b"\n", line_break)
    for split in range(len(stream) + 1):
        assert parse(stream[:split], b"", stream[split:]) == EXPECTED, split
    assert parse(*(stream[i : i + 1] for i in range(len(stream)))) == EXPECTED


def test_an_event_cut_off_by_the_end_of_the_stream_is_not_an_event() -> None:
    assert parse(b"id: 1\ndata: complete\n\nid: 2\ndata: never ended\n") == [
        SseEvent("message", "complete", "1")
    ]


def test_a_block_without_data_is_no_event_but_its_id_still_counts() -> None:
    parser = SseParser()
    assert parse(b"id: 7\nevent: status\n\n", b"event: log\n\n", parser=parser) == []
    assert parser.last_event_id == "7"
    assert parse(b"data:\n\n") == [SseEvent("message", "")]


def test_one_space_after_the_colon_is_dropped_and_further_spaces_are_kept() -> None:
    assert parse(b"data:x\n\ndata:  two\n\n") == [SseEvent("message", "x"), SseEvent("message", " two")]


def test_unknown_fields_retry_lines_without_colon_and_ids_with_nul_are_ignored() -> None:
    stream = b"id: 3\nretry: 10\nbogus: value\njust-a-name\nid: 4\x005\ndata: kept\n\n"
    assert parse(stream) == [SseEvent("message", "kept", "3")]


def test_a_byte_order_mark_opening_the_stream_is_skipped() -> None:
    assert parse(b"\xef\xbb\xbfdata: x\n\n") == [SseEvent("message", "x")]


def test_bytes_that_are_not_utf8_become_replacement_characters() -> None:
    assert parse(b"data: \xff\xfe bad \xc3\n\n") == [SseEvent("message", "\ufffd\ufffd bad \ufffd")]


def test_garbage_never_raises_and_yields_only_what_blank_lines_end() -> None:
    garbage = bytes(range(256)) * 50 + b"\x00\r\r\n\n::::\ndata\n\n"
    events = parse(garbage)
    assert events[-1] == SseEvent("message", "")
    assert all(isinstance(event.data, str) for event in events)


def test_a_huge_line_is_cut_at_the_cap_and_the_event_says_so() -> None:
    parser = SseParser(max_line_bytes=100)
    huge = b"data: " + b"x" * 10_000
    events = parse(
        b"id: 9\n", *(huge[i : i + 1000] for i in range(0, len(huge), 1000)), b"\n\n", parser=parser
    )
    assert events == [SseEvent("message", "x" * 94, "9", truncated=True)]
    assert len(parser._line) == 0
    # The next event is whole again.
    assert parse(b"data: fine\n\n", parser=parser) == [SseEvent("message", "fine")]


def test_a_stream_that_never_ends_its_line_holds_no_more_than_the_cap() -> None:
    parser = SseParser(max_line_bytes=1000)
    for _ in range(1000):
        assert parser.feed(b"y" * 10_000) == []
    assert len(parser._line) == 1000


def test_data_of_many_lines_is_capped_as_a_whole() -> None:
    parser = SseParser(max_data_chars=50)
    events = parse(b"data: 0123456789\n" * 20 + b"\n", parser=parser)
    assert len(events) == 1
    assert events[0].truncated
    assert len(events[0].data) <= 50
    assert events[0].data.startswith("0123456789\n0123456789")
