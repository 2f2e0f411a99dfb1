"""What an agent CLI's output means, as typed events: the one vocabulary every output parser speaks.

Parsers turn the lines a CLI prints (JSON events for most, prose for aider) into these; they do no I/O.
A line a parser cannot make sense of is never dropped: it becomes a `RawText` event.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Stream = Literal["stdout", "stderr"]
ChangeKind = Literal["add", "update", "delete"]
ErrorKind = Literal["auth", "quota", "provider_error", "max_turns"]
"""What a run's failure was, where the CLI's output tells: `auth` (a key refused), `quota` (rate or credit
limits), `provider_error` (the provider failed or could not be reached), `max_turns` (the CLI's turn cap)."""


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens as the CLI reports them; `input_tokens` excludes cached input (counted apart)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0


@dataclass(frozen=True, slots=True)
class Text:
    """Assistant prose (a whole message or a streamed piece of one)."""

    text: str


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A tool the agent asked to run (shell commands are `shell`; MCP tools `mcp__<server>__<tool>`)."""

    name: str
    input: dict[str, Any] = field(default_factory=dict)
    call_id: str | None = None


@dataclass(frozen=True, slots=True)
class FileChange:
    """A file the agent wrote, edited or deleted (path as the agent named it)."""

    path: str
    kind: ChangeKind = "update"


@dataclass(frozen=True, slots=True)
class UsageReport:
    """Tokens as the CLI reports them: not amounts to add up. Some CLIs report a call's usage before it
    ends (Claude Code's `assistant` lines carry the output count at the start), others a running total
    (Codex's `turn.completed`). The run's figure is FinalResult.usage; billing uses the gateway's own
    metering."""

    usage: Usage
    model: str | None = None


@dataclass(frozen=True, slots=True)
class AgentError:
    """An error the CLI reported, with its kind when it can be told."""

    message: str
    kind: ErrorKind | None = None


@dataclass(frozen=True, slots=True)
class FinalResult:
    """The run's outcome as the CLI states it: its final message, and cost when it reports one."""

    text: str | None
    is_error: bool = False
    usage: Usage | None = None
    cost_usd: float | None = None
    session_id: str | None = None


@dataclass(frozen=True, slots=True)
class RawText:
    """A line that is not one of the CLI's events (or not valid JSON), kept as it was."""

    stream: Stream
    line: str


AgentEvent = Text | ToolCall | FileChange | UsageReport | AgentError | FinalResult | RawText


class OutputParser(Protocol):
    """Parses one run's output. Feed every line in order; `finish()` once the streams end."""

    def feed(self, stream: Stream, line: str) -> list[AgentEvent]: ...

    def finish(self) -> list[AgentEvent]: ...


def json_object(line: str) -> dict[str, Any] | None:
    """The JSON object on `line`, or None when the line is not one (prose, a partial line, an array)."""
    try:
        value = json.loads(line)
    except (ValueError, RecursionError):  # RecursionError: hostile nesting such as "[" * 100_000
        return None
    return value if isinstance(value, dict) else None


def as_int(value: object) -> int:
    """A token count from untrusted output: non-negative int, anything else 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def status_error_kind(status: int) -> ErrorKind | None:
    """What a provider's HTTP status means for the run, the same for every CLI that reports one."""
    if status in (401, 403):
        return "auth"
    if status in (402, 429):
        return "quota"
    return "provider_error" if 500 <= status <= 599 else None
