"""Claude Code's captured outputs become the events they mean; hostile lines never raise."""

from __future__ import annotations

import json
from typing import Any

import pytest

from outpost.agents.events import (
    AgentError,
    AgentEvent,
    FileChange,
    FinalResult,
    RawText,
    Text,
    ToolCall,
    Usage,
    UsageReport,
)
from outpost.agents.parsers.claude import ClaudeOutputParser
from tests.unit.agent_outputs import FIXTURES

HELLO_INPUT = {"file_path": "/workspace/hello.txt", "content": "hello from fake llm\n"}


def _parse(lines: list[str]) -> list[AgentEvent]:
    parser = ClaudeOutputParser()
    events = [event for line in lines for event in parser.feed("stdout", line)]
    return events + parser.finish()


def _fixture(name: str) -> list[AgentEvent]:
    return _parse((FIXTURES / name).read_text(encoding="utf-8").splitlines())


def _line(obj: dict[str, Any]) -> str:
    return json.dumps(obj)


def _result(**fields: Any) -> str:
    return _line({"type": "result", **fields})


def _assistant(content: object, message_id: str | None = "msg_1", **extra: Any) -> str:
    message = {"id": message_id, "model": "m", "content": content, **extra}
    return _line({"type": "assistant", "message": message})


def _tool_result(call_id: str, detail: object = None, *, is_error: bool = False) -> str:
    block = {"type": "tool_result", "tool_use_id": call_id, "content": "ok", "is_error": is_error}
    return _line({"type": "user", "message": {"content": [block]}, "tool_use_result": detail})


def test_stream_json_run_gives_text_tool_call_file_change_usage_and_result() -> None:
    assert _fixture("claude-stream-json.jsonl") == [
        Text("I'll write the file."),
        UsageReport(Usage(1111, 1, 333, 44), "claude-sonnet-5-5"),
        ToolCall("Write", HELLO_INPUT, "toolu_fake4"),
        FileChange("/workspace/hello.txt", "add"),
        Text("DONE: wrote the file."),
        UsageReport(Usage(1555, 1, 777, 88), "claude-sonnet-5-5"),
        FinalResult(
            text="DONE: wrote the file.",
            is_error=False,
            usage=Usage(2666, 88, 1110, 132),
            cost_usd=0.006652999999999999,
            session_id="385d8a01-69f6-4aac-9fb7-803f0ba72f55",
        ),
    ]


def test_partial_messages_are_not_counted_twice() -> None:
    assert _fixture("claude-stream-json-partial.jsonl") == [
        Text("I'll write the file."),
        UsageReport(Usage(1111, 1, 333, 44), "claude-haiku-5-5"),
        ToolCall("Write", HELLO_INPUT, "toolu_fake2"),
        FileChange("/workspace/hello.txt", "add"),
        Text("DONE: wrote the file."),
        UsageReport(Usage(1555, 1, 777, 88), "claude-haiku-5-5"),
        FinalResult(
            text="DONE: wrote the file.",
            is_error=False,
            usage=Usage(2666, 88, 1110, 132),
            cost_usd=0.00033820000000000003,
            session_id="5319bd34-0b47-4749-90f4-ec6bf5a497a5",
        ),
    ]


def test_http_401_is_an_auth_error_even_with_subtype_success() -> None:
    message = "Failed to authenticate. API Error: 401 fake 401"
    assert _fixture("claude-json-401.json") == [
        AgentError(message, "auth"),
        FinalResult(message, True, Usage(), 0.0, "7b4e7225-cd76-4772-abca-2d29c79a0888"),
    ]


def test_connection_refused_is_a_provider_error() -> None:
    message = "API Error: Connection refused — a firewall or proxy may be blocking it (ECONNREFUSED)"
    assert _fixture("claude-json-connrefused.json") == [
        AgentError(message, "provider_error"),
        FinalResult(message, True, Usage(), 0.0, "45415546-cd22-4e97-b837-c05dc997a2d6"),
    ]


def test_max_turns_takes_its_message_from_errors() -> None:
    assert _fixture("claude-json-max-turns.json") == [
        AgentError("Reached maximum number of turns (1)", "max_turns"),
        FinalResult(
            None,
            True,
            Usage(1111, 22, 333, 44),
            0.00013093000000000002,
            "e9149a57-9ffe-421e-8b5a-809559107934",
        ),
    ]


def test_pretty_printed_json_is_buffered_until_complete() -> None:
    raw = (FIXTURES / "claude-json-401.json").read_text(encoding="utf-8")
    parser = ClaudeOutputParser()
    lines = json.dumps(json.loads(raw), indent=2).splitlines()
    assert all(parser.feed("stdout", line) == [] for line in lines[:-1])
    assert [type(e) for e in parser.feed("stdout", lines[-1])] == [AgentError, FinalResult]
    assert parser.finish() == []


def test_a_long_line_cut_into_pieces_is_joined_again() -> None:
    lines = (FIXTURES / "claude-stream-json.jsonl").read_text(encoding="utf-8").splitlines()
    last = lines[-1]
    pieces = [last[i : i + 100] for i in range(0, len(last), 100)]
    assert _parse(lines[:-1] + pieces) == _fixture("claude-stream-json.jsonl")


def test_a_stray_brace_line_does_not_swallow_the_lines_after_it() -> None:
    done = _result(result="ok", is_error=False)
    assert _parse(["{ not json", "  more", done]) == [
        RawText("stdout", "{ not json"),
        RawText("stdout", "  more"),
        FinalResult("ok"),
    ]


def test_an_unfinished_object_comes_out_raw_at_finish() -> None:
    assert _parse(['{"type": "result",', '  "result": "cut']) == [
        RawText("stdout", '{"type": "result",'),
        RawText("stdout", '  "result": "cut'),
    ]


@pytest.mark.parametrize(
    "line",
    [
        "not json",
        "",
        "[1, 2]",
        '{"type": "brand_new"}',
        '{"type": ["result"]}',
        "[" * 100_000,
        '{"no": "type"}',
    ],
)
def test_lines_that_are_not_known_events_stay_raw(line: str) -> None:
    assert _parse([line]) == [RawText("stdout", line)]


def test_stderr_lines_stay_raw_even_when_json() -> None:
    line = _result(result="x")
    assert ClaudeOutputParser().feed("stderr", line) == [RawText("stderr", line)]


def test_known_silent_types_give_nothing() -> None:
    lines = ['{"type": "system", "subtype": "init"}', '{"type": "user"}', '{"type": "stream_event"}']
    assert _parse(lines) == []


def test_result_with_wrong_typed_fields_keeps_what_is_usable() -> None:
    line = _result(result=5, is_error="yes", subtype=3, usage=[1], total_cost_usd="0.5", session_id=7)
    assert _parse([line]) == [FinalResult(None, False, None, None, None)]


def test_result_with_hostile_numbers() -> None:
    usage = {"input_tokens": -5, "output_tokens": 10**30, "cache_read_input_tokens": 1.5}
    huge_cost = _result(
        result="ok", usage=usage | {"cache_creation_input_tokens": True}, total_cost_usd=10**400
    )
    assert _parse([huge_cost]) == [FinalResult("ok", False, Usage(0, 10**30, 0, 0), None)]
    for cost in ("1e999", "-1", "NaN"):
        assert _parse([f'{{"type": "result", "total_cost_usd": {cost}}}']) == [FinalResult(None)]


@pytest.mark.parametrize(
    ("fields", "kind"),
    [
        ({"api_error_status": 429, "result": "API Error: 429"}, "quota"),
        ({"api_error_status": 403, "result": "forbidden"}, "auth"),
        ({"api_error_status": 500, "result": "API Error: 500"}, "provider_error"),
        ({"api_error_status": 529, "api_error_type": "overloaded_error", "result": "x"}, "provider_error"),
        ({"api_error_status": 400, "result": "Your credit balance is too low"}, "quota"),
        ({"api_error_status": None, "api_error": "authentication_failed", "result": "x"}, "auth"),
        ({"api_error": "socket_hang_up", "result": "x"}, "provider_error"),
        ({"api_error_status": "401", "api_error_type": "rate_limit_error", "result": "x"}, "quota"),
        ({"api_error_status": 404, "result": "model not found"}, None),
    ],
)
def test_error_kinds(fields: dict[str, Any], kind: str | None) -> None:
    events = _parse([_result(is_error=True, subtype="success", **fields)])
    assert events[0] == AgentError(fields["result"], kind)
    assert isinstance(events[1], FinalResult)
    assert events[1].is_error


def test_error_subtype_without_is_error_is_still_an_error() -> None:
    line = _result(subtype="error_max_budget_usd", errors=["Reached budget", 3])
    assert _parse([line]) == [AgentError("Reached budget", None), FinalResult(None, True)]
    assert _parse([_result(is_error=True)])[0] == AgentError(
        "Claude Code reported an error without a message"
    )


def test_assistant_content_not_a_list() -> None:
    assert _parse([_assistant("plain prose")]) == [Text("plain prose")]
    assert _parse([_assistant(42, usage={"input_tokens": 7})]) == [UsageReport(Usage(7), "m")]
    assert _parse(['{"type": "assistant", "message": "hi"}']) == [
        RawText("stdout", '{"type": "assistant", "message": "hi"}')
    ]


def test_malformed_blocks_are_skipped() -> None:
    blocks = [7, {"type": "text", "text": 3}, {"type": "tool_use", "name": 1}, {"type": "thinking"}]
    tool = {"type": "tool_use", "name": "Bash", "input": ["ls"], "id": 9}
    assert _parse([_assistant([*blocks, tool])]) == [ToolCall("Bash", {}, None)]


def test_usage_is_reported_once_per_message_id() -> None:
    usage = {"input_tokens": 10, "output_tokens": 2}
    first, second = _assistant([], usage=usage), _assistant([], usage=usage)
    unnamed = _assistant([], message_id=None, usage=usage)
    assert _parse([first, second, unnamed, unnamed]) == [UsageReport(Usage(10, 2), "m")] * 3


def test_failed_edit_reports_no_file_change_and_successful_ones_do() -> None:
    edit = {"type": "tool_use", "name": "Edit", "id": "t1", "input": {"file_path": "/w/a.py"}}
    notebook = {
        "type": "tool_use",
        "name": "NotebookEdit",
        "id": "t2",
        "input": {"notebook_path": "/w/n.ipynb"},
    }
    rewrite = {"type": "tool_use", "name": "Write", "id": "t3", "input": {"file_path": "/w/b.txt"}}
    lines = [
        _assistant([edit, notebook, rewrite]),
        _tool_result("t1", "Error: String to replace not found", is_error=True),
        _tool_result("t2", {"cell_id": "c1"}),
        _tool_result("t3", {"type": "update", "filePath": "/w/b.txt"}),
        _tool_result("t3", {"type": "update", "filePath": "/w/b.txt"}),
    ]
    changes = [event for event in _parse(lines) if isinstance(event, FileChange)]
    assert changes == [FileChange("/w/n.ipynb", "update"), FileChange("/w/b.txt", "update")]


def test_write_without_a_call_id_reports_its_change_at_once() -> None:
    write = {"type": "tool_use", "name": "Write", "input": {"file_path": "/w/c.txt"}}
    assert _parse([_assistant([write])]) == [
        ToolCall("Write", {"file_path": "/w/c.txt"}),
        FileChange("/w/c.txt", "update"),
    ]


def test_user_lines_with_odd_shapes_give_nothing() -> None:
    write = {"type": "tool_use", "name": "Write", "id": "t1", "input": {"file_path": "/w/c.txt"}}
    odd = [
        '{"type": "user", "message": {"content": "text"}}',
        '{"type": "user", "message": {"content": [1]}}',
    ]
    assert _parse([_assistant([write]), *odd])[1:] == []
