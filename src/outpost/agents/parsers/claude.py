"""Claude Code's output (`claude -p --output-format stream-json --verbose`, or `--output-format json`).

Both formats end with the same `result` object. Measured facts relied on (agent-clis.md §1.2, §1.5):

* One API message spans several `assistant` lines (one per content block) that repeat its `id` and
  `usage`, so usage is reported once per message id. `stream_event` deltas are ignored: the `assistant`
  lines repeat them whole.
* A file tool call may fail (an Edit's `old_string` not found is common): its change is reported when the
  `tool_result` arrives without `is_error`; Write's `tool_use_result.type` `create` means an added file.
* A 401 keeps `subtype: "success"` with `is_error: true`; the cause is in `api_error_status`,
  `api_error_type`, `api_error`, and the message in `result` (or `errors` for limits like max turns).
"""

from __future__ import annotations

import math
import re
from typing import Any, Literal

from outpost.agents.events import (
    AgentError,
    AgentEvent,
    ErrorKind,
    FileChange,
    FinalResult,
    RawText,
    Stream,
    Text,
    ToolCall,
    Usage,
    UsageReport,
    as_int,
    json_object,
    status_error_kind,
)

# Known stream-json types that say nothing about the outcome; other types stay visible as RawText.
SILENT_TYPES = frozenset(
    {"system", "user", "stream_event", "rate_limit_event", "tool_progress", "tool_use_summary", "keep_alive"}
)
# File-writing tools and the input key naming the file.
FILE_TOOLS = dict.fromkeys(("Write", "Edit", "MultiEdit"), "file_path") | {"NotebookEdit": "notebook_path"}
# A JSON object split over lines (pretty-printed, or a long line cut by the reader) is buffered up to this.
MAX_BUFFER_CHARS = 8 * 1024 * 1024

# How each API error `type` and, failing structured fields, the message's words map to an AgentError kind.
_TYPE_KINDS: dict[str, ErrorKind] = {
    "authentication_error": "auth",
    "permission_error": "auth",
    "rate_limit_error": "quota",
    "billing_error": "quota",
    "api_error": "provider_error",
    "overloaded_error": "provider_error",
}
_TEXT_KINDS: tuple[tuple[ErrorKind, re.Pattern[str]], ...] = (
    ("auth", re.compile(r"\b40[13]\b|authenticat|api key|unauthori[sz]ed", re.I)),
    ("quota", re.compile(r"\b429\b|rate.limit|quota|credit balance|billing", re.I)),
    ("provider_error", re.compile(r"\b5\d\d\b|connection|econn|timed out|timeout|overloaded", re.I)),
)


class ClaudeOutputParser:
    """Turns Claude Code's stdout/stderr lines into events; keeps only what spans lines."""

    def __init__(self) -> None:
        self._buffer: list[str] = []
        self._buffered_chars = 0
        self._reported_messages: set[str] = set()
        self._pending_writes: dict[str, str] = {}  # tool_use id -> path, until its tool_result arrives

    def feed(self, stream: Stream, line: str) -> list[AgentEvent]:
        if stream != "stdout":
            return [RawText(stream, line)]
        if self._buffer:
            return self._feed_buffered(line)
        obj = _parse(line)
        if obj is not None:
            return self._object(obj, [line])
        if line.lstrip().startswith("{"):
            self._buffer.append(line)
            self._buffered_chars = len(line)
            return []
        return [RawText("stdout", line)]

    def finish(self) -> list[AgentEvent]:
        """Parses what is still buffered; a tool call without a result reports no file change."""
        self._pending_writes.clear()
        if not self._buffer:
            return []
        obj = _parse("".join(self._buffer))
        return self._object(obj, self._take_buffer()) if obj is not None else self._flush()

    def _feed_buffered(self, line: str) -> list[AgentEvent]:
        """Joins pieces with nothing between them: right for pretty-printed JSON and for cut lines alike."""
        self._buffer.append(line)
        self._buffered_chars += len(line)
        if line.rstrip().endswith("}"):  # an object can only be complete on a line ending its brace
            obj = _parse("".join(self._buffer))
            if obj is not None:
                return self._object(obj, self._take_buffer())
        if line.startswith("{") and (alone := _parse(line)) is not None:
            # A whole object at column 0 is a new line of output: what was buffered was not JSON.
            self._buffer.pop()
            return [*self._flush(), *self._object(alone, [line])]
        return self._flush() if self._buffered_chars > MAX_BUFFER_CHARS else []

    def _take_buffer(self) -> list[str]:
        lines, self._buffer, self._buffered_chars = self._buffer, [], 0
        return lines

    def _flush(self) -> list[AgentEvent]:
        return [RawText("stdout", line) for line in self._take_buffer()]

    def _object(self, obj: dict[str, Any], lines: list[str]) -> list[AgentEvent]:
        kind = obj.get("type")
        if kind == "assistant" and isinstance(obj.get("message"), dict):
            return self._assistant(obj["message"])
        if kind == "user":
            return self._user(obj)
        if kind == "result":
            return _result(obj)
        if isinstance(kind, str) and kind in SILENT_TYPES:
            return []
        return [RawText("stdout", line) for line in lines]

    def _assistant(self, message: dict[str, Any]) -> list[AgentEvent]:
        content = message.get("content")
        blocks = content if isinstance(content, list) else [{"type": "text", "text": content}]
        events = [event for block in blocks for event in self._block(block)]
        usage = message.get("usage")
        message_id = message.get("id")
        if isinstance(usage, dict) and not self._already_reported(message_id):
            model = message.get("model")
            events.append(UsageReport(_usage(usage), model if isinstance(model, str) else None))
        return events

    def _already_reported(self, message_id: object) -> bool:
        """True for a message id seen before; a message without an id cannot repeat, so it never is."""
        if not isinstance(message_id, str):
            return False
        seen = message_id in self._reported_messages
        self._reported_messages.add(message_id)
        return seen

    def _block(self, block: object) -> list[AgentEvent]:
        if not isinstance(block, dict):
            return []
        if block.get("type") == "text":
            text = block.get("text")
            return [Text(text)] if isinstance(text, str) and text else []
        if block.get("type") == "tool_use" and isinstance(block.get("name"), str):
            return self._tool_use(block["name"], block.get("input"), block.get("id"))
        return []

    def _tool_use(self, name: str, raw_input: object, raw_id: object) -> list[AgentEvent]:
        tool_input = raw_input if isinstance(raw_input, dict) else {}
        call_id = raw_id if isinstance(raw_id, str) else None
        call = ToolCall(name, tool_input, call_id)
        path = tool_input.get(FILE_TOOLS[name]) if name in FILE_TOOLS else None
        if not isinstance(path, str) or not path:
            return [call]
        if call_id is None:  # no result can be matched to it: report the change as requested
            return [call, FileChange(path, "update")]
        self._pending_writes[call_id] = path
        return [call]

    def _user(self, obj: dict[str, Any]) -> list[AgentEvent]:
        """Tool results: the file changes that succeeded. A user line is otherwise silent."""
        message = obj.get("message")
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list) or not self._pending_writes:
            return []
        changes = (self._file_change(block, obj.get("tool_use_result")) for block in content)
        return [change for change in changes if change is not None]

    def _file_change(self, block: object, detail: object) -> FileChange | None:
        if not isinstance(block, dict) or block.get("type") != "tool_result":
            return None
        call_id = block.get("tool_use_id")
        path = self._pending_writes.pop(call_id, None) if isinstance(call_id, str) else None
        if path is None or block.get("is_error") is True:
            return None
        return FileChange(path, _change_kind(path, detail))


def _parse(text: str) -> dict[str, Any] | None:
    """`json_object`, also safe from input nested deep enough to exhaust the recursion limit."""
    try:
        return json_object(text)
    except RecursionError:
        return None


def _change_kind(path: str, detail: object) -> Literal["add", "update"]:
    created = isinstance(detail, dict) and detail.get("type") == "create" and detail.get("filePath") == path
    return "add" if created else "update"


def _usage(raw: dict[str, Any]) -> Usage:
    return Usage(
        input_tokens=as_int(raw.get("input_tokens")),
        output_tokens=as_int(raw.get("output_tokens")),
        cache_read_tokens=as_int(raw.get("cache_read_input_tokens")),
        cache_write_tokens=as_int(raw.get("cache_creation_input_tokens")),
    )


def _string(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _cost(value: object) -> float | None:
    """A finite, non-negative number of dollars, or None (an int too big for a float is not a cost)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        cost = float(value)
    except OverflowError:
        return None
    return cost if math.isfinite(cost) and cost >= 0 else None


def _result(obj: dict[str, Any]) -> list[AgentEvent]:
    """The run's outcome; an error comes first as an AgentError so FinalResult stays the last event."""
    text = _string(obj.get("result"))
    subtype = _string(obj.get("subtype")) or ""
    is_error = obj.get("is_error") is True or subtype.startswith("error")
    usage = obj.get("usage")
    final = FinalResult(
        text=text,
        is_error=is_error,
        usage=_usage(usage) if isinstance(usage, dict) else None,
        cost_usd=_cost(obj.get("total_cost_usd")),
        session_id=_string(obj.get("session_id")),
    )
    if not is_error:
        return [final]
    message = _error_message(obj, text, subtype)
    return [AgentError(message, _error_kind(obj, subtype, message)), final]


def _error_message(obj: dict[str, Any], text: str | None, subtype: str) -> str:
    """`result` holds an API error's message; other errors (max turns, budget) list theirs in `errors`."""
    if text:
        return text
    errors = obj.get("errors")
    listed = [item for item in errors if isinstance(item, str)] if isinstance(errors, list) else []
    return "; ".join(listed) or subtype or "Claude Code reported an error without a message"


def _error_kind(obj: dict[str, Any], subtype: str, message: str) -> ErrorKind | None:
    """Structured fields first, then the words of the message (a connection failure has no status)."""
    if subtype == "error_max_turns" or obj.get("terminal_reason") == "max_turns":
        return "max_turns"
    status = obj.get("api_error_status")
    api_type = _string(obj.get("api_error_type")) or ""
    by_status = status_error_kind(status) if isinstance(status, int) else None
    by_fields = by_status or _TYPE_KINDS.get(api_type)
    if by_fields is not None:
        return by_fields
    api_error = _string(obj.get("api_error")) or ""
    words = f"{api_error} {message}"
    by_words = next((kind for kind, pattern in _TEXT_KINDS if pattern.search(words)), None)
    return by_words or ("provider_error" if api_error else None)
