"""The Grok CLIs' output as typed events: `@vibe-kit/grok-cli` headless JSONL, and xAI's Grok Build
`--output-format json` result object.

vibe-kit prints, once the run is over, one OpenAI-style chat message per line: the user's prompt, assistant
messages (with `tool_calls` whose `arguments` is a JSON string) and `tool` results. It reports no tokens, cost
or session. It fails in two ways, both as an assistant message: `Error: …` (exit 1) when the run could not
start, and `Sorry, I encountered an error: Grok API error: …` (exit 0, from `GrokAgent.processUserMessage`
in 0.0.34) when the API call failed. A run cut off by `--max-tool-rounds` ends with an assistant message
`Maximum tool execution rounds reached. …`.

Grok Build's `json` result has no `role`: it is keyed `text`, `stopReason`, `sessionId`, `usage`,
`total_cost_usd`, …, and an error is `{"type": "error", "message": …}`; so one parser tells the two apart
line by line without being told which CLI ran.
"""

from __future__ import annotations

import math
import re
from dataclasses import replace
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

_ERROR_PREFIXES = ("Error:", "Sorry, I encountered an error:")
_MAX_ROUNDS = "Maximum tool execution rounds reached"
# The first pattern that matches names the kind; status codes before words, so "429 … API key" is quota.
_STATUS = re.compile(r"\b([45]\d\d)\b")
_ERROR_WORDS: tuple[tuple[re.Pattern[str], ErrorKind], ...] = (
    (re.compile(r"rate.?limit|quota|insufficient credits", re.IGNORECASE), "quota"),
    (re.compile(r"unauthori[sz]ed|forbidden|authenticat|api.?key", re.IGNORECASE), "auth"),
)
_STDERR_ERROR = re.compile(r"\W*Error\b")
# vibe-kit tools that write a file, with the argument naming it (`edit_file` is the Morph fast-apply tool).
_FILE_TOOLS: dict[str, tuple[str, Literal["add", "update"]]] = {
    "create_file": ("path", "add"),
    "str_replace_editor": ("path", "update"),
    "edit_file": ("target_file", "update"),
}
_BUILD_KEYS = frozenset({"sessionId", "stopReason", "requestId"})
_MAX_TURNS_STOPS = frozenset({"maxturns", "maxturnrequests", "maxturnsreached"})
_TICKS_PER_USD = 10_000_000_000


def _error_kind(message: str) -> ErrorKind:
    """`auth`, `quota` or `provider_error`, from the HTTP status an error message carries, else its words."""
    for status in _STATUS.findall(message):
        by_status = status_error_kind(int(status))
        if by_status is not None:
            return by_status
    return next((kind for pattern, kind in _ERROR_WORDS if pattern.search(message)), "provider_error")


def _content_text(content: object) -> str | None:
    """A message's text: a string, or the text parts of an OpenAI content-part list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
        return "".join(parts) if parts else None
    return None


def _arguments(value: object) -> dict[str, Any]:
    """Tool arguments: vibe-kit passes the model's JSON string through; a dict is taken as it is."""
    if isinstance(value, dict):
        return value
    return (json_object(value) or {}) if isinstance(value, str) else {}


def _tool_events(call: object) -> list[AgentEvent]:
    """One `tool_calls` entry as a ToolCall, plus a FileChange when the tool writes a named file."""
    function = call.get("function") if isinstance(call, dict) else None
    name = function.get("name") if isinstance(function, dict) else None
    if not isinstance(call, dict) or not isinstance(function, dict) or not isinstance(name, str):
        return []
    arguments = _arguments(function.get("arguments"))
    call_id = call.get("id")
    events: list[AgentEvent] = [ToolCall(name, arguments, call_id if isinstance(call_id, str) else None)]
    if name in _FILE_TOOLS:
        key, kind = _FILE_TOOLS[name]
        path = arguments.get(key)
        if isinstance(path, str) and path:
            events.append(FileChange(path, kind))
    return events


def _cost_usd(result: dict[str, Any]) -> float | None:
    """Grok Build's total cost: the float, else the integer ticks (1e-10 USD); none when it says partial."""
    if result.get("cost_is_partial") is True:
        return None
    dollars, ticks = result.get("total_cost_usd"), result.get("total_cost_usd_ticks")
    try:
        if isinstance(dollars, int | float) and not isinstance(dollars, bool):
            cost = float(dollars)
        elif isinstance(ticks, int) and not isinstance(ticks, bool):
            cost = ticks / _TICKS_PER_USD
        else:
            return None
    except OverflowError:
        return None
    return cost if math.isfinite(cost) and cost >= 0 else None


def _build_usage(usage: object) -> Usage | None:
    """Grok Build's `usage`: `input_tokens` is already the uncached part, as `Usage` wants it."""
    if not isinstance(usage, dict):
        return None
    return Usage(
        input_tokens=as_int(usage.get("input_tokens")),
        output_tokens=as_int(usage.get("output_tokens")),
        cache_read_tokens=as_int(usage.get("cache_read_input_tokens")),
        cache_write_tokens=as_int(usage.get("cache_creation_input_tokens")),
    )


def _stopped_by_max_turns(stop: object) -> bool:
    """Whether a `stopReason` says the turn limit ended the run, however it is spelled (`max_turn_requests`
    in ACP terms, `MaxTurns`, …)."""
    return isinstance(stop, str) and re.sub(r"[^a-z]", "", stop.lower()) in _MAX_TURNS_STOPS


def _single_model(model_usage: object) -> str | None:
    """The model that did the work, when `modelUsage` names exactly one."""
    names = list(model_usage) if isinstance(model_usage, dict) else []
    return names[0] if len(names) == 1 and isinstance(names[0], str) else None


class GrokOutputParser:
    """Parses one Grok CLI run (vibe-kit headless or Grok Build `json`). Pure."""

    def __init__(self) -> None:
        self._last_text: str | None = None
        self._is_error = False
        self._build_result: FinalResult | None = None

    def feed(self, stream: Stream, line: str) -> list[AgentEvent]:
        if stream == "stderr":
            return self._stderr_line(line)
        message = json_object(line)
        if message is None:
            return [RawText(stream, line)]
        if "role" in message:
            return self._chat_message(message) or [RawText(stream, line)]
        if "type" in message:
            return self._build_error(message) or [RawText(stream, line)]
        if _BUILD_KEYS & message.keys():
            return self._build_final(message) or [RawText(stream, line)]
        return [RawText(stream, line)]

    def finish(self) -> list[AgentEvent]:
        if self._build_result is not None:
            is_error = self._build_result.is_error or self._is_error
            return [replace(self._build_result, is_error=is_error)]
        return [FinalResult(self._last_text, is_error=self._is_error)]

    def _stderr_line(self, line: str) -> list[AgentEvent]:
        """stderr is the CLI's own voice (vibe-kit's `❌ Error: API key required …`); kept, and read for
        errors."""
        if _STDERR_ERROR.match(line) is None:
            return [RawText("stderr", line)]
        self._is_error = True
        return [RawText("stderr", line), AgentError(line, kind=_error_kind(line))]

    def _chat_message(self, message: dict[str, Any]) -> list[AgentEvent]:
        """Assistant messages only: the user line echoes our prompt and tool results have no event type,
        so those stay RawText (returned empty here)."""
        if message.get("role") != "assistant":
            return []
        events: list[AgentEvent] = []
        text = _content_text(message.get("content"))
        if text:
            events.extend(self._assistant_text(text))
        calls = message.get("tool_calls")
        for call in calls if isinstance(calls, list) else []:
            events.extend(_tool_events(call))
        return events

    def _assistant_text(self, text: str) -> list[AgentEvent]:
        self._last_text = text
        stripped = text.lstrip()
        if stripped.startswith(_ERROR_PREFIXES):
            self._is_error = True
            return [AgentError(text, kind=_error_kind(text))]
        if stripped.startswith(_MAX_ROUNDS):
            self._is_error = True
            return [AgentError(text, kind="max_turns")]
        return [Text(text)]

    def _build_error(self, event: dict[str, Any]) -> list[AgentEvent]:
        """Grok Build's `{"type": "error", "message": …}`; other typed objects are not this format's."""
        if event.get("type") != "error":
            return []
        message = event.get("message")
        text = message if isinstance(message, str) else "error"
        self._is_error = True
        return [AgentError(text, kind=_error_kind(text))]

    def _build_final(self, result: dict[str, Any]) -> list[AgentEvent]:
        """The run's one result object: its text and usage now, the FinalResult at `finish()`."""
        text = result.get("text")
        text = text if isinstance(text, str) else None
        usage = _build_usage(result.get("usage"))
        session = result.get("sessionId")
        stop = result.get("stopReason")
        max_turns = _stopped_by_max_turns(stop)
        self._build_result = FinalResult(
            text,
            is_error=max_turns,
            usage=usage,
            cost_usd=_cost_usd(result),
            session_id=session if isinstance(session, str) else None,
        )
        events: list[AgentEvent] = [Text(text)] if text else []
        if usage is not None:
            events.append(UsageReport(usage, model=_single_model(result.get("modelUsage"))))
        if max_turns:
            events.append(AgentError(f"Grok Build stopped: {stop}", kind="max_turns"))
        return events
