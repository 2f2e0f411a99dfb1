"""The `shell` agent's output as events: every stdout line is text; stderr stays raw."""

from __future__ import annotations

from outpost.agents.events import AgentEvent, RawText, Stream, Text


class ShellOutputParser:
    """Stateless: a shell script has no event format, so each stdout line is its own `Text`."""

    def feed(self, stream: Stream, line: str) -> list[AgentEvent]:
        if stream == "stdout":
            return [Text(line)]
        return [RawText(stream, line)]

    def finish(self) -> list[AgentEvent]:
        return []
