"""Which agents this server can run."""

from __future__ import annotations

from outpost.agents.base import AgentAdapter
from outpost.agents.shell import ShellAgent
from outpost.domain.dispatch import AgentName
from outpost.errors import InvalidInput


class AgentRegistry:
    def __init__(self, adapters: list[AgentAdapter]) -> None:
        self._adapters = {adapter.name: adapter for adapter in adapters}

    def get(self, name: AgentName | str) -> AgentAdapter:
        """Raises InvalidInput for an agent this server cannot run."""
        self.check_available(name)
        return self._adapters[AgentName(name)]

    def check_available(self, name: AgentName | str) -> None:
        if name not in self._adapters:
            available = ", ".join(sorted(self._adapters))
            raise InvalidInput(
                f"agent {name!r} is not available on this server (available: {available})", "agent"
            )


def default_registry() -> AgentRegistry:
    return AgentRegistry([ShellAgent()])
