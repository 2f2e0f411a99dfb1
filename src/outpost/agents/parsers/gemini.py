"""Gemini CLI output as typed events: `gemini -p -o stream-json` (one JSON event a line) and `-o json`.

`-o json` prints one document pretty-printed over many lines, on stdout when the run succeeds and on
stderr (after prose noise) when it fails. A line that is exactly `{` opens such a document; its lines are
buffered until the column-0 `}` that closes it, or `finish()`, and become `RawText` if they do not parse.
Field meanings come from agent-clis.md §3 and gemini-cli's `nonInteractiveCli.ts` and `output/types.ts`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

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

Handler = Callable[[dict[str, Any]], list[AgentEvent] | None]

# A document longer than this is not the CLI's: its lines go out as RawText rather than grow without end.
_MAX_DOCUMENT_LINES = 5000
_DOCUMENT_KEYS = ("response", "stats", "error")
# Exit codes (FatalError.exitCode) and HTTP statuses the CLI puts in an error's `code`.
# The CLI's own exit codes in `code`; HTTP statuses go through status_error_kind.
_CODE_KINDS: dict[int, ErrorKind] = {53: "max_turns", 41: "auth"}
_PROVIDER = r"\b5\d\d\b|UNAVAILABLE|INTERNAL|DEADLINE_EXCEEDED|E(CONNREFUSED|CONNRESET|TIMEDOUT|NOTFOUND)"
# First match wins. Quota comes before auth: the CLI's 429 text ends "or switch to another /auth method".
_TEXT_KINDS: tuple[tuple[ErrorKind, re.Pattern[str]], ...] = (
    ("max_turns", re.compile(r"FatalTurnLimitedError|(?i:max(imum)? session turns)")),
    ("quota", re.compile(r"\b429\b|RESOURCE_EXHAUSTED|(?i:quota|rate.?limit)")),
    ("auth", re.compile(r"\b40[13]\b|UNAUTHENTICATED|PERMISSION_DENIED|(?i:api.?key|\bauth\b|authenticat)")),
    ("provider_error", re.compile(_PROVIDER + r"|(?i:fetch failed|socket hang up|overloaded)")),
)


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _error_kind(code: object, *texts: object) -> ErrorKind | None:
    """`auth`, `quota`, `max_turns` or `provider_error` from an error's code and words, else None."""
    if isinstance(code, int) and not isinstance(code, bool):
        by_code = _CODE_KINDS.get(code) or status_error_kind(code)
        if by_code is not None:
            return by_code
    joined = " ".join(t for t in texts if isinstance(t, str))
    return next((kind for kind, pattern in _TEXT_KINDS if pattern.search(joined)), None)


def _readable(message: str) -> str:
    """The API's own words when the CLI passes on its raw `{"error":{...}}` body as the message."""
    body = json_object(message)
    inner = body.get("error") if body else None
    if not isinstance(inner, dict) or not isinstance(inner.get("message"), str):
        return message
    detail = " ".join(str(inner[k]) for k in ("code", "status") if isinstance(inner.get(k), int | str))
    return f"{inner['message']} ({detail})" if detail else str(inner["message"])


def _agent_error(error: object) -> AgentError:
    """An `{type, message, code?}` error object (result events, json documents) as an AgentError."""
    fields = error if isinstance(error, dict) else {}
    kind_name, message, code = _str(fields.get("type")), _str(fields.get("message")), fields.get("code")
    text = _readable(message) if message else kind_name or "Gemini CLI reported an error"
    return AgentError(text, _error_kind(code, kind_name, message))


def _usage(tokens: dict[str, Any], prompt_key: str, output_key: str, thoughts: int) -> Usage:
    """Gemini's prompt count includes cached tokens; `input` (when present) is the uncached part.
    Thoughts are billed as output, so they are counted in it (as Claude and Codex count reasoning)."""
    prompt, cached = as_int(tokens.get(prompt_key)), as_int(tokens.get("cached"))
    uncached = as_int(tokens["input"]) if "input" in tokens else max(prompt - cached, 0)
    return Usage(uncached, as_int(tokens.get(output_key)) + thoughts, cached)


def _stream_usage(stats: dict[str, Any]) -> Usage:
    """stream-json stats carry no thoughts field; they are what the total has beyond prompt and output."""
    total, prompt, output = (as_int(stats.get(k)) for k in ("total_tokens", "input_tokens", "output_tokens"))
    thoughts = max(total - prompt - output, 0) if total and prompt else 0
    return _usage(stats, "input_tokens", "output_tokens", thoughts)


def _json_usage(models: object) -> Usage:
    """`-o json` reports per model (router and main turns included): the run's usage is their sum."""
    entries = models.values() if isinstance(models, dict) else ()
    tokens = [e["tokens"] for e in entries if isinstance(e, dict) and isinstance(e.get("tokens"), dict)]
    each = [_usage(t, "prompt", "candidates", as_int(t.get("thoughts"))) for t in tokens]
    uncached, output = sum(u.input_tokens for u in each), sum(u.output_tokens for u in each)
    return Usage(uncached, output, sum(u.cache_read_tokens for u in each))


def _sole_model(models: object) -> str | None:
    """The model name when the stats name exactly one (a mix has no single name)."""
    return next(iter(models)) if isinstance(models, dict) and len(models) == 1 else None


def _file_change(tool: str, params: dict[str, Any], written: set[str]) -> FileChange | None:
    """write_file cannot tell a new file from an overwrite in its events: the first write of a path in
    this run counts as `add`. `replace` with an empty old_string creates the file (its documented use)."""
    path = _str(params.get("file_path"))
    if path is None or tool not in ("write_file", "replace"):
        return None
    creates = params.get("old_string") == "" if tool == "replace" else path not in written
    return FileChange(path, "add" if creates else "update")


class GeminiOutputParser:
    """One run's Gemini CLI output, in either JSON output format, as agent events."""

    def __init__(self) -> None:
        self._session_id: str | None = None
        self._model: str | None = None
        self._turn_text: list[str] = []
        self._pending: dict[str, tuple[str, dict[str, Any]]] = {}
        self._written: set[str] = set()
        self._documents: dict[Stream, list[str]] = {"stdout": [], "stderr": []}
        self._failed = False
        self._final_sent = False
        self._handlers: dict[str, Handler] = {
            "init": self._on_init,
            "message": self._on_message,
            "tool_use": self._on_tool_use,
            "tool_result": self._on_tool_result,
            "error": self._on_error,
            "result": self._on_result,
        }

    def feed(self, stream: Stream, line: str) -> list[AgentEvent]:
        if self._documents[stream]:
            return self._continue_document(stream, line)
        obj = json_object(line)
        if obj is not None:
            return self._dispatch(stream, obj, [line])
        if line.rstrip() == "{":
            self._documents[stream].append(line)
            return []
        return [RawText(stream, line)]

    def finish(self) -> list[AgentEvent]:
        """Parse documents still open; state the failure the CLI reported if no result said it."""
        events = self._close_document("stdout") + self._close_document("stderr")
        if self._failed and not self._final_sent:
            events.append(self._final(is_error=True, usage=None))
        return events

    def _continue_document(self, stream: Stream, line: str) -> list[AgentEvent]:
        self._documents[stream].append(line)
        if line.rstrip() == "}" or len(self._documents[stream]) >= _MAX_DOCUMENT_LINES:
            return self._close_document(stream)
        return []

    def _close_document(self, stream: Stream) -> list[AgentEvent]:
        lines, self._documents[stream] = self._documents[stream], []
        doc = json_object("\n".join(lines)) if lines else None
        return self._dispatch(stream, doc, lines) if doc else [RawText(stream, line) for line in lines]

    def _dispatch(self, stream: Stream, obj: dict[str, Any], lines: list[str]) -> list[AgentEvent]:
        """A stream-json event has a `type`; a `-o json` document has none but a response, stats or error."""
        kind = obj.get("type")
        handler = self._handlers.get(kind) if isinstance(kind, str) else None
        if handler is None and kind is None and any(k in obj for k in _DOCUMENT_KEYS):
            handler = self._on_document
        events = handler(obj) if handler else None
        return [RawText(stream, line) for line in lines] if events is None else events

    def _on_init(self, event: dict[str, Any]) -> list[AgentEvent]:
        self._session_id = _str(event.get("session_id")) or self._session_id
        self._model = _str(event.get("model")) or self._model
        return []

    def _on_message(self, event: dict[str, Any]) -> list[AgentEvent] | None:
        content, role = _str(event.get("content")), event.get("role")
        if role == "user":
            return []
        if role != "assistant" or content is None:
            return None
        self._turn_text.append(content)
        return [Text(content)] if content else []

    def _on_tool_use(self, event: dict[str, Any]) -> list[AgentEvent] | None:
        """A tool call ends the model's turn: like `-o json`'s response, the final text is the last turn's."""
        name, call_id = _str(event.get("tool_name")), _str(event.get("tool_id"))
        if name is None:
            return None
        params = event["parameters"] if isinstance(event.get("parameters"), dict) else {}
        self._turn_text.clear()
        if call_id is not None:
            self._pending[call_id] = (name, params)
        return [ToolCall(name, params, call_id)]

    def _on_tool_result(self, event: dict[str, Any]) -> list[AgentEvent]:
        """A file change is reported once the tool succeeded: a failed `replace` (old_string not found) is
        common and changes nothing. Tool errors go back to the model, so they are not the run's errors."""
        call_id = _str(event.get("tool_id"))
        name, params = self._pending.pop(call_id, ("", {})) if call_id else ("", {})
        change = _file_change(name, params, self._written) if event.get("status") == "success" else None
        if change is None:
            return []
        self._written.add(change.path)
        return [change]

    def _on_error(self, event: dict[str, Any]) -> list[AgentEvent] | None:
        """Warnings (loop detected, a hook's block) are errors the CLI reported but do not fail the run."""
        message = _str(event.get("message"))
        if message is None:
            return None
        self._failed = self._failed or event.get("severity") == "error"
        return [AgentError(message, _error_kind(None, message))]

    def _on_result(self, event: dict[str, Any]) -> list[AgentEvent]:
        stats, is_error = event.get("stats"), event.get("status") == "error"
        events: list[AgentEvent] = []
        usage = None
        if isinstance(stats, dict):
            usage = _stream_usage(stats)
            events.append(UsageReport(usage, _sole_model(stats.get("models")) or self._model))
        if is_error and ("error" in event or not self._failed):
            events.append(_agent_error(event.get("error")))
        events.append(self._final(is_error, usage))
        return events

    def _on_document(self, doc: dict[str, Any]) -> list[AgentEvent]:
        """The `-o json` document: a response with stats, an error (alone on stderr), or both."""
        self._session_id = _str(doc.get("session_id")) or self._session_id
        warnings = doc["warnings"] if isinstance(doc.get("warnings"), list) else []
        events: list[AgentEvent] = [
            AgentError(w, _error_kind(None, w)) for w in warnings if isinstance(w, str)
        ]
        if "error" in doc:
            self._failed = True
            events.append(_agent_error(doc["error"]))
        if "response" not in doc and "stats" not in doc:
            return events
        response, stats = _str(doc.get("response")), doc.get("stats")
        models = stats.get("models") if isinstance(stats, dict) else None
        usage = _json_usage(models) if isinstance(stats, dict) else None
        if usage is not None:
            events.append(UsageReport(usage, _sole_model(models)))
        if response:
            events.append(Text(response))
        self._turn_text = [response] if response else []
        return [*events, self._final(self._failed, usage)]

    def _final(self, is_error: bool, usage: Usage | None) -> FinalResult:
        self._final_sent = True
        return FinalResult("".join(self._turn_text) or None, is_error, usage, session_id=self._session_id)
