"""The Codex CLI parser against captured `codex exec --json` runs, and against hostile lines."""

from __future__ import annotations

import json

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
from outpost.agents.parsers.codex import CodexOutputParser, error_kind
from tests.unit.agent_outputs import FIXTURES

# The fake server's two calls: input 1111 + 1555 uncached, 333 + 777 cached; output 22 + 66.
FIXTURE_USAGE = Usage(input_tokens=2666, output_tokens=88, cache_read_tokens=1110, cache_write_tokens=0)
AUTH_401 = "unexpected status 401 Unauthorized: fake 401, url: http://127.0.0.1:8765/v1/responses"


def parse_lines(lines: list[str]) -> list[AgentEvent]:
    parser = CodexOutputParser()
    events = [event for line in lines for event in parser.feed("stdout", line)]
    return events + parser.finish()


def parse_events(*events: object) -> list[AgentEvent]:
    return parse_lines([json.dumps(event) for event in events])


def parse_fixture(name: str) -> list[AgentEvent]:
    return parse_lines((FIXTURES / name).read_text().splitlines())


def final(events: list[AgentEvent]) -> FinalResult:
    assert isinstance(events[-1], FinalResult)
    assert not any(isinstance(event, FinalResult) for event in events[:-1])
    return events[-1]


THREAD = {"type": "thread.started", "thread_id": "t-1"}
DONE = {"type": "turn.completed", "usage": {"input_tokens": 10, "cached_input_tokens": 4, "output_tokens": 3}}


@pytest.mark.parametrize(
    ("name", "thread_id"),
    [
        ("codex-exec-json-gpt55.jsonl", "01a1fe5b-1091-7453-9f64-90102587ccf6"),
        ("codex-exec-json-gpt61sol-codemode.jsonl", "01a1fe5e-259d-7e12-b4aa-aaa43b93e474"),
    ],
)
def test_a_successful_run_gives_the_file_the_message_and_the_usage(name: str, thread_id: str) -> None:
    assert parse_fixture(name) == [
        FileChange("/workspace/hello.txt", "add"),
        Text("DONE: wrote the file."),
        UsageReport(FIXTURE_USAGE),
        FinalResult("DONE: wrote the file.", False, FIXTURE_USAGE, None, thread_id),
    ]


def test_a_401_run_is_an_auth_error_reported_once_per_attempt() -> None:
    events = parse_fixture("codex-exec-json-401.jsonl")
    errors = [event for event in events if isinstance(event, AgentError)]
    assert len(errors) == 6  # five retry notices, then the fatal error; turn.failed repeats the last
    assert {error.kind for error in errors} == {"auth"}
    assert errors[-1].message == AUTH_401
    assert final(events) == FinalResult(None, True, None, None, "01a1fe5b-bc1d-7f83-a104-d371314326ef")
    assert not any(isinstance(event, RawText) for event in events)


def test_no_output_at_all_is_a_failed_run_without_text() -> None:
    assert parse_lines([]) == [FinalResult(None, True, None, None, None)]


def test_a_retry_that_recovers_does_not_fail_the_run() -> None:
    notice = {"type": "error", "message": "Reconnecting... 1/5 (stream disconnected before completion)"}
    events = parse_events(THREAD, notice, DONE)
    assert events[0] == AgentError(notice["message"], "provider_error")
    assert final(events).is_error is False


def test_a_fatal_error_fails_the_run_even_when_the_turn_completes() -> None:
    events = parse_events(THREAD, {"type": "error", "message": "boom"}, DONE)
    assert AgentError("boom", None) in events
    assert final(events).is_error is True


def test_a_failed_turn_with_its_own_message_is_reported() -> None:
    events = parse_events({"type": "turn.failed", "error": {"message": "You've hit your usage limit."}})
    assert events == [AgentError("You've hit your usage limit.", "quota"), FinalResult(None, True)]


def test_usage_leaves_cached_and_cache_written_input_out_of_input_tokens() -> None:
    usage = {"input_tokens": 1000, "cached_input_tokens": 300, "cache_write_input_tokens": 200}
    events = parse_events({"type": "turn.completed", "usage": usage | {"output_tokens": 50}})
    assert events[0] == UsageReport(Usage(500, 50, 300, 200))


def test_the_last_turn_report_is_the_run_usage_because_codex_reports_running_totals() -> None:
    first = {"type": "turn.completed", "usage": {"input_tokens": 100, "output_tokens": 10}}
    second = {"type": "turn.completed", "usage": {"input_tokens": 250, "output_tokens": 30}}
    assert final(parse_events(first, second)).usage == Usage(250, 30)


def test_the_final_text_is_the_last_agent_message() -> None:
    first = {"type": "item.completed", "item": {"id": "a", "type": "agent_message", "text": "one"}}
    last = {"type": "item.completed", "item": {"id": "b", "type": "agent_message", "text": "two"}}
    reasoning = {"type": "item.completed", "item": {"id": "c", "type": "reasoning", "text": "hmm"}}
    events = parse_events(THREAD, first, last, reasoning, DONE)
    assert [event for event in events if isinstance(event, Text)] == [Text("one"), Text("two")]
    assert final(events).text == "two"


def test_a_plan_is_the_final_text_only_when_there_is_no_message() -> None:
    plan = {"type": "item.completed", "item": {"id": "p", "type": "plan", "text": "1. do it"}}
    assert final(parse_events(plan, DONE)).text == "1. do it"


def test_a_command_is_one_tool_call_announced_when_it_starts() -> None:
    item = {"id": "item_3", "type": "command_execution", "command": "bash -lc ls", "status": "in_progress"}
    done = item | {"aggregated_output": "a\n", "exit_code": 0, "status": "completed"}
    events = parse_events({"type": "item.started", "item": item}, {"type": "item.completed", "item": done})
    assert events[:-1] == [ToolCall("shell", {"command": "bash -lc ls"}, "item_3")]


def test_a_command_seen_only_completed_is_still_a_tool_call() -> None:
    done = {"id": "item_4", "type": "command_execution", "command": "true", "status": "completed"}
    assert parse_events({"type": "item.completed", "item": done})[0] == ToolCall(
        "shell", {"command": "true"}, "item_4"
    )


def test_an_mcp_call_is_named_by_server_and_tool() -> None:
    item = {"id": "m", "type": "mcp_tool_call", "server": "docs", "tool": "search", "arguments": {"q": "x"}}
    assert parse_events({"type": "item.started", "item": item})[0] == ToolCall(
        "mcp__docs__search", {"q": "x"}, "m"
    )


def test_a_failed_patch_is_an_attempt_not_a_file_change() -> None:
    changes = [{"path": "a.py", "kind": "update"}]
    item = {"id": "f", "type": "file_change", "changes": changes, "status": "failed"}
    events = parse_events({"type": "item.completed", "item": item})
    assert events[0] == ToolCall("apply_patch", {"paths": ["a.py"], "status": "failed"}, "f")
    assert not any(isinstance(event, FileChange) for event in events)


def test_file_changes_map_every_kind_and_skip_entries_without_a_path() -> None:
    changes = [
        {"path": "new.py", "kind": "add"},
        {"path": "old.py", "kind": "delete"},
        {"path": "odd.py", "kind": {"update": {"move_path": None}}},
        {"kind": "add"},
        "not a change",
    ]
    item = {"id": "f", "type": "file_change", "changes": changes, "status": "completed"}
    assert parse_events({"type": "item.completed", "item": item})[:-1] == [
        FileChange("new.py", "add"),
        FileChange("old.py", "delete"),
        FileChange("odd.py", "update"),
    ]


def test_an_error_item_is_reported_without_failing_the_run() -> None:
    note = {"type": "item.completed", "item": {"id": "e", "type": "error", "message": "model rerouted"}}
    events = parse_events(THREAD, note, DONE)
    assert events[0] == AgentError("model rerouted", None)
    assert final(events).is_error is False


def test_stderr_lines_are_kept_as_raw_text() -> None:
    parser = CodexOutputParser()
    assert parser.feed("stderr", '{"type":"error","message":"x"}') == [
        RawText("stderr", '{"type":"error","message":"x"}')
    ]


@pytest.mark.parametrize(
    "line",
    [
        "Reading additional input from stdin...",
        '{"type": "item.completed", "item": ',
        "[1, 2]",
        "",
        '{"type": "thread.forked"}',
        '{"type": ["item.completed"]}',
        '{"no_type": 1}',
        '{"type": "item.completed", "item": "agent_message"}',
        '{"type": "item.completed", "item": null}',
        '{"type": "item.completed", "item": {"id": "x"}}',
        '{"type": "item.completed", "item": {"id": "x", "type": "hologram"}}',
        '{"type": "item.started", "item": {"id": "x", "type": {"nested": true}}}',
        '{"type": "item.completed", "item": {"id": "x", "type": "agent_message", "text": 42}}',
        '{"type": "item.completed", "item": {"id": "x", "type": "file_change", "changes": "a.py"}}',
        '{"type": "turn.completed", "usage": "lots"}',
        '{"type": "thread.started", "thread_id": 7}',
    ],
)
def test_lines_that_are_not_codex_events_are_kept_as_raw_text(line: str) -> None:
    parser = CodexOutputParser()
    assert parser.feed("stdout", line) == [RawText("stdout", line)]


def test_token_counts_of_the_wrong_type_count_as_zero() -> None:
    usage = {
        "input_tokens": "3776",
        "cached_input_tokens": -5,
        "cache_write_input_tokens": True,
        "output_tokens": 8.5,
    }
    events = parse_events({"type": "turn.completed", "usage": usage})
    assert events[0] == UsageReport(Usage())


def test_cached_tokens_above_the_input_never_make_input_negative() -> None:
    usage = {"input_tokens": 5, "cached_input_tokens": 10**30, "output_tokens": 10**30}
    events = parse_events({"type": "turn.completed", "usage": usage})
    assert events[0] == UsageReport(Usage(0, 10**30, 10**30, 0))


def test_malformed_events_of_known_types_never_raise() -> None:
    events = parse_events(
        {"type": "error"},
        {"type": "error", "message": ["not", "text"]},
        {"type": "turn.failed", "error": "just a string"},
        {"type": "item.started", "item": {"type": "command_execution", "id": ["x"], "command": {}}},
        {"type": "item.completed", "item": {"type": "mcp_tool_call", "arguments": "raw"}},
        {"type": "item.completed", "item": {"type": "error", "message": None}},
        {"type": "request_user_input", "call_id": 3},
    )
    assert AgentError("unknown error", None) in events
    assert ToolCall("mcp__?__?", {"arguments": "raw"}, None) in events
    assert final(events) == FinalResult(None, True, None, None, None)


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        (AUTH_401, "auth"),
        ("unexpected status 403 Forbidden: nope", "auth"),
        ("Missing environment variable: `OPENAI_API_KEY`.", "auth"),
        ("exceeded retry limit, last status: 429 Too Many Requests", "quota"),
        ("Quota exceeded. Check your plan and billing details.", "quota"),
        ("unexpected status 429 Too Many Requests: slow down, api key sk-abc", "quota"),
        ("unexpected status 502 Bad Gateway: upstream, url: http://10.0.0.5:8500/v1", "provider_error"),
        ("stream disconnected before completion: error sending request", "provider_error"),
        (
            "We\u2019re currently experiencing high demand, which may cause temporary errors.",
            "provider_error",
        ),
        ("Codex ran out of room in the model's context window.", None),
        ("turn failed", None),
    ],
)
def test_error_messages_are_classified(message: str, kind: str | None) -> None:
    assert error_kind(message) == kind
