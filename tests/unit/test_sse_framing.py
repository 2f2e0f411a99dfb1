"""SSE framing: every event is one block of well-formed fields, whatever its data holds; resume points
are checked before a stream starts."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from outpost.db.repositories.event_feed import FeedPosition
from outpost.errors import InvalidInput
from outpost.events.feed import format_position, parse_position
from outpost.events.sse import KEEPALIVE, event_frame, json_line, parse_seq

ULID = "01JD3Q6Z5W8X9Y0ABCDEFGHJKM"


def _fields(frame: bytes) -> list[tuple[str, str]]:
    assert frame.endswith(b"\n\n")
    lines = frame[:-2].decode().split("\n")
    return [(name, value.removeprefix(" ")) for name, _, value in (line.partition(":") for line in lines)]


def test_an_event_is_id_event_and_one_data_line_ended_by_a_blank_line() -> None:
    frame = event_frame("7", "log", {"seq": 7, "line": "hello"})
    assert frame == b'id: 7\nevent: log\ndata: {"seq":7,"line":"hello"}\n\n'


def test_an_event_without_an_id_leaves_the_id_field_out() -> None:
    assert _fields(event_frame(None, "resume", {"last_event_id": 3})) == [
        ("event", "resume"), ("data", '{"last_event_id":3}'),
    ]  # fmt: skip


@pytest.mark.parametrize(
    "text",
    ["two\nlines", "carriage\rreturn", "crlf\r\n", "nul\x00byte", "sep\u2028arator", "data: fake\n\nid: 9"],
)
def test_line_breaks_and_control_characters_in_data_stay_inside_one_data_line(text: str) -> None:
    frame = event_frame("1", "log", {"line": text})
    assert b"\r" not in frame
    assert frame.count(b"\n") == 4  # three fields and the blank line
    name, value = _fields(frame)[2]
    assert name == "data"
    assert json.loads(value) == {"line": text}


@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "a\x00b"])
def test_an_id_or_event_name_that_would_break_the_framing_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="line break or NUL"):
        event_frame(bad, "log", {})
    with pytest.raises(ValueError, match="line break or NUL"):
        event_frame("1", bad, {})


def test_timestamps_are_utc_with_z_like_the_json_api() -> None:
    stamp = datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    assert json_line({"at": stamp}) == b'{"at":"2025-01-02T03:04:05.678901Z"}'


def test_integers_past_64_bits_still_encode_on_one_line() -> None:
    assert json_line({"n": 2**70, "s": "a\nb"}) == b'{"n":1180591620717411303424,"s":"a\\nb"}'


def test_the_keepalive_is_a_comment() -> None:
    assert KEEPALIVE == b": keep-alive\n\n"


@pytest.mark.parametrize("value", ["0", "1", "42", "999999999999999999"])
def test_a_sequence_number_resume_point_is_a_non_negative_integer(value: str) -> None:
    assert parse_seq(value, "Last-Event-ID") == int(value)


@pytest.mark.parametrize("value", ["", "-1", "+1", "1.5", "abc", " 1", "1e3", "٣", "9" * 19])
def test_anything_else_is_refused_naming_where_it_came_from(value: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        parse_seq(value, "after")
    assert raised.value.field == "after"


@pytest.mark.parametrize(
    "position", [FeedPosition(0), FeedPosition(812, ULID, 3), FeedPosition(2**40, ULID, 0)]
)
def test_feed_positions_round_trip_through_their_event_ids(position: FeedPosition) -> None:
    assert parse_position(format_position(position), "Last-Event-ID") == position


@pytest.mark.parametrize(
    "value", ["", "x", "-1", f"12-{ULID}", f"12-{ULID.lower()}-3", f"12-{ULID}-", f"1-{ULID}-1-1", "1" * 200]
)
def test_feed_ids_the_feed_did_not_send_are_refused(value: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        parse_position(value, "Last-Event-ID")
    assert raised.value.field == "Last-Event-ID"
