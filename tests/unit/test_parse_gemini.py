"""Gemini CLI output (stream-json and json) becomes typed events; captured runs and hostile input."""

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
    Stream,
    Text,
    ToolCall,
    Usage,
    UsageReport,
)
from outpost.agents.parsers.gemini import GeminiOutputParser
from tests.unit.agent_outputs import FIXTURES

WRITE_ID = "write_file__write_file_1795268982505_0"
WRITE_PARAMS = {"file_path": "/workspace/hello.txt", "content": "hello from fake llm\n"}


def _fixture(name: str) -> list[str]:
    return (FIXTURES / name).read_text().splitlines()


def _run(lines: list[str], stream: Stream = "stdout") -> list[AgentEvent]:
    parser = GeminiOutputParser()
    events = [event for line in lines for event in parser.feed(stream, line)]
    return events + parser.finish()


def _lines(*events: dict[str, Any]) -> list[str]:
    return [json.dumps(event) for event in events]


def _of(kind: type[Any], events: list[AgentEvent]) -> list[Any]:
    return [event for event in events if isinstance(event, kind)]


def test_stream_json_run_gives_call_change_text_usage_and_result() -> None:
    usage = Usage(input_tokens=2666, output_tokens=88 + 14, cache_read_tokens=1110)
    assert _run(_fixture("gemini-stream-json.jsonl")) == [
        ToolCall("write_file", WRITE_PARAMS, WRITE_ID),
        FileChange("/workspace/hello.txt", "add"),
        Text("DONE: wrote the file."),
        UsageReport(usage, model="fake"),
        FinalResult("DONE: wrote the file.", usage=usage, session_id="ac44f73d-bb38-4513-bb30-531806ee2ab7"),
    ]


def test_stream_json_max_turns_is_an_error_of_kind_max_turns() -> None:
    events = _run(_fixture("gemini-stream-json-maxturns.jsonl"))
    usage = Usage(input_tokens=1111, output_tokens=22 + 7, cache_read_tokens=333)
    assert events[:3] == [
        ToolCall("write_file", WRITE_PARAMS, "write_file__write_file_1795269001351_0"),
        FileChange("/workspace/hello.txt", "add"),
        UsageReport(usage, model="fake"),
    ]
    [error] = _of(AgentError, events)
    assert error.kind == "max_turns"
    assert error.message.startswith("Reached max session turns")
    assert events[-1] == FinalResult(
        None, is_error=True, usage=usage, session_id="263fbbce-eee1-4979-942e-b64016dea30e"
    )


def test_json_document_over_many_lines_gives_summed_usage_and_result() -> None:
    parser = GeminiOutputParser()
    lines = _fixture("gemini-json.json")
    before_close = [event for line in lines[:-1] for event in parser.feed("stdout", line)]
    events = parser.feed("stdout", lines[-1])
    # prompt 6108 includes cached 1887; output is candidates 154 plus thoughts 21.
    usage = Usage(input_tokens=4221, output_tokens=175, cache_read_tokens=1887)
    assert before_close == []
    assert events == [
        UsageReport(usage, model="fake"),
        Text("DONE: wrote the file."),
        FinalResult("DONE: wrote the file.", usage=usage, session_id="3e7fa137-7daa-4582-898e-ae0efefd2a24"),
    ]
    assert parser.finish() == []


def test_json_usage_is_summed_over_models_and_names_none() -> None:
    router = {"tokens": {"prompt": 30, "cached": 10, "candidates": 5, "thoughts": 1}}
    main = {"tokens": {"prompt": 300, "input": 200, "cached": 100, "candidates": 50}}
    events = _run(_lines({"response": "ok", "stats": {"models": {"flash-lite": router, "pro": main}}}))
    assert events[0] == UsageReport(Usage(input_tokens=220, output_tokens=56, cache_read_tokens=110))


def test_json_401_on_stderr_is_an_auth_error_after_the_noise() -> None:
    lines = _fixture("gemini-json-401.stderr.txt")
    events = _run(lines, "stderr")
    noise = lines[: lines.index("{")]
    assert events[: len(noise)] == [RawText("stderr", line) for line in noise]
    assert events[len(noise) :] == [
        AgentError("fake 401 (401 UNAUTHENTICATED)", kind="auth"),
        FinalResult(None, is_error=True, session_id="1fcb7fc8-caf3-485c-979d-fe45c1c639d4"),
    ]


def test_final_text_is_the_last_turns_pieces_joined() -> None:
    events = _run(
        _lines(
            {"type": "message", "role": "assistant", "content": "Writing it.", "delta": True},
            {"type": "tool_use", "tool_name": "read_file", "tool_id": "t1", "parameters": {}},
            {"type": "message", "role": "assistant", "content": "DONE: ", "delta": True},
            {"type": "message", "role": "assistant", "content": "all good.", "delta": True},
            {"type": "result", "status": "success"},
        )
    )
    assert _of(Text, events) == [Text("Writing it."), Text("DONE: "), Text("all good.")]
    assert events[-1] == FinalResult("DONE: all good.")


def test_file_changes_follow_successful_tools_only() -> None:
    def use(tool_id: str, tool: str, **params: str) -> dict[str, Any]:
        return {"type": "tool_use", "tool_name": tool, "tool_id": tool_id, "parameters": params}

    def result(tool_id: str, status: str = "success") -> dict[str, Any]:
        return {"type": "tool_result", "tool_id": tool_id, "status": status}

    events = _run(
        _lines(
            use("a", "write_file", file_path="x.py"),
            result("a"),
            use("b", "write_file", file_path="x.py"),
            result("b"),
            use("c", "replace", file_path="y.py", old_string="old", new_string="new"),
            result("c", "error"),
            use("d", "replace", file_path="z.py", old_string="", new_string="new"),
            result("d"),
            use("e", "replace", file_path="y.py", old_string="old", new_string="new"),
            result("e"),
            use("f", "run_shell_command", command="rm -rf x"),
            result("f"),
            result("unknown-id"),
        )
    )
    assert _of(FileChange, events) == [
        FileChange("x.py", "add"),
        FileChange("x.py", "update"),
        FileChange("z.py", "add"),
        FileChange("y.py", "update"),
    ]
    assert _of(AgentError, events) == []


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        (
            '[API Error: {"error":{"code":429,"status":"RESOURCE_EXHAUSTED"}}]\n... another /auth method',
            "quota",
        ),
        ("[API Error: API key not valid. (Status: INVALID_ARGUMENT)]", "auth"),
        ("[API Error: fake 403 (Status: PERMISSION_DENIED)]", "auth"),
        ("[API Error: overloaded (Status: UNAVAILABLE)] 503", "provider_error"),
        ("[API Error: fetch failed] connect ECONNREFUSED 127.0.0.1:8765", "provider_error"),
        ("Something else went wrong", None),
    ],
)
def test_result_errors_are_classified(message: str, kind: str | None) -> None:
    events = _run(
        _lines({"type": "result", "status": "error", "error": {"type": "Error", "message": message}})
    )
    assert _of(AgentError, events) == [AgentError(message, kind)]
    assert events[-1] == FinalResult(None, is_error=True)


def test_error_events_fail_the_run_only_at_error_severity() -> None:
    warning = _run(_lines({"type": "error", "severity": "warning", "message": "Loop detected, stopping"}))
    assert warning == [AgentError("Loop detected, stopping", None)]
    fatal = _run(_lines({"type": "error", "severity": "error", "message": "Maximum session turns exceeded"}))
    assert fatal == [
        AgentError("Maximum session turns exceeded", "max_turns"),
        FinalResult(None, is_error=True),
    ]


def test_json_mode_exit_codes_name_the_kind() -> None:
    error = {"type": "FatalTurnLimitedError", "message": "Reached the limit", "code": 53}
    assert _run(_lines({"session_id": "s", "error": error}), "stderr")[0] == AgentError(
        "Reached the limit", "max_turns"
    )


def test_invalid_and_unknown_lines_are_raw_text() -> None:
    lines = [
        "not json",
        '{"type":"result"',
        "[1, 2]",
        '{"type":"brand_new_event"}',
        '{"type": 7}',
        '{"unrelated": true}',
        '{"type":"message","role":"assistant","content":["x"]}',
        '{"type":"tool_use","tool_id":"t"}',
        "}",
    ]
    assert _run(lines) == [RawText("stdout", line) for line in lines]


def test_uncached_input_is_prompt_minus_cached_when_input_is_not_reported() -> None:
    stats = {"total_tokens": 130, "input_tokens": 100, "output_tokens": 20, "cached": 40}
    events = _run(_lines({"type": "result", "status": "success", "stats": stats}))
    assert events[0] == UsageReport(Usage(input_tokens=60, output_tokens=30, cache_read_tokens=40))


def test_wrong_types_in_stats_count_as_zero() -> None:
    stats = {"total_tokens": "many", "input_tokens": -5, "output_tokens": True, "cached": None, "input": [1]}
    events = _run(_lines({"type": "result", "status": "success", "stats": stats}))
    assert events == [UsageReport(Usage()), FinalResult(None, usage=Usage())]
    models = {"m": {"tokens": {"prompt": "x", "candidates": 3.5}}, "n": [], "o": {"tokens": 4}}
    document = _run(_lines({"response": 5, "stats": {"models": models}}))
    assert document == [UsageReport(Usage()), FinalResult(None, usage=Usage())]


def test_tool_use_with_bad_parameters_keeps_the_call() -> None:
    events = _run(_lines({"type": "tool_use", "tool_name": "write_file", "tool_id": 3, "parameters": [1]}))
    assert events == [ToolCall("write_file", {}, None)]


def test_truncated_document_at_finish_comes_back_as_raw_lines() -> None:
    lines = _fixture("gemini-json.json")[:20]
    assert _run(lines) == [RawText("stdout", line) for line in lines]


def test_a_brace_that_closes_no_json_releases_its_lines() -> None:
    lines = ["{", "  status: 401", "}", '{"type":"init","session_id":"s"}']
    assert _run(lines, "stderr") == [RawText("stderr", line) for line in lines[:3]]


def test_an_endless_document_is_released_without_waiting_for_finish() -> None:
    parser = GeminiOutputParser()
    events = [event for _ in range(6000) for event in parser.feed("stdout", "{")]
    assert len(events) >= 5000
    assert all(isinstance(event, RawText) for event in events)


def test_every_truncation_of_the_captured_lines_is_survived() -> None:
    for name in ("gemini-stream-json.jsonl", "gemini-stream-json-maxturns.jsonl", "gemini-json.json"):
        parser = GeminiOutputParser()
        for line in _fixture(name):
            for end in range(len(line) + 1):
                parser.feed("stdout", line[:end])
        parser.finish()
