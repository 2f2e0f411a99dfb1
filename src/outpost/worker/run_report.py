"""What a run's own output says happened: the agent's events, its final message and its error, if any.

The parser of the run's agent turns each output line into typed events; this keeps what the outcome
needs (bounded, whatever the agent prints) and hands the events on to be recorded.
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict

from outpost.agents.events import (
    AgentError,
    AgentEvent,
    ErrorKind,
    FileChange,
    FinalResult,
    OutputParser,
    RawText,
    Stream,
    Text,
    ToolCall,
    UsageReport,
)

RESULT_TAIL_CHARS = 4096
"""The result of a CLI that states no final message: the tail of the text it printed."""
FINAL_MESSAGE_CHARS = 65_536
"""The longest final message kept as the result (its end, where a summary usually is)."""
_EVENT_TYPES: dict[type, str] = {
    Text: "text", ToolCall: "tool_call", FileChange: "file_change", UsageReport: "cli_usage",
    AgentError: "error", FinalResult: "final",
}  # fmt: skip


class RunReport:
    """Feeds a run's lines to its parser and remembers the outcome-deciding events."""

    def __init__(self, parser: OutputParser) -> None:
        self._parser = parser
        self._tail: deque[str] = deque()
        self._tail_chars = 0
        self.final: FinalResult | None = None
        self.error_kind: ErrorKind | None = None
        self.error_message: str | None = None

    def feed(self, stream: Stream, line: str) -> list[AgentEvent]:
        return self._note(self._parser.feed(stream, line))

    def finish(self) -> list[AgentEvent]:
        return self._note(self._parser.finish())

    @property
    def failed(self) -> bool:
        """The agent itself said the run failed (some CLIs exit 0 after an API error)."""
        return self.final is not None and self.final.is_error

    def result(self) -> str | None:
        """The final message: the CLI's own, else the tail of the text it printed."""
        if self.final is not None and self.final.text:
            return self.final.text[-FINAL_MESSAGE_CHARS:]
        text = "\n".join(self._tail)
        return text[-RESULT_TAIL_CHARS:] if text else None

    def _note(self, events: list[AgentEvent]) -> list[AgentEvent]:
        for event in events:
            if isinstance(event, Text):
                self._keep_text(event.text)
            elif isinstance(event, FinalResult):
                self.final = event
            elif isinstance(event, AgentError):
                self.error_message = event.message
                self.error_kind = event.kind or self.error_kind
        return events

    def _keep_text(self, text: str) -> None:
        self._tail.append(text)
        self._tail_chars += len(text) + 1
        while self._tail_chars > RESULT_TAIL_CHARS and len(self._tail) > 1:
            self._tail_chars -= len(self._tail.popleft()) + 1


def event_data(event: AgentEvent) -> dict[str, object] | None:
    """An agent event as a dispatch event's data; None for raw lines (already recorded as log lines)."""
    if isinstance(event, RawText):
        return None
    return {"type": _EVENT_TYPES[type(event)], **asdict(event)}
