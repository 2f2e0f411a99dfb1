"""OpenAI Codex CLI: `codex exec --json` prints one JSON event a line (thread, turn and item events).

What this relies on (measured on codex 0.169; shapes from `codex-rs/exec/src/exec_events.rs`):
* `turn.completed.usage` is the thread's running total, not the turn's own tokens (exec fills it from
  `ThreadTokenUsage.total`). One exec run has one turn, so the last report is the run's usage.
* `input_tokens` counts the whole prompt: cached reads and cache writes are parts of it, so both are
  taken out to get the uncached input `Usage` wants. `output_tokens` already includes reasoning tokens.
* `error` events carry both retry notices ("Reconnecting... 2/5 (...)"), which do not fail the run,
  and fatal errors, which make the CLI exit 1 like `turn.failed` does.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from outpost.agents.events import (
    AgentError,
    AgentEvent,
    ChangeKind,
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

JsonObject = dict[str, Any]
# None means "not the shape this event should have": the line is then kept as RawText.
Handled = list[AgentEvent] | None

_STATUS = re.compile(r"\bstatus:?\s*(\d{3})\b", re.IGNORECASE)
_AUTH = re.compile(
    r"unauthori[sz]ed|forbidden|api[ _-]?key|authenticat|not logged in|missing environment variable",
    re.IGNORECASE,
)
_QUOTA = re.compile(r"rate.?limit|usage limit|quota|too many requests|out of credits", re.IGNORECASE)
_PROVIDER = re.compile(
    r"stream disconnected|connection|high demand|overloaded|internal server error|service unavailable"
    r"|bad gateway|gateway timeout|timed out|error sending request|network",
    re.IGNORECASE,
)
_KEYWORDS: tuple[tuple[re.Pattern[str], ErrorKind], ...] = (
    (_AUTH, "auth"),
    (_QUOTA, "quota"),
    (_PROVIDER, "provider_error"),
)
_RETRY_NOTICE = "Reconnecting..."
_CHANGE_KINDS: dict[str, ChangeKind] = {"add": "add", "update": "update", "delete": "delete"}


def error_kind(message: str) -> ErrorKind | None:
    """`auth`, `quota` or `provider_error` for a Codex error message, so callers can react (rotate a
    key, back off, retry elsewhere) without matching CLI prose themselves; None when it is none of them.
    An HTTP status in the message decides first: it is the provider's word, the prose is Codex's."""
    status = _STATUS.search(message)
    by_status = status_error_kind(int(status.group(1))) if status else None
    return by_status or next((kind for pattern, kind in _KEYWORDS if pattern.search(message)), None)


def _usage(raw: JsonObject) -> Usage:
    """Codex's counts in `Usage` terms: input without its cached and cache-write parts."""
    prompt = as_int(raw.get("input_tokens"))
    cached = as_int(raw.get("cached_input_tokens"))
    written = as_int(raw.get("cache_write_input_tokens"))
    return Usage(
        input_tokens=max(0, prompt - cached - written),
        output_tokens=as_int(raw.get("output_tokens")),
        cache_read_tokens=cached,
        cache_write_tokens=written,
    )


def _str(item: JsonObject, key: str) -> str | None:
    value = item.get(key)
    return value if isinstance(value, str) else None


def _pick(item: JsonObject, *keys: str) -> JsonObject:
    """The named fields that are present: a tool call's input without the item's bookkeeping."""
    return {key: item[key] for key in keys if key in item}


def _command_call(item: JsonObject) -> ToolCall:
    return ToolCall("shell", _pick(item, "command"), _str(item, "id"))


def _mcp_call(item: JsonObject) -> ToolCall:
    """Named `mcp__<server>__<tool>`, the form Claude Code uses, so one MCP tool reads alike across CLIs."""
    name = f"mcp__{_str(item, 'server') or '?'}__{_str(item, 'tool') or '?'}"
    arguments = item.get("arguments")
    inputs = arguments if isinstance(arguments, dict) else _pick(item, "arguments")
    return ToolCall(name, inputs, _str(item, "id"))


def _collab_call(item: JsonObject) -> ToolCall:
    name = _str(item, "tool") or "collab_tool_call"
    return ToolCall(name, _pick(item, "prompt", "receiver_thread_ids"), _str(item, "id"))


def _web_search_call(item: JsonObject) -> ToolCall:
    return ToolCall("web_search", _pick(item, "query", "action"), _str(item, "id"))


_TOOL_CALLS: dict[str, Callable[[JsonObject], ToolCall]] = {
    "command_execution": _command_call,
    "mcp_tool_call": _mcp_call,
    "collab_tool_call": _collab_call,
    "web_search": _web_search_call,
}
# Item types that say nothing a run's consumer needs (reasoning summaries, to-do list snapshots), or
# that only mean something once completed (messages, patches, error notes).
_QUIET_WHEN_STARTED = frozenset({"agent_message", "reasoning", "file_change", "todo_list", "plan", "error"})
_QUIET_WHEN_COMPLETED = frozenset({"reasoning", "todo_list"})


def _file_changes(item: JsonObject) -> Handled:
    """One FileChange per path a completed patch touched. A failed or declined patch changed nothing,
    so it is reported as the attempted `apply_patch` call instead."""
    changes = item.get("changes")
    if not isinstance(changes, list):
        return None
    entries = [change for change in changes if isinstance(change, dict) and _str(change, "path")]
    if item.get("status") in ("failed", "declined"):
        paths = [change["path"] for change in entries]
        return [ToolCall("apply_patch", {"paths": paths, "status": item["status"]}, _str(item, "id"))]
    return [FileChange(change["path"], _change_kind(change.get("kind"))) for change in entries]


def _typed_item(event: JsonObject) -> tuple[str | None, JsonObject]:
    """An item event's item and its type; type None when either is not the shape Codex prints."""
    item = event.get("item")
    if not isinstance(item, dict):
        return None, {}
    kind = item.get("type")
    return (kind if isinstance(kind, str) else None), item


def _change_kind(kind: object) -> ChangeKind:
    """An unknown kind (or an older CLI's `{"update": {...}}`) still changed the file: "update" claims
    the least about how."""
    return _CHANGE_KINDS.get(kind, "update") if isinstance(kind, str) else "update"


class CodexOutputParser:
    """Turns one `codex exec --json` run's lines into events, and its outcome into one FinalResult."""

    def __init__(self) -> None:
        self._session_id: str | None = None
        self._last_message: str | None = None
        self._last_plan: str | None = None
        self._usage: Usage | None = None
        self._turn_completed = False
        self._failed = False
        self._last_error: str | None = None
        self._announced: set[str] = set()
        self._handlers: dict[str, Callable[[JsonObject], Handled]] = {
            "thread.started": self._thread_started,
            "turn.started": lambda _: [],
            "item.updated": lambda _: [],
            "item.plan.delta": lambda _: [],
            "turn.completed": self._turn_completed_event,
            "turn.failed": self._turn_failed,
            "error": self._error,
            "item.started": self._item_started,
            "item.completed": self._item_completed,
            "request_user_input": self._request_user_input,
        }

    def feed(self, stream: Stream, line: str) -> list[AgentEvent]:
        if stream != "stdout":
            return [RawText("stderr", line)]
        event = json_object(line)
        kind = event.get("type") if event is not None else None
        handler = self._handlers.get(kind) if isinstance(kind, str) else None
        handled = handler(event) if handler is not None and event is not None else None
        return handled if handled is not None else [RawText("stdout", line)]

    def finish(self) -> list[AgentEvent]:
        """The final text is the last agent message, else (plan mode) the last plan, as the CLI's own
        `-o` file has it. The run failed if a turn failed, a non-retry error was reported, or no turn
        ever completed (an interrupted turn, a crash, or a CLI that stopped before printing any event)."""
        is_error = self._failed or not self._turn_completed
        text = self._last_message if self._last_message is not None else self._last_plan
        return [FinalResult(text, is_error, self._usage, None, self._session_id)]

    def _thread_started(self, event: JsonObject) -> Handled:
        thread_id = _str(event, "thread_id")
        self._session_id = thread_id or self._session_id
        return [] if thread_id is not None else None

    def _turn_completed_event(self, event: JsonObject) -> Handled:
        raw = event.get("usage")
        if not isinstance(raw, dict):
            return None
        self._turn_completed = True
        self._usage = _usage(raw)
        return [UsageReport(self._usage)]

    def _turn_failed(self, event: JsonObject) -> Handled:
        """The turn's error is usually the fatal `error` event repeated: reported once, not twice."""
        self._failed = True
        error = event.get("error")
        message = (_str(error, "message") if isinstance(error, dict) else None) or "turn failed"
        if message == self._last_error:
            return []
        return [AgentError(message, error_kind(message))]

    def _error(self, event: JsonObject) -> Handled:
        message = _str(event, "message") or "unknown error"
        if not message.startswith(_RETRY_NOTICE):
            self._failed = True
        self._last_error = message
        return [AgentError(message, error_kind(message))]

    def _request_user_input(self, event: JsonObject) -> Handled:
        """A headless run cannot answer, but the question shows what the agent was stuck on."""
        return [ToolCall("request_user_input", _pick(event, "questions"), _str(event, "call_id"))]

    def _item_started(self, event: JsonObject) -> Handled:
        """Tool calls are announced when they start (a long command is visible while it runs)."""
        kind, item = _typed_item(event)
        if kind is None:
            return None
        if kind in _TOOL_CALLS:
            return [self._announce(item, _TOOL_CALLS[kind])]
        return [] if kind in _QUIET_WHEN_STARTED else None

    def _item_completed(self, event: JsonObject) -> Handled:
        kind, item = _typed_item(event)
        if kind is None:
            return None
        if kind in _TOOL_CALLS:
            already = _str(item, "id") in self._announced
            return [] if already else [self._announce(item, _TOOL_CALLS[kind])]
        return self._completed_item(kind, item)

    def _completed_item(self, kind: str, item: JsonObject) -> Handled:
        text = _str(item, "text")
        if kind == "agent_message" and text is not None:
            self._last_message = text
            return [Text(text)]
        if kind == "plan" and text is not None:
            self._last_plan = text
            return [Text(text)]
        if kind == "file_change":
            return _file_changes(item)
        if kind == "error":
            message = _str(item, "message")
            return [AgentError(message, error_kind(message))] if message is not None else None
        return [] if kind in _QUIET_WHEN_COMPLETED else None

    def _announce(self, item: JsonObject, build: Callable[[JsonObject], ToolCall]) -> ToolCall:
        call = build(item)
        if call.call_id is not None:
            self._announced.add(call.call_id)
        return call
