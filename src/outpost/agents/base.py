"""The agent adapter seam."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from outpost.domain.dispatch import AgentName, Tier


@dataclass(frozen=True, slots=True)
class AgentRequest:
    """What an adapter needs to build its command."""

    task: str
    tier: Tier
    model: str | None
    env: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class AgentCommand:
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)


class OutputSummary(Protocol):
    """Collects an agent's output lines and says what its final message was."""

    def feed(self, stream: str, line: str) -> None: ...

    def result(self) -> str | None: ...


class AgentAdapter(Protocol):
    name: AgentName

    def build_command(self, request: AgentRequest) -> AgentCommand:
        """The argv and extra environment that run `request` (never secrets: see the model gateway)."""

    def new_summary(self) -> OutputSummary:
        """A fresh collector for one run's output."""
