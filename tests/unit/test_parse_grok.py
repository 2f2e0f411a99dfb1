"""The Grok parser against a captured vibe-kit headless run, Grok Build's documented `json` result, and
hostile lines."""

from __future__ import annotations

import json
from typing import TypeVar

import pytest

from outpost.agents.events import (
    AgentError,
    AgentEvent,
    FileChange,
    FinalResult,
    RawText,
    Stream,
    Text,
    ToolCall,
    Usage,
    UsageReport,
)
from outpost.agents.parsers.grok import GrokOutputParser
from tests.unit.agent_outputs import FIXTURES

T = TypeVar("T")
USER = {"role": "user", "content": "do it"}
# Grok Build `--output-format json`, built from the fields agent-clis.md §5.3 documents.
BUILD_RESULT = {
    "text": "All set.",
    "stopReason": "end_turn",
    "sessionId": "0b7e-session",
    "requestId": "req-1",
    "num_turns": 2,
    "usage": {
        "input_tokens": 1200,
        "cache_read_input_tokens": 800,
        "cache_creation_input_tokens": 40,
        "output_tokens": 90,
        "reasoning_tokens": 30,
        "total_tokens": 2090,
    },
    "modelUsage": {"grok-4.7": {"inputTokens": 1200, "outputTokens": 90, "modelCalls": 2, "costUSD": 0.0031}},
    "total_cost_usd": 0.0031,
    "total_cost_usd_ticks": 31_000_000,
}
BUILD_USAGE = Usage(input_tokens=1200, output_tokens=90, cache_read_tokens=800, cache_write_tokens=40)


def parse_lines(lines: list[str], stream: Stream = "stdout") -> list[AgentEvent]:
    parser = GrokOutputParser()
    events = [event for line in lines for event in parser.feed(stream, line)]
    return events + parser.finish()


def parse(*objects: object) -> list[AgentEvent]:
    return parse_lines([json.dumps(obj) for obj in objects])


def final(events: list[AgentEvent]) -> FinalResult:
    assert isinstance(events[-1], FinalResult)
    assert not any(isinstance(event, FinalResult) for event in events[:-1])
    return events[-1]


def of_type(events: list[AgentEvent], kind: type[T]) -> list[T]:
    return [event for event in events if isinstance(event, kind)]


def assistant(content: object, **extra: object) -> dict[str, object]:
    return {"role": "assistant", "content": content, **extra}


def call(name: str, arguments: object, call_id: str = "c1") -> dict[str, object]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def test_the_captured_run_yields_its_tool_call_file_and_final_text() -> None:
    lines = (FIXTURES / "vibekit-grok-headless.jsonl").read_text().splitlines()
    events = parse_lines(lines)
    arguments = {"path": "/workspace/hello.txt", "content": "hello from fake llm\n"}
    assert events[1:4] == [
        Text("Using tools to help you..."),
        ToolCall("create_file", arguments, call_id="call_fake2"),
        FileChange("/workspace/hello.txt", "add"),
    ]
    assert events[0] == RawText("stdout", lines[0])
    assert events[4] == RawText("stdout", lines[2])
    assert events[5] == Text("DONE: wrote the file.")
    assert final(events) == FinalResult("DONE: wrote the file.")
    assert len(events) == 7


@pytest.mark.parametrize(
    ("tool", "arguments", "change"),
    [
        ("str_replace_editor", {"path": "a.py", "old_str": "x", "new_str": "y"}, FileChange("a.py")),
        ("edit_file", json.dumps({"target_file": "b.py", "code_edit": "..."}), FileChange("b.py")),
        ("create_file", json.dumps({"path": "c.py", "content": ""}), FileChange("c.py", "add")),
    ],
)
def test_file_writing_tools_report_the_file_from_their_arguments(
    tool: str, arguments: object, change: FileChange
) -> None:
    events = parse(assistant("", tool_calls=[call(tool, arguments)]))
    assert of_type(events, FileChange) == [change]


def test_tools_that_write_nothing_report_no_file() -> None:
    events = parse(assistant("", tool_calls=[call("bash", '{"command": "ls"}'), call("view_file", "{}")]))
    assert [tool.name for tool in of_type(events, ToolCall)] == ["bash", "view_file"]
    assert of_type(events, FileChange) == []


@pytest.mark.parametrize(
    ("content", "kind"),
    [
        ("Error: 401 Incorrect API key provided", "auth"),
        ("Sorry, I encountered an error: Grok API error: 401 status code (no body)", "auth"),
        ("Sorry, I encountered an error: Grok API error: 429 Rate limit exceeded", "quota"),
        ("Sorry, I encountered an error: Grok API error: Connection error.", "provider_error"),
        ("Error: Unauthorized", "auth"),
        ("Sorry, I encountered an error: Grok API error: 429 status code (no body)", "quota"),
        ("Sorry, I encountered an error: Grok API error: 429 Your API key has no credits left", "quota"),
    ],
)
def test_an_error_message_fails_the_run_with_a_kind_from_its_text(content: str, kind: str) -> None:
    events = parse(USER, assistant(content))
    assert of_type(events, AgentError) == [AgentError(content, kind=kind)]
    assert of_type(events, Text) == []
    assert final(events) == FinalResult(content, is_error=True)


def test_the_tool_round_limit_fails_the_run_as_max_turns() -> None:
    message = "Maximum tool execution rounds reached. Stopping to prevent infinite loops."
    events = parse(assistant("", tool_calls=[call("bash", "{}")]), assistant(message))
    assert of_type(events, AgentError) == [AgentError(message, kind="max_turns")]
    assert final(events).is_error


def test_stderr_is_raw_text_and_an_error_there_is_also_an_agent_error() -> None:
    lines = ["(node:12) Warning: something", "❌ Error: API key required. Set GROK_API_KEY"]
    events = parse_lines(lines, stream="stderr")
    assert events[:3] == [
        RawText("stderr", lines[0]),
        RawText("stderr", lines[1]),
        AgentError(lines[1], kind="auth"),
    ]
    assert final(events) == FinalResult(None, is_error=True)


def test_the_grok_build_result_yields_text_usage_cost_and_session() -> None:
    events = parse(BUILD_RESULT)
    assert events[:2] == [Text("All set."), UsageReport(BUILD_USAGE, model="grok-4.7")]
    assert final(events) == FinalResult(
        "All set.", usage=BUILD_USAGE, cost_usd=0.0031, session_id="0b7e-session"
    )


def test_a_cost_marked_partial_is_no_cost() -> None:
    assert final(parse({**BUILD_RESULT, "cost_is_partial": True})).cost_usd is None


def test_ticks_stand_in_for_a_missing_cost_float() -> None:
    no_float = {key: value for key, value in BUILD_RESULT.items() if key != "total_cost_usd"}
    assert final(parse({**no_float, "total_cost_usd_ticks": 25_000_000_000})).cost_usd == 2.5


def test_a_grok_build_error_fails_the_run() -> None:
    events = parse({"type": "error", "message": "401 Unauthorized: invalid x-api-key"})
    assert of_type(events, AgentError) == [AgentError("401 Unauthorized: invalid x-api-key", kind="auth")]
    assert final(events) == FinalResult(None, is_error=True)


def test_a_grok_build_run_stopped_by_the_turn_limit_is_an_error() -> None:
    events = parse({**BUILD_RESULT, "stopReason": "max_turn_requests"})
    assert [error.kind for error in of_type(events, AgentError)] == ["max_turns"]
    assert final(events).is_error


def test_content_parts_are_joined_into_text() -> None:
    parts = [{"type": "text", "text": "a"}, {"type": "image"}, {"type": "text", "text": "b"}]
    events = parse(assistant(parts))
    assert of_type(events, Text) == [Text("ab")]
    assert final(events).text == "ab"


@pytest.mark.parametrize(
    "obj",
    [
        assistant(["not a part", 3, None]),
        assistant(17),
        assistant(None, tool_calls="create_file"),
        assistant(None, tool_calls=[None, {"function": "x"}, {"function": {"name": 3}}]),
        {"role": ["assistant"], "content": "x"},
        {"type": ["error"]},
        {"type": "text", "text": "streaming-json is not parsed yet"},
        {"sessionId": 5, "text": ["x"], "usage": [1, 2]},
        [1, 2, 3],
    ],
)
def test_json_of_the_wrong_shape_is_raw_text(obj: object) -> None:
    events = parse(obj)
    assert events[0] == RawText("stdout", json.dumps(obj))
    assert final(events).is_error is False


@pytest.mark.parametrize(
    "line",
    [
        "not json",
        "",
        "[" * 100_000,
        '{"role": "assistant", "content": "x"',
        '{"sessionId": "s", "usage": {"input_tokens": ' + "9" * 5000 + "}}",
    ],
)
def test_undecodable_lines_are_raw_text(line: str) -> None:
    events = parse_lines([line])
    assert events[0] == RawText("stdout", line)


def test_hostile_numbers_and_argument_strings_never_raise() -> None:
    huge = 10**400
    bad_usage = {"input_tokens": huge, "output_tokens": -3, "cache_read_input_tokens": 0.5}
    events = parse(
        assistant("", tool_calls=[call("create_file", "{not json"), call("create_file", "[" * 100_000)]),
        assistant("", tool_calls=[call("create_file", '["a.py"]'), call("create_file", {"path": 7})]),
        {**BUILD_RESULT, "usage": bad_usage},
        {**BUILD_RESULT, "total_cost_usd": huge, "total_cost_usd_ticks": huge},
    )
    assert [tool.input for tool in of_type(events, ToolCall)] == [{}, {}, {}, {"path": 7}]
    assert of_type(events, FileChange) == []
    assert of_type(events, UsageReport)[0].usage == Usage(input_tokens=huge)
    assert final(events).cost_usd is None


@pytest.mark.parametrize("cost", [float("inf"), -1.0, True, "0.5"])
def test_a_cost_that_is_not_a_finite_non_negative_number_is_no_cost(cost: object) -> None:
    result = {key: value for key, value in BUILD_RESULT.items() if key != "total_cost_usd_ticks"}
    assert final(parse({**result, "total_cost_usd": cost})).cost_usd is None
