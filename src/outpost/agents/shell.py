"""The `shell` agent: the task is a POSIX shell script; its result is the tail of what it printed."""

from __future__ import annotations

from collections import deque

from outpost.agents.base import AgentCommand, AgentRequest
from outpost.domain.dispatch import AgentName

RESULT_TAIL_CHARS = 4096


class ShellSummary:
    """Keeps the last stdout lines, up to RESULT_TAIL_CHARS characters, as the result."""

    def __init__(self) -> None:
        self._tail: deque[str] = deque()
        self._chars = 0

    def feed(self, stream: str, line: str) -> None:
        if stream != "stdout":
            return
        self._tail.append(line)
        self._chars += len(line) + 1
        while self._chars > RESULT_TAIL_CHARS and len(self._tail) > 1:
            self._chars -= len(self._tail.popleft()) + 1

    def result(self) -> str | None:
        text = "\n".join(self._tail)
        return text[-RESULT_TAIL_CHARS:] if text else None


class ShellAgent:
    name = AgentName.SHELL

    def build_command(self, request: AgentRequest) -> AgentCommand:
        return AgentCommand(argv=["/bin/sh", "-c", request.task], env=dict(request.env))

    def new_summary(self) -> ShellSummary:
        return ShellSummary()
