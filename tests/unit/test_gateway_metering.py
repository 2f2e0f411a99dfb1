"""The gateway reads each provider's usage from the bytes it forwards, however they are cut or corrupted."""

from __future__ import annotations

import json
import tracemalloc
from typing import Any

import pytest

from outpost.agents.events import Usage
from outpost.gateway.metering import MeteredCall, UsageMeter, WireApi, wire_api_for
from tests.fakes import provider_wire as wire

NUMBERS = wire.Usage(input=1111, output=22, cache_read=333, cache_write=44, reasoning=7)
ODD = wire.Usage(input=5, output=6, cache_read=7, cache_write=8, reasoning=9)


def _stream(api: WireApi, model: str, usage: wire.Usage = NUMBERS) -> list[bytes]:
    if api == "anthropic_messages":
        return wire.anthropic_stream(model, None, usage)
    if api == "openai_responses":
        return wire.responses_stream(model, None, usage)
    if api == "chat_completions":
        return wire.chat_stream(model, None, usage, include_usage=True)
    return wire.gemini_stream(model, None, usage)


def _body(api: WireApi, model: str, usage: wire.Usage = NUMBERS) -> bytes:
    if api == "anthropic_messages":
        reply = wire.anthropic_json(model, None, usage)
    elif api == "openai_responses":
        reply = wire.responses_json(model, None, usage)
    elif api == "chat_completions":
        reply = wire.chat_json(model, None, usage)
    else:
        reply = wire.gemini_json(model, None, usage)
    return json.dumps(reply).encode()


def _meter(
    api: WireApi,
    chunks: list[bytes],
    *,
    streaming: bool = True,
    request_model: str | None = None,
    **limits: int,
) -> MeteredCall | None:
    meter = UsageMeter(api, streaming=streaming, request_model=request_model, **limits)
    for chunk in chunks:
        meter.feed(chunk)
    return meter.finish()


def _bytewise(frames: list[bytes]) -> list[bytes]:
    joined = b"".join(frames)
    return [joined[i : i + 1] for i in range(len(joined))]


def _event(data: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(data)}\n\n".encode()


# Each API's own counting, turned into ours: input excludes cache reads; reasoning and thoughts are output.
EXPECTED: dict[WireApi, Usage] = {
    "anthropic_messages": Usage(1111, 22, 333, 44),
    "openai_responses": Usage(1111, 29, 333, 0),
    "chat_completions": Usage(1111, 22, 333, 0),
    "gemini": Usage(1111, 29, 333, 0),
}
EXPECTED_ODD: dict[WireApi, Usage] = {
    "anthropic_messages": Usage(5, 6, 7, 8),
    "openai_responses": Usage(5, 15, 7, 0),
    "chat_completions": Usage(5, 6, 7, 0),
    "gemini": Usage(5, 15, 7, 0),
}
APIS = list(EXPECTED)


# --- paths --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "api"),
    [
        ("/v1/messages", "anthropic_messages"),
        ("/messages", "anthropic_messages"),
        ("/v1/responses", "openai_responses"),
        ("/v1/chat/completions", "chat_completions"),
        ("/chat/completions", "chat_completions"),
        ("/v1beta/models/gemini-3.1-pro:streamGenerateContent", "gemini"),
        ("/v1beta/models/x:generateContent", "gemini"),
        ("/v1/messages/count_tokens", None),
        ("/v1beta/models/x:countTokens", None),
        ("/v1/models", None),
        ("/v1beta/models", None),
        ("/", None),
    ],
)
def test_paths_name_their_wire_api(path: str, api: WireApi | None) -> None:
    assert wire_api_for(path) == api


# --- each API, streamed and whole ---------------------------------------------------------------


@pytest.mark.parametrize("api", APIS)
def test_streams_from_the_fake_provider_are_metered(api: WireApi) -> None:
    assert _meter(api, _stream(api, "m-1")) == MeteredCall("m-1", EXPECTED[api])


@pytest.mark.parametrize("api", APIS)
def test_json_bodies_from_the_fake_provider_are_metered(api: WireApi) -> None:
    assert _meter(api, [_body(api, "m-2")], streaming=False) == MeteredCall("m-2", EXPECTED[api])


@pytest.mark.parametrize("api", APIS)
def test_other_numbers_give_other_usage(api: WireApi) -> None:
    assert _meter(api, _stream(api, "m", ODD)) == MeteredCall("m", EXPECTED_ODD[api])
    assert _meter(api, [_body(api, "m", ODD)], streaming=False) == MeteredCall("m", EXPECTED_ODD[api])


@pytest.mark.parametrize("api", APIS)
def test_byte_at_a_time_feeding_splits_utf8_and_still_meters(api: WireApi) -> None:
    model = "modèle-✓"  # multi-byte characters get cut between feeds
    assert _meter(api, _bytewise(_stream(api, model))) == MeteredCall(model, EXPECTED[api])
    body = _bytewise([_body(api, model)])
    assert _meter(api, body, streaming=False) == MeteredCall(model, EXPECTED[api])


@pytest.mark.parametrize("ending", [b"\r\n", b"\r"])
@pytest.mark.parametrize("api", APIS)
def test_crlf_and_cr_line_endings_are_read_even_cut_between_bytes(api: WireApi, ending: bytes) -> None:
    frames = [frame.replace(b"\n", ending) for frame in _stream(api, "m")]  # JSON holds no raw newlines
    assert _meter(api, frames) == MeteredCall("m", EXPECTED[api])
    assert _meter(api, _bytewise(frames)) == MeteredCall("m", EXPECTED[api])


def test_model_falls_back_to_the_requested_one() -> None:
    body = json.dumps({"usage": {"prompt_tokens": 10, "completion_tokens": 2}}).encode()
    result = _meter("chat_completions", [body], streaming=False, request_model="asked")
    assert result == MeteredCall("asked", Usage(10, 2, 0, 0))


def test_chat_stream_without_a_usage_chunk_meters_nothing() -> None:
    frames = wire.chat_stream("m", None, NUMBERS, include_usage=False)
    assert _meter("chat_completions", frames, request_model="m") is None


def test_chat_stream_takes_the_last_usage_and_deepseek_cache_hits() -> None:
    frames = [
        _event({"model": "ds", "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 1}}),
        _event({"model": "ds", "choices": [], "usage": None}),
        _event(
            {
                "choices": [],
                "usage": {"prompt_tokens": 900, "prompt_cache_hit_tokens": 600, "completion_tokens": 30},
            }
        ),
        b"data: [DONE]\n\n",
    ]
    assert _meter("chat_completions", frames) == MeteredCall("ds", Usage(300, 30, 600, 0))


def test_anthropic_message_delta_replaces_the_counts_it_carries() -> None:
    frames = wire.anthropic_stream("claude", None, NUMBERS)
    delta = {
        "type": "message_delta",
        "usage": {"input_tokens": 1200, "output_tokens": 99, "cache_read_input_tokens": None},
    }
    frames.insert(-1, wire.sse(delta, "message_delta"))
    assert _meter("anthropic_messages", frames) == MeteredCall("claude", Usage(1200, 99, 333, 44))


def test_anthropic_stream_cut_after_message_start_keeps_what_was_told() -> None:
    frames = wire.anthropic_stream("claude", None, NUMBERS)[:3]
    assert _meter("anthropic_messages", frames) == MeteredCall("claude", Usage(1111, 1, 333, 44))


@pytest.mark.parametrize("kind", ["response.incomplete", "response.failed"])
def test_responses_unfinished_terminal_events_still_bill(kind: str) -> None:
    response = wire.responses_json("gpt", None, ODD) | {"status": kind.split(".")[1]}
    frames = [wire.sse({"type": kind, "response": response}, kind)]
    assert _meter("openai_responses", frames) == MeteredCall("gpt", Usage(5, 15, 7, 0))


def test_responses_usage_on_a_non_terminal_event_is_not_billed() -> None:
    response = wire.responses_json("gpt", None, ODD)
    frames = [wire.sse({"type": "response.in_progress", "response": response}, "response.in_progress")]
    assert _meter("openai_responses", frames) is None


def test_responses_cache_writes_are_taken_out_of_input() -> None:
    usage = {"input_tokens": 100, "input_tokens_details": {"cached_tokens": 30, "cache_write_tokens": 20}}
    body = json.dumps({"model": "r", "usage": usage | {"output_tokens": 4}}).encode()
    assert _meter("openai_responses", [body], streaming=False) == MeteredCall("r", Usage(50, 4, 30, 20))


def test_gemini_takes_the_last_cumulative_chunk_and_tool_use_prompt_tokens() -> None:
    first = wire.gemini_json("g", None, ODD)
    last = wire.gemini_json("g-final", None, NUMBERS)
    last["usageMetadata"]["toolUsePromptTokenCount"] = 50
    assert _meter("gemini", [_event(first), _event(last)]) == MeteredCall("g-final", Usage(1161, 29, 333, 0))


def test_gemini_json_array_body_takes_the_last_element_with_usage() -> None:
    first, last = wire.gemini_json("g", None, ODD), wire.gemini_json("g", None, NUMBERS)
    tail = {"candidates": [{"content": {"parts": [{"text": ""}]}}]}
    body = json.dumps([first, last, tail]).encode()
    assert _meter("gemini", [body], streaming=False) == MeteredCall("g", EXPECTED["gemini"])


def test_json_array_body_is_not_read_for_other_apis() -> None:
    body = json.dumps([wire.chat_json("m", None, NUMBERS)]).encode()
    assert _meter("chat_completions", [body], streaming=False) is None


# --- SSE framing --------------------------------------------------------------------------------


def test_junk_between_events_is_ignored() -> None:
    junk = [
        b": keep-alive comment\n\n",
        b"data: {not json\n\n",
        b"data: [1, 2, 3]\n\n",
        b"data: \xff\xfe\n\n",
        b"data: [DONE]\n\n",
        b"retry: 100\nid: 7\n\n",
        b"data\n\n",
        b"\n\n\n",
    ]
    frames = _stream("openai_responses", "gpt")
    mixed = [piece for frame in frames for piece in (frame, *junk)]
    assert _meter("openai_responses", mixed) == MeteredCall("gpt", EXPECTED["openai_responses"])


def test_data_lines_of_one_event_are_joined_with_newlines() -> None:
    usage = json.dumps({"prompt_tokens": 8, "completion_tokens": 3})
    frame = f'data:{{"model": "split",\ndata: "usage":\ndata:{usage}}}\n\n'.encode()
    assert _meter("chat_completions", [frame]) == MeteredCall("split", Usage(8, 3, 0, 0))
    # A \r\n cut between its two bytes must not end the event early and split its data.
    crlf = _bytewise([frame.replace(b"\n", b"\r\n")])
    assert _meter("chat_completions", crlf) == MeteredCall("split", Usage(8, 3, 0, 0))


def test_event_name_stands_in_for_a_missing_type() -> None:
    message = wire.anthropic_json("claude", None, ODD)
    frame = f"event: message_start\ndata: {json.dumps({'message': message})}\n\n".encode()
    assert _meter("anthropic_messages", [frame]) == MeteredCall("claude", Usage(5, 6, 7, 8))


def test_leading_byte_order_mark_is_skipped() -> None:
    frames = [b"\xef\xbb\xbf", *_stream("gemini", "g")]
    assert _meter("gemini", frames) == MeteredCall("g", EXPECTED["gemini"])


@pytest.mark.parametrize("api", ["openai_responses", "chat_completions", "gemini"])
def test_streams_cut_before_their_usage_event_ends_meter_nothing(api: WireApi) -> None:
    joined = b"".join(_stream(api, "m"))
    inside = joined.rfind(b'"usage')  # within the last event that carries usage
    assert _meter(api, [joined[:inside]]) is None
    assert _meter(api, [joined[: joined.index(b"\n\n", inside) + 1]]) is None  # its blank line never came


def test_anthropic_stream_cut_inside_message_delta_keeps_message_start_usage() -> None:
    joined = b"".join(wire.anthropic_stream("claude", None, NUMBERS))
    cut = joined[: joined.rfind(b'"usage')]
    assert _meter("anthropic_messages", [cut]) == MeteredCall("claude", Usage(1111, 1, 333, 44))


def test_a_connection_dropped_mid_json_like_the_fake_provider_meters_nothing() -> None:
    frames = [
        b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_tr',
        b"\n\x00garbage",
    ]
    assert _meter("anthropic_messages", frames) is None


def test_an_event_not_closed_by_a_blank_line_is_not_dispatched() -> None:
    frame = _stream("gemini", "g")[0]
    assert _meter("gemini", [frame.rstrip(b"\n") + b"\n"]) is None
    assert _meter("gemini", [frame]) is not None


# --- bounds and hostile input -------------------------------------------------------------------


def test_fifty_mib_line_is_skipped_without_growing_memory() -> None:
    meter = UsageMeter("chat_completions", streaming=True, request_model=None, max_line_bytes=1 << 20)
    chunk = b"x" * (64 << 10)  # small pieces, so the meter's line buffer fills up to its limit first
    meter.feed(b"data: ")
    tracemalloc.start()
    try:
        for _ in range(50 * 16):
            meter.feed(chunk)
        meter.feed(b"\n\n")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    meter.feed(_event({"model": "after", "usage": {"prompt_tokens": 7, "completion_tokens": 1}}))
    assert meter.finish() == MeteredCall("after", Usage(7, 1, 0, 0))
    assert peak < 3 << 20  # one line's worth at most, never the 50 MiB


def test_an_overlong_event_is_billed_only_from_the_usage_at_its_end() -> None:
    good = json.dumps({"model": "m", "usage": {"prompt_tokens": 1, "completion_tokens": 1}})
    frames = [f"data: {'y' * 200}\ndata: {good}\n\n".encode()]
    assert _meter("chat_completions", frames, max_line_bytes=100) == MeteredCall(None, Usage(1, 1, 0, 0))
    assert _meter("chat_completions", [f"data: {good}\n\n".encode()], max_line_bytes=100) is not None


def _huge_responses_event(kind: str, usage: dict[str, Any] | None) -> bytes:
    text = "w" * (3 << 20)
    response = {"id": "r", "model": "gpt-x", "output": [{"type": "message", "content": [{"text": text}]}]}
    if usage is not None:
        response["usage"] = usage
    return f"event: {kind}\ndata: {json.dumps({'type': kind, 'response': response})}\n\n".encode()


def test_a_huge_final_responses_event_is_still_billed() -> None:
    usage = {"input_tokens": 50, "output_tokens": 800_000, "input_tokens_details": {"cached_tokens": 10}}
    chunks = [_huge_responses_event("response.completed", usage)]
    pieces = [chunks[0][i : i + 65536] for i in range(0, len(chunks[0]), 65536)]
    found = _meter("openai_responses", pieces, request_model="asked")
    assert found == MeteredCall("asked", Usage(40, 800_000, 10, 0))


def test_a_huge_responses_event_that_is_not_final_bills_nothing() -> None:
    usage = {"input_tokens": 5, "output_tokens": 5}
    assert _meter("openai_responses", [_huge_responses_event("response.output_item.done", usage)]) is None
    body = _huge_responses_event("response.completed", usage).replace(b"event: response.completed\n", b"")
    assert _meter("openai_responses", [body]) is not None  # the type at the data's start is enough


def test_a_huge_gemini_chunk_is_billed_from_its_usage_metadata() -> None:
    chunk = {
        "candidates": [{"content": {"parts": [{"text": "g" * (2 << 20)}]}}],
        "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 700_000},
    }
    assert _meter("gemini", [_event(chunk)]) == MeteredCall(None, Usage(9, 700_000, 0, 0))


def test_a_huge_anthropic_event_is_not_trusted_for_usage() -> None:
    event = {"type": "message_delta", "pad": "a" * (2 << 20), "usage": {"output_tokens": 10}}
    assert _meter("anthropic_messages", [_event(event)]) is None


def test_a_usage_cut_off_or_faked_inside_text_bills_nothing() -> None:
    cut = b'data: {"choices": [], "x": "' + b"z" * (2 << 20) + b'", "usage": {"prompt_tokens": 3\n\n'
    assert _meter("chat_completions", [cut]) is None
    quoted = {"choices": [{"delta": {"content": '"usage": {"prompt_tokens": 999}' + "q" * (2 << 20)}}]}
    assert _meter("chat_completions", [_event(quoted)]) is None


def test_an_overlong_comment_or_field_does_not_break_the_events_around_it() -> None:
    usage = {"model": "m", "usage": {"prompt_tokens": 4, "completion_tokens": 2}}
    chunks = [b": " + b"c" * (2 << 20) + b"\n", b"id: " + b"9" * (2 << 20) + b"\n", _event(usage)]
    assert _meter("chat_completions", chunks) == MeteredCall("m", Usage(4, 2, 0, 0))


def test_event_data_over_the_line_limit_in_total_is_dropped() -> None:
    frames = [b"data: [\n" * 30 + b"data: 1]\n\n"]
    assert _meter("gemini", frames, max_line_bytes=64) is None


def test_body_over_the_limit_is_given_up() -> None:
    body = _body("chat_completions", "m")
    assert _meter("chat_completions", [body], streaming=False, max_body_bytes=len(body)) is not None
    halves = [body[:10], body[10:]]
    assert _meter("chat_completions", halves, streaming=False, max_body_bytes=len(body) - 1) is None


@pytest.mark.parametrize("api", APIS)
def test_hostile_nesting_does_not_crash(api: WireApi) -> None:
    deep = b"[" * 200_000
    assert _meter(api, [b"data: " + deep + b"\n\n"]) is None
    assert _meter(api, [b'{"usage": ' + deep], streaming=False) is None
    assert _meter(api, [deep], streaming=False) is None


def test_garbage_body_meters_nothing() -> None:
    assert _meter("anthropic_messages", [b"\x00\xff<html>502</html>"], streaming=False) is None
    assert _meter("anthropic_messages", [], streaming=False) is None
    assert _meter("anthropic_messages", [b'{"type":"error","error":{}}'], streaming=False) is None


def test_untrusted_numbers_count_as_zero() -> None:
    usage = {
        "input_tokens": -5,
        "output_tokens": True,
        "cache_read_input_tokens": "12",
        "cache_creation_input_tokens": 3.5,
    }
    body = json.dumps({"model": ["not", "a", "name"], "usage": usage}).encode()
    assert _meter("anthropic_messages", [body], streaming=False, request_model="r") == MeteredCall(
        "r", Usage()
    )


def test_cached_beyond_the_inclusive_input_never_makes_input_negative() -> None:
    usage = {"prompt_tokens": 10, "completion_tokens": -1, "prompt_tokens_details": {"cached_tokens": 40}}
    body = json.dumps({"model": "m", "usage": usage}).encode()
    assert _meter("chat_completions", [body], streaming=False) == MeteredCall("m", Usage(0, 0, 40, 0))
    meta = {"promptTokenCount": "9", "cachedContentTokenCount": 4, "candidatesTokenCount": False}
    body = json.dumps({"modelVersion": "", "usageMetadata": meta}).encode()
    assert _meter("gemini", [body], streaming=False) == MeteredCall(None, Usage(0, 0, 4, 0))
